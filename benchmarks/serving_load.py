"""Serving under load: concurrent callers, the wait budget, and memory per resident site.

Serves one trained `rpg.create_next_map` version (a version folder, e.g. the demo's
`.byllm-distill-demo/sites/rpg.create_next_map/versions/1`) through the runtime engine, on
maps for fresh levels from the offline teacher (seeded), and prints in one run:

1. p50/p95 latency per answer and total throughput (answers/s) for 1, 4 and 8 concurrent
   callers, each caller answering its share of `--calls` maps; the ratio of throughput at
   8 callers to 1;
2. the wait budget: the same 8 callers with `max_wait_ms` = `--max-wait-ms`: a call whose
   expected wait (`Engine.expected_wait_ms()`, what the router compares with the budget)
   is over it is answered by the offline teacher instead, as the router does. Overflow
   count, and p50/p95 latency over all calls (teacher answers included);
3. RSS of this process with 1, 5 and 10 sites resident: each extra site serves a copy of
   the version's folder under its own name (distinct files, so nothing is shared between
   them, as between separately trained versions), each answering one map once loaded.

Adapter serving (one resident base, LoRA adapters per site) is measured by
benchmarks/adapters.py (decode speed against merged, RSS with 1, 5, 10 adapter sites).
Targets (issue 14, 2 cores): throughput at 8 callers
>= 2.5x one caller's; 10 resident sites <= 1.5x the RSS of one; map p50 <= 0.6 s and p95
<= 1.0 s.

    .venv/bin/python benchmarks/serving_load.py VERSION_DIR [--calls 24] [--max-wait-ms 1500]
        [--json out.json]

Takes ~5 min on 2 cores; run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SITE = "rpg.create_next_map"
SIZES = [(12, 10), (16, 12), (20, 14), (24, 16)]


def inputs(n: int, seed: int) -> list[dict[str, Any]]:
    from byllm_distill.rpg.generator import design_level

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        width, height = rng.choice(SIZES)
        out.append({"level": design_level([], rng.randint(1, 5), width, height, rng)})
    return out


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def callers(engine: Any, args: list[dict[str, Any]], n_callers: int,
            max_wait_ms: float = 0.0) -> dict[str, Any]:
    """Answer every input with `n_callers` threads; the wait budget as the router applies
    it (an expected wait over `max_wait_ms` goes to the offline teacher)."""
    from byllm_distill.rpg.generator import design_map
    from byllm_distill.stats import percentile

    latencies: list[float] = []
    student_latencies: list[float] = []
    overflow = 0
    valid = 0
    lock = threading.Lock()
    todo = list(args)

    def work(seed: int) -> None:
        nonlocal overflow, valid
        rng = random.Random(seed)
        while True:
            with lock:
                if not todo:
                    return
                a = todo.pop()
            started = time.perf_counter()
            teacher = bool(max_wait_ms) and engine.expected_wait_ms() > max_wait_ms
            if teacher:
                design_map(a["level"], rng)
                passed = False
            else:
                checks = engine.generate(a).passed
                passed = bool(checks and checks[-1])
            took = time.perf_counter() - started
            with lock:
                latencies.append(took)
                if not teacher:
                    student_latencies.append(took)
                overflow += teacher
                valid += passed

    started = time.perf_counter()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return {"callers": n_callers, "calls": len(latencies), "max_wait_ms": max_wait_ms,
            "p50_s": round(percentile(latencies, 50), 3),
            "p95_s": round(percentile(latencies, 95), 3),
            "student_p50_s": round(percentile(student_latencies, 50) or 0.0, 3),
            "student_p95_s": round(percentile(student_latencies, 95) or 0.0, 3),
            "throughput_per_s": round(len(latencies) / wall, 3), "overflow": overflow,
            "student_valid": valid, "student_calls": len(latencies) - overflow}


def resident(folder: Path, args: list[dict[str, Any]], counts: list[int]) -> list[dict]:
    from byllm_distill.runtime.engine import engine_for

    rows = []
    scratch = Path(tempfile.mkdtemp(prefix="serving-load-"))
    try:
        loaded = 0
        for count in counts:
            while loaded < count:
                copy = scratch / f"site{loaded}"
                shutil.copytree(folder, copy)
                engine = engine_for(f"bench.site{loaded}", folder=copy)
                engine.generate(args[loaded % len(args)], seed=loaded)
                loaded += 1
            rows.append({"sites": count, "rss_mb": round(rss_mb())})
            print(f"  {count:>2} site(s) resident: RSS {rows[-1]['rss_mb']} MB", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("version_dir", type=Path)
    parser.add_argument("--calls", type=int, default=24)
    parser.add_argument("--max-wait-ms", type=float, default=1500.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not (args.version_dir / "manifest.json").is_file():
        raise SystemExit(f"{args.version_dir} is not a version folder (no manifest.json); "
                         "give e.g. .byllm-distill-demo/sites/rpg.create_next_map/versions/1")

    from byllm_distill.runtime.engine import engine_for, unload

    maps = inputs(args.calls, args.seed)
    engine = engine_for(SITE, folder=args.version_dir)
    engine.generate(maps[0], seed=0)  # pages the model in
    result: dict[str, Any] = {"version_dir": str(args.version_dir), "load": []}
    print(f"{SITE}: {args.calls} maps per setting, {os.cpu_count()} cores")
    for n in (1, 4, 8):
        row = callers(engine, maps, n)
        result["load"].append(row)
        print(f"  {n} caller(s): p50 {row['p50_s']} s, p95 {row['p95_s']} s, "
              f"{row['throughput_per_s']} maps/s, valid {row['student_valid']}/"
              f"{row['student_calls']}", flush=True)
    one, eight = result["load"][0], result["load"][2]
    result["throughput_ratio_8_to_1"] = round(eight["throughput_per_s"]
                                              / one["throughput_per_s"], 2)
    print(f"  throughput 8 callers / 1 caller: {result['throughput_ratio_8_to_1']}x "
          "(target >= 2.5x)")
    budget = callers(engine, maps, 8, args.max_wait_ms)
    result["wait_budget"] = budget
    print(f"  8 callers, max_wait_ms {args.max_wait_ms:g}: {budget['overflow']} of "
          f"{budget['calls']} answered by the teacher; p50 {budget['p50_s']} s, "
          f"p95 {budget['p95_s']} s over all calls (the offline teacher answers at once); "
          f"student answers p50 {budget['student_p50_s']} s, p95 {budget['student_p95_s']} s",
          flush=True)
    unload()
    result["resident"] = resident(args.version_dir, maps, [1, 5, 10])
    first, last = result["resident"][0]["rss_mb"], result["resident"][-1]["rss_mb"]
    result["rss_ratio_10_to_1"] = round(last / first, 2)
    print(f"  RSS 10 sites / 1 site: {result['rss_ratio_10_to_1']}x (target <= 1.5x)")
    print("  adapter serving (one base, per-site LoRA): see benchmarks/adapters.py")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
