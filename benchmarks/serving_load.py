"""Serving under load, in one run: one map's latency and quality, concurrent callers, the
wait budget, merged vs adapter decoding, and memory with 1, 5 and 10 sites resident.

Serves one trained `rpg.create_next_map` version (a version folder, e.g. the demo's
`.byllm-distill-demo/sites/rpg.create_next_map/versions/1`, with `--data-dir` the data dir
holding its shared base, e.g. `.byllm-distill-demo`) through the runtime engine, on maps
for fresh levels from the offline teacher (seeded; the teacher's own maps for the same
levels are the reference), and prints:

1. One caller, the same inputs and seeds four times: decoded token by token (as before
   jump-forward), with jump-forward (runtime/forced.py), with jump-forward and drafts
   (runtime/draft.py), these three scoring every token with llama.cpp's output layer, and
   with all of it and the narrow head (runtime/head.py, the default; the model loaded
   again): p50/p95 latency per map, validity (first attempt and
   served), answer tokens, the 2x2-pattern KL divergence from the teacher's maps for the
   same levels (lower is closer; `rpg_patterns`), and drafts read and taken;
2. throughput (maps/s) and p50/p95 latency for 1, 4 and 8 concurrent callers, each taking
   the next input until `--calls` are answered, and the ratio of 8 callers to 1 (drafts
   on: a call decoding alone reads them, calls decoding together do not);
3. the wait budget: twice `max_batch` callers with `max_wait_ms` = `--max-wait-ms`; a call
   whose expected wait (`Engine.expected_wait_ms()`, what the router compares with the
   budget) is over it is answered by the offline teacher instead, as the router does:
   overflow count and latency over all calls;
4. decoding speed, merged vs adapter (the site's LoRA over the shared base): answer tokens
   per second, greedy under the grammar, one caller; both with the narrow head, and the
   adapter once more with the whole output layer;
5. RSS of a fresh process with 1, 5 and 10 sites resident, merged and as adapters: each
   extra site serves a copy of the version folder under its own name (distinct files,
   loaded separately, as separately trained versions would be), answering one map once
   loaded.

Targets (issue 14, 2 cores): throughput at 8 callers >= 2.5x one caller's; 10 resident
sites <= 1.5x the RSS of one; map p50 <= 0.6 s and p95 <= 1.0 s at validity and KL no
worse than before.

    .venv/bin/python benchmarks/serving_load.py VERSION_DIR --data-dir DIR [--calls 32]
        [--max-wait-ms 1500] [--json out.json]

Takes ~6 min on 2 cores; run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from unittest import mock

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


def teacher_maps(args: list[dict[str, Any]], seed: int) -> list[Any]:
    from byllm_distill.rpg.generator import design_map

    rng = random.Random(seed)
    return [design_map(a["level"], rng) for a in args]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def whole_output_layer() -> contextlib.AbstractContextManager[Any]:
    """Engines loaded inside score every token with llama.cpp's output layer (no narrow
    head, runtime/head.py), as before it: the `narrow_head` setting off while they load."""
    return mock.patch.dict(os.environ, {"BYLLM_DISTILL_NARROW_HEAD": "false"})


def _pct(values: list[float], p: float) -> float:
    from byllm_distill.stats import percentile

    return round(percentile(values, p) or 0.0, 3)


def one_caller(engine: Any, maps: list[dict[str, Any]], reference: list[Any],
               jump: bool, drafts: bool) -> dict[str, Any]:
    """Every input once, in order, seed i for input i."""
    from byllm_distill.rpg.report_metrics import pattern_distance

    decoder = engine._decoder
    drafter = decoder.drafter
    decoder.jump_forward, decoder.drafter = jump, drafter if drafts else None
    decoder.drafts = decoder.drafts_taken = 0
    try:
        rows = [engine.generate(a, seed=i) for i, a in enumerate(maps)]
    finally:
        decoder.jump_forward, decoder.drafter = True, drafter
    outputs = [g.output for g in rows if g.output is not None]
    return {"jump_forward": jump, "drafts": drafts, "drafts_read": decoder.drafts,
            "drafts_taken": decoder.drafts_taken, "calls": len(rows),
            "p50_s": _pct([g.seconds for g in rows], 50),
            "p95_s": _pct([g.seconds for g in rows], 95),
            "valid_first": sum(bool(g.passed and g.passed[0]) for g in rows),
            "valid_served": sum(bool(g.passed and g.passed[-1]) for g in rows),
            "answer_tokens": round(sum(g.completion_tokens for g in rows) / len(rows), 1),
            "kl_2x2": round(pattern_distance(reference, outputs)["kl_teacher_student"], 4)}


def callers(engine: Any, maps: list[dict[str, Any]], n_callers: int,
            max_wait_ms: float = 0.0) -> dict[str, Any]:
    """Answer every input with `n_callers` threads; the wait budget as the router applies
    it (an expected wait over `max_wait_ms` goes to the offline teacher)."""
    from byllm_distill.rpg.generator import design_map

    latencies: list[float] = []
    overflow = valid = 0
    lock = threading.Lock()
    todo = list(enumerate(maps))

    def work(seed: int) -> None:
        nonlocal overflow, valid
        rng = random.Random(seed)
        while True:
            with lock:
                if not todo:
                    return
                i, a = todo.pop(0)
            started = time.perf_counter()
            teacher = bool(max_wait_ms) and engine.expected_wait_ms() > max_wait_ms
            if teacher:
                design_map(a["level"], rng)
                passed = False
            else:
                checks = engine.generate(a, seed=i).passed
                passed = bool(checks and checks[-1])
            took = time.perf_counter() - started
            with lock:
                latencies.append(took)
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
            "p50_s": _pct(latencies, 50), "p95_s": _pct(latencies, 95),
            "throughput_per_s": round(len(latencies) / wall, 3), "overflow": overflow,
            "student_valid": valid, "student_calls": len(latencies) - overflow}


def decode_speed(folder: Path, data_dir: Path, maps: list[dict[str, Any]]) -> dict[str, Any]:
    """Answer tokens per second, greedy under the grammar, merged vs adapter."""
    from byllm_distill.runtime.engine import engine_for, unload

    out: dict[str, Any] = {}
    for name, serving, whole in (("merged", "merged", False), ("adapter", "adapter", False),
                                 ("adapter_whole_layer", "adapter", True)):
        with whole_output_layer() if whole else contextlib.nullcontext():
            engine = engine_for(SITE, folder=folder, serving=serving, data_dir=data_dir)
        if engine.weights.serving != serving:
            raise SystemExit(f"{folder} cannot be served as {serving} (see the log)")
        engine.generate(maps[0], temperature=0.0, check=False)  # pages the model in
        rows = [engine.generate(a, temperature=0.0, check=False) for a in maps]
        tokens, seconds = sum(g.completion_tokens for g in rows), sum(g.seconds for g in rows)
        out[name] = {"tokens_per_s": round(tokens / seconds, 1), "answers": len(rows)}
        unload()
    out["adapter_vs_merged"] = round(out["adapter"]["tokens_per_s"]
                                     / out["merged"]["tokens_per_s"], 2)
    return out


def resident(folder: Path, data_dir: Path, serving: str, maps: list[dict[str, Any]]
             ) -> list[dict[str, Any]]:
    """(in a fresh process) RSS with 1, 5 and 10 sites resident."""
    from byllm_distill.runtime.engine import engine_for

    rows, loaded = [], 0
    scratch = Path(tempfile.mkdtemp(prefix="serving-load-"))
    try:
        for count in (1, 5, 10):
            while loaded < count:
                copy = scratch / f"site{loaded}"
                shutil.copytree(folder, copy)
                engine = engine_for(f"bench{loaded}.create_next_map", folder=copy,
                                    serving=serving, data_dir=data_dir)
                if engine.weights.serving != serving:
                    raise SystemExit(f"{copy} is not served as {serving}")
                engine.generate(maps[loaded % len(maps)], seed=loaded)
                loaded += 1
            rows.append({"sites": count, "rss_mb": round(rss_mb())})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("version_dir", type=Path)
    parser.add_argument("--data-dir", type=Path, required=True,
                        help="the data dir holding the version's shared base (bases/)")
    parser.add_argument("--calls", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=1500.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--resident", choices=["merged", "adapter"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not (args.version_dir / "manifest.json").is_file():
        raise SystemExit(f"{args.version_dir} is not a version folder (no manifest.json); "
                         "give e.g. .byllm-distill-demo/sites/rpg.create_next_map/versions/1")
    maps = inputs(args.calls, args.seed)
    if args.resident:  # the child process of step 5
        print(json.dumps(resident(args.version_dir, args.data_dir, args.resident, maps)))
        return

    from byllm_distill.runtime.engine import engine_for, unload

    with whole_output_layer():  # as before the narrow head, for the first three rows
        engine = engine_for(SITE, folder=args.version_dir, serving="merged")
    engine.generate(maps[0], seed=0)  # pages the model in
    slots = engine.batcher.slots
    print(f"{SITE}: {args.calls} maps per setting, {os.cpu_count()} cores, max_batch {slots}")
    result: dict[str, Any] = {"version_dir": str(args.version_dir), "cores": os.cpu_count(),
                              "max_batch": slots, "one_caller": []}
    reference = teacher_maps(maps, args.seed)
    if engine._decoder.drafter is None:
        raise SystemExit(f"{args.version_dir} has no readable dataset/train.jsonl: no drafts")
    for jump, drafts, name in ((False, False, "token by token            "),
                               (True, False, "jump-forward              "),
                               (True, True, "jump-forward+drafts       "),
                               (True, True, "jump-forward+drafts+narrow")):
        if name.endswith("narrow"):  # the default: the narrow head where it checks out
            unload()
            engine = engine_for(SITE, folder=args.version_dir, serving="merged")
            engine.generate(maps[0], seed=0)
            if engine.batcher.head is None:
                raise SystemExit("this version got no narrow head (see the log)")
        row = one_caller(engine, maps, reference, jump, drafts)
        row["narrow_head"] = engine.batcher.head is not None
        result["one_caller"].append(row)
        taken = (f", {row['drafts_taken']} of {row['drafts_read']} drafts taken"
                 if drafts else "")
        print(f"  one caller, {name}: p50 "
              f"{row['p50_s']} s, p95 {row['p95_s']} s, valid {row['valid_first']}/"
              f"{row['calls']} first attempt, {row['valid_served']}/{row['calls']} served, "
              f"{row['answer_tokens']} answer tokens, 2x2 KL from the teacher "
              f"{row['kl_2x2']}{taken}", flush=True)
    result["load"] = []
    for n in (1, 4, 8):
        row = callers(engine, maps, n)
        result["load"].append(row)
        print(f"  {n} caller(s): p50 {row['p50_s']} s, p95 {row['p95_s']} s, "
              f"{row['throughput_per_s']} maps/s, valid {row['student_valid']}/"
              f"{row['student_calls']}", flush=True)
    ratio = result["load"][2]["throughput_per_s"] / result["load"][0]["throughput_per_s"]
    result["throughput_ratio_8_to_1"] = round(ratio, 2)
    print(f"  throughput 8 callers / 1 caller: {ratio:.2f}x (target >= 2.5x)")
    budget = callers(engine, maps, 2 * slots, args.max_wait_ms)
    result["wait_budget"] = budget
    print(f"  {2 * slots} callers, max_wait_ms {args.max_wait_ms:g}: {budget['overflow']} of "
          f"{budget['calls']} answered by the teacher; p50 {budget['p50_s']} s, p95 "
          f"{budget['p95_s']} s over all calls (the offline teacher answers at once)",
          flush=True)
    unload()
    result["decode"] = decode_speed(args.version_dir, args.data_dir, maps[:12])
    d = result["decode"]
    print(f"  decoding, greedy: merged {d['merged']['tokens_per_s']} tok/s, adapter "
          f"{d['adapter']['tokens_per_s']} tok/s ({d['adapter_vs_merged']}x; "
          f"{d['adapter_whole_layer']['tokens_per_s']} tok/s with the whole output layer)",
          flush=True)
    result["resident"] = {}
    for serving in ("merged", "adapter"):
        child = subprocess.run(
            [sys.executable, __file__, str(args.version_dir), "--data-dir", str(args.data_dir),
             "--calls", "10", "--resident", serving], capture_output=True, text=True,
            check=True)
        rows = json.loads(child.stdout.strip().splitlines()[-1])
        result["resident"][serving] = rows
        print(f"  RSS {serving:>7}: " + ", ".join(f"{r['sites']} site(s) {r['rss_mb']} MB"
                                                 for r in rows)
              + f" ({rows[-1]['rss_mb'] / rows[0]['rss_mb']:.2f}x one; target <= 1.5x)",
              flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
