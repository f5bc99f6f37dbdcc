"""Student answers in a process that has just trained with torch, against a fresh process.

The worker trains a site and then evaluates the new version on held-out inputs in the same
process; the demo also serves its shadow answers there. In `byllm-distill demo` that
evaluation took ~3.9 s per map where `serving_load.py` measures ~1.1 s. This benchmark
shows the cause apart from everything else: it answers the same `--calls` maps (fresh
levels, seeded, the inputs of serving_load.py) with one trained `rpg.create_next_map`
version, one call at a time, in two child processes started alike (nice 10, as the
worker): one that first runs a small torch forward/backward loop on its main thread, one
that does not. It prints the mean and p50 seconds per map of each and their ratio,
measured in one run.

    .venv/bin/python benchmarks/decode_after_torch.py VERSION_DIR [--calls 12]

~1-2 min on 2 cores; run it on an otherwise idle machine.
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


def child(version_dir: str, calls: int, with_torch: bool) -> None:
    """Answer `calls` maps one at a time; print the seconds per call as JSON."""
    sys.path.insert(0, str(HERE))
    os.nice(10)  # as the worker (lifecycle.py)
    if with_torch:
        import torch

        weights = torch.randn(512, 512, requires_grad=True)
        for _ in range(200):
            (weights @ weights).sum().backward()
    from serving_load import SITE, inputs

    from byllm_distill.runtime.engine import engine_for

    engine = engine_for(SITE, folder=Path(version_dir))
    seconds = []
    for i, call in enumerate(inputs(calls, 11)):
        started = time.perf_counter()
        engine.generate(call, seed=i)
        seconds.append(time.perf_counter() - started)
    print(json.dumps(seconds))


def measure(version_dir: Path, calls: int, with_torch: bool) -> list[float]:
    out = subprocess.run([sys.executable, __file__, str(version_dir), "--calls", str(calls),
                          "--child", "torch" if with_torch else "plain"],
                         check=True, capture_output=True, text=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("version_dir", type=Path)
    parser.add_argument("--calls", type=int, default=12)
    parser.add_argument("--child", choices=["plain", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(str(args.version_dir), args.calls, args.child == "torch")
        return
    results = {}
    for label, with_torch in (("fresh process", False), ("after torch training", True)):
        seconds = measure(args.version_dir, args.calls, with_torch)
        results[label] = seconds
        print(f"{label:>22}: {len(seconds)} maps, mean {statistics.mean(seconds):.2f} s, "
              f"p50 {statistics.median(seconds):.2f} s")
    ratio = (statistics.mean(results["after torch training"])
             / statistics.mean(results["fresh process"]))
    print(f"after torch / fresh: {ratio:.2f}x the time per map")


if __name__ == "__main__":
    main()
