"""Student answers in a process that has just trained with torch, against a fresh process.

The worker trains a site and then evaluates the new version on held-out inputs in the same
process; the demo also serves its shadow answers there. In `byllm-distill demo` that
evaluation took ~3.9 s per map where `serving_load.py` measures ~1.1 s. This benchmark
shows the cause apart from everything else: it answers the same `--calls` maps (fresh
levels, seeded, the inputs of serving_load.py) with one trained `rpg.create_next_map`
version, one call at a time, in three child processes started alike (nice 10, as the
worker): one that first runs a small torch forward/backward loop on its main thread, one
that does not, and one that runs the loop and then gives back the OpenMP threads torch
parked, as `train_site` does when it ends (training/openmp.py explains the cause). It
prints the mean and p50 seconds per map of each and their ratio to the fresh process,
measured in one run.

    .venv/bin/python benchmarks/decode_after_torch.py VERSION_DIR [--calls 12]

~2-3 min on 2 cores; run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
KINDS = {"plain": "fresh process",
         "torch": "after torch training",
         "released": "after torch training, OpenMP released"}


def child(version_dir: str, calls: int, kind: str) -> None:
    """Answer `calls` maps one at a time; print the seconds per call as JSON."""
    sys.path.insert(0, str(HERE))
    os.nice(10)  # as the worker (lifecycle.py)
    if kind != "plain":
        import torch

        weights = torch.randn(512, 512, requires_grad=True)
        for _ in range(200):
            (weights @ weights).sum().backward()
    if kind == "released":
        from byllm_distill.training.openmp import release_openmp_threads

        release_openmp_threads()  # what train_site does when it ends
    from serving_load import SITE, inputs

    from byllm_distill.runtime.engine import engine_for

    engine = engine_for(SITE, folder=Path(version_dir))
    seconds = []
    for i, call in enumerate(inputs(calls, 11)):
        started = time.perf_counter()
        engine.generate(call, seed=i)
        seconds.append(time.perf_counter() - started)
    print(json.dumps(seconds))


def measure(version_dir: Path, calls: int, kind: str) -> list[float]:
    out = subprocess.run([sys.executable, __file__, str(version_dir), "--calls", str(calls),
                          "--child", kind],
                         check=True, capture_output=True, text=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("version_dir", type=Path)
    parser.add_argument("--calls", type=int, default=12)
    parser.add_argument("--child", choices=list(KINDS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(str(args.version_dir), args.calls, args.child)
        return
    means = {}
    for kind, label in KINDS.items():
        seconds = measure(args.version_dir, args.calls, kind)
        means[kind] = statistics.mean(seconds)
        print(f"{label:>40}: {len(seconds)} maps, mean {means[kind]:.2f} s, "
              f"p50 {statistics.median(seconds):.2f} s, {means[kind] / means['plain']:.2f}x fresh")


if __name__ == "__main__":
    main()
