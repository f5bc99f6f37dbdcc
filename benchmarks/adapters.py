"""Adapter serving vs merged serving: decode speed, agreement, and memory per resident site.

Serves trained map versions that carry an `adapter.gguf` (trained by this byllm-distill;
their shared base GGUF is in `--data-dir`) on maps for fresh levels (seeded), and prints:

1. per version: tokens/s of greedy, grammar-bound answers (one attempt, no validators;
   prompt evaluation included, as a caller sees it) served merged and served as an adapter
   over the shared base, on the same inputs; and how often the two answers are the same
   text, with the mean share of the answer's tokens before they first differ;
2. RSS of a fresh process with 1, 5 and 10 sites resident, each serving a copy of the
   first version's folder under its own name (distinct files, so nothing is shared but
   what serving shares: as adapters, the base), each answering one map once loaded;
   served merged, and served as adapters.

    .venv/bin/python benchmarks/adapters.py VERSION_DIR [VERSION_DIR ...] --data-dir DIR
        [--calls 8] [--json out.json]

Takes ~5 min on 2 cores for two versions; run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from serving_load import inputs, rss_mb

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _site(folder: Path) -> str:
    return json.loads((folder / "manifest.json").read_text())["site"]


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def speed(folder: Path, data_dir: Path, maps: list[dict[str, Any]]) -> dict[str, Any]:
    from byllm_distill.runtime.engine import engine_for, unload

    site = _site(folder)
    out: dict[str, Any] = {"version_dir": str(folder), "site": site}
    answers: dict[str, list[str]] = {}
    tokens: dict[str, list[list[int]]] = {}
    for serving in ("merged", "adapter"):
        engine = engine_for(site, folder=folder, serving=serving, data_dir=data_dir)
        if engine.weights.serving != serving:
            raise SystemExit(f"{folder} cannot be served as {serving} (see the log)")
        engine.generate(maps[0], temperature=0.0, check=False)  # pages the model in
        completion = 0
        seconds = 0.0
        answers[serving], tokens[serving] = [], []
        for args in maps:
            g = engine.generate(args, temperature=0.0, check=False)
            completion += g.completion_tokens
            seconds += g.seconds
            answers[serving].append(g.text)
            tokens[serving].append(engine.llama.tokenize(g.raw.encode(), add_bos=False,
                                                         special=True))
        out[serving] = {"answers": len(maps), "completion_tokens": completion,
                        "seconds": round(seconds, 2),
                        "tokens_per_s": round(completion / seconds, 1)}
        unload()
    same = sum(a == b for a, b in zip(answers["merged"], answers["adapter"], strict=True))
    shares = [_common_prefix(m, a) / max(len(m), 1)
              for m, a in zip(tokens["merged"], tokens["adapter"], strict=True)]
    out["same_answer"] = f"{same}/{len(maps)}"
    out["mean_shared_prefix"] = round(sum(shares) / len(shares), 3)
    out["adapter_speed_ratio"] = round(out["adapter"]["tokens_per_s"]
                                       / out["merged"]["tokens_per_s"], 2)
    return out


def resident(folder: Path, data_dir: Path, serving: str, counts: list[int],
             maps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """(run in a fresh process) RSS with `counts` sites resident."""
    from byllm_distill.runtime.engine import engine_for

    rows = []
    scratch = Path(tempfile.mkdtemp(prefix="adapters-bench-"))
    try:
        loaded = 0
        before = rss_mb()
        for count in counts:
            while loaded < count:
                copy = scratch / f"site{loaded}"
                shutil.copytree(folder, copy)
                engine = engine_for(f"bench{loaded}.create_next_map", folder=copy,
                                    serving=serving, data_dir=data_dir)
                if engine.weights.serving != serving:
                    raise SystemExit(f"{copy} is not served as {serving}")
                engine.generate(maps[loaded % len(maps)], temperature=0.0, check=False)
                loaded += 1
            rows.append({"sites": count, "rss_mb": round(rss_mb()),
                         "added_mb": round(rss_mb() - before)})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("version_dirs", type=Path, nargs="+")
    parser.add_argument("--data-dir", type=Path, required=True,
                        help="the data dir holding the versions' shared base (bases/)")
    parser.add_argument("--calls", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--resident", choices=["merged", "adapter"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    maps = inputs(args.calls, args.seed)
    if args.resident:  # the child process of step 2
        print(json.dumps(resident(args.version_dirs[0], args.data_dir, args.resident,
                                  [1, 5, 10], maps)))
        return
    result: dict[str, Any] = {"cores": os.cpu_count(), "calls": args.calls, "speed": []}
    for folder in args.version_dirs:
        row = speed(folder, args.data_dir, maps)
        result["speed"].append(row)
        print(f"{row['site']}: merged {row['merged']['tokens_per_s']} tok/s, adapter "
              f"{row['adapter']['tokens_per_s']} tok/s ({row['adapter_speed_ratio']}x); "
              f"same answer {row['same_answer']}, mean shared prefix "
              f"{row['mean_shared_prefix']}", flush=True)
    result["resident"] = {}
    for serving in ("merged", "adapter"):
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, str(args.version_dirs[0]),
                               "--data-dir", str(args.data_dir), "--calls", str(args.calls),
                               "--resident", serving], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-2000:])
        rows = json.loads(proc.stdout.strip().splitlines()[-1])
        result["resident"][serving] = rows
        print(f"  resident as {serving}: " + ", ".join(
            f"{r['sites']} site(s) {r['rss_mb']} MB" for r in rows)
            + f" ({time.perf_counter() - started:.0f} s)", flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
