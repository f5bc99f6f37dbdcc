"""Student answers beside parked OpenMP threads, against a fresh process (one run).

libgomp, which torch and llama.cpp share here, sleeps at barriers instead of spinning once
it manages more threads than there are CPUs, and every thread that ran a parallel region
keeps its team parked (byllm_distill/openmp.py). Two places parked a team beside the
stepping thread that decodes a map: the training thread (the worker evaluates each new
version right after training it; the demo serves in the process that trained) and a second
resident model's stepping thread (an app with two sites on students). This benchmark answers
the same `--calls` maps (fresh levels, seeded, the inputs of serving_load.py) with one
trained `rpg.create_next_map` version, one call at a time, in child processes started alike
(nice 10, as the worker):

- fresh process;
- after a small torch forward/backward loop on the main thread, its team left parked;
- the same, then the team given back, as `train_site` does when it ends;
- with `--second LEVEL_VERSION_DIR`: a `rpg.create_next_level` student resident too, which
  answered one call first, its stepping thread keeping its team (as before the fix: the
  child turns the release off) and giving it back when out of work (as served today).

It prints the mean and p50 seconds per map of each and the ratio to the fresh process.

    .venv/bin/python benchmarks/openmp_threads.py MAP_VERSION_DIR \
        [--second LEVEL_VERSION_DIR] [--calls 12]

~3-5 min on 2 cores; run it on an otherwise idle machine.
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

KINDS = {"plain": "fresh process",
         "torch": "after torch training",
         "released": "after torch training, team given back",
         "second-kept": "second site resident, its team kept",
         "second": "second site resident, team given back"}
LEVEL_ARGS = {"last_levels": [], "difficulty": 2, "level_width": 20, "level_height": 12}


def child(version_dir: str, calls: int, kind: str, second: str | None) -> None:
    """Answer `calls` maps one at a time; print the seconds per call as JSON."""
    os.nice(10)  # as the worker (lifecycle.py)
    if kind in ("torch", "released"):
        import torch

        weights = torch.randn(512, 512, requires_grad=True)
        for _ in range(200):
            (weights @ weights).sum().backward()
    if kind == "released":
        from byllm_distill.openmp import release_openmp_threads

        release_openmp_threads()  # what train_site does when it ends
    from serving_load import SITE, inputs

    from byllm_distill.runtime import batch
    from byllm_distill.runtime.engine import engine_for

    if kind == "second-kept":
        batch.release_openmp_threads = lambda: 0  # stepping threads keep their teams
    if kind.startswith("second"):
        engine_for("rpg.create_next_level", folder=Path(second)).generate(LEVEL_ARGS, seed=0)
    engine = engine_for(SITE, folder=Path(version_dir))
    seconds = []
    for i, call in enumerate(inputs(calls, 11)):
        started = time.perf_counter()
        engine.generate(call, seed=i)
        seconds.append(time.perf_counter() - started)
    print(json.dumps(seconds))


def measure(version_dir: Path, calls: int, kind: str, second: Path | None) -> list[float]:
    command = [sys.executable, __file__, str(version_dir), "--calls", str(calls),
               "--child", kind]
    if second is not None:
        command += ["--second", str(second)]
    out = subprocess.run(command, check=True, capture_output=True, text=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("version_dir", type=Path)
    parser.add_argument("--second", type=Path, help="a rpg.create_next_level version folder")
    parser.add_argument("--calls", type=int, default=12)
    parser.add_argument("--child", choices=list(KINDS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(str(args.version_dir), args.calls, args.child,
              str(args.second) if args.second else None)
        return
    means = {}
    for kind, label in KINDS.items():
        if kind.startswith("second") and args.second is None:
            continue
        seconds = measure(args.version_dir, args.calls, kind, args.second)
        means[kind] = statistics.mean(seconds)
        print(f"{label:>38}: {len(seconds)} maps, mean {means[kind]:.2f} s, "
              f"p50 {statistics.median(seconds):.2f} s, {means[kind] / means['plain']:.2f}x fresh",
              flush=True)


if __name__ == "__main__":
    main()
