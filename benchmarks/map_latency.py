"""Where a student map's latency goes: tokens, attempts, redraws, and the time split
between llama.cpp's forward passes, the grammar, sampling and the item checks.

Serves one trained `rpg.create_next_map` version folder (e.g. the demo's
`.byllm-distill-demo/sites/rpg.create_next_map/versions/1`) on `--calls` maps for fresh
levels from the offline teacher (seeded, the same inputs as serving_load.py), one call at a
time, under cProfile, and prints in one run: p50/p95 latency per answer, mean prompt and
answer tokens, attempts and item redraws per map, ms per answer token, and the share of
the time spent in each part of the token loop. Use it before cutting anything: the target
(issue 14) is map p50 <= 0.6 s and p95 <= 1.0 s on 2 cores at unchanged validity.

    .venv/bin/python benchmarks/map_latency.py VERSION_DIR [--calls 24] [--threads 2]
        [--json out.json]

~1-2 min on 2 cores; run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

# Functions of the token loop, by the part of the work they are (cumulative times; one
# caller at a time; the batcher's stepping thread makes the steps).
PARTS = {
    "forward passes (llama_decode)": [("map_latency.py", "llama_decode")],
    "grammar (llama.cpp sampler)": [("decode.py", "grammar_allows"),
                                    ("decode.py", "grammar_filter"),
                                    ("llama_cpp.py", "llama_sampler_accept")],
    "jump-forward (forced.py)": [("forced.py", "after")],
    "sampling (numpy top-p)": [("decode.py", "pick")],
    "item checks (guide)": [("guide.py", "feed")],
    "validators (whole answer)": [("engine.py", "_passes")],
}


def _calls(stats: pstats.Stats, file_tail: str, name: str) -> int:
    return sum(row[1] for (path, _, func), row in stats.stats.items()  # type: ignore[attr-defined]
               if path.endswith(file_tail) and func == name)


def _cumulative(stats: pstats.Stats, file_tail: str, name: str) -> float:
    return sum(row[3] for (path, _, func), row in stats.stats.items()  # type: ignore[attr-defined]
               if path.endswith(file_tail) and func == name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("version_dir", type=Path)
    parser.add_argument("--calls", type=int, default=24)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    os.environ["BYLLM_DISTILL_THREADS"] = str(args.threads)
    import llama_cpp
    from serving_load import SITE, inputs

    from byllm_distill.runtime.engine import engine_for

    engine = engine_for(SITE, folder=args.version_dir)
    calls = inputs(args.calls, args.seed)
    engine.generate(calls[0], seed=0)  # warm-up: the first call builds caches
    profile = cProfile.Profile()
    raw_decode = llama_cpp.llama_decode

    def llama_decode(ctx, batch_):  # a Python frame for cProfile to time the C call by
        return raw_decode(ctx, batch_)

    llama_cpp.llama_decode = llama_decode
    latencies, answers, prompts, attempts, redraws, valid = [], [], [], [], [], 0
    for i, call in enumerate(calls):
        started = time.perf_counter()
        profile.enable()  # on 3.12 (sys.monitoring) this sees the stepping thread too
        generation = engine.generate(call, seed=i)
        profile.disable()
        latencies.append(time.perf_counter() - started)
        answers.append(generation.completion_tokens / len(generation.passed))
        prompts.append(generation.prompt_tokens / len(generation.passed))
        attempts.append(len(generation.passed))
        redraws.append(generation.redraws)
        valid += bool(generation.passed and generation.passed[-1])
    stats = pstats.Stats(profile)
    total = sum(latencies)
    parts = {part: sum(_cumulative(stats, f, n) for f, n in where) / total
             for part, where in PARTS.items()}
    parts["other (Python around the loop)"] = max(0.0, 1.0 - sum(parts.values()))
    ordered = sorted(latencies)
    result = {
        "version_dir": str(args.version_dir), "calls": len(calls), "threads": args.threads,
        "p50_s": round(statistics.median(ordered), 3),
        "p95_s": round(ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))], 3),
        "valid_served": valid / len(calls),
        "prompt_tokens_mean": round(statistics.fmean(prompts), 1),
        "answer_tokens_mean": round(statistics.fmean(answers), 1),
        "attempts_mean": round(statistics.fmean(attempts), 2),
        "redraws_mean": round(statistics.fmean(redraws), 2),
        "ms_per_answer_token": round(1000 * total / sum(a * n for a, n in
                                                         zip(answers, attempts, strict=True)), 2),
        "forward_passes_per_map": round(_calls(stats, "map_latency.py", "llama_decode")
                                        / len(calls), 1),
        "time_share": {k: round(v, 3) for k, v in parts.items()},
        "note": "time shares are cumulative cProfile times over the "
                "calls (profiling itself adds overhead to the Python parts); latencies "
                "include it. Jump-forward writes several tokens per forward pass.",
    }
    print(f"{len(calls)} maps, {args.threads} threads: p50 {result['p50_s']} s, p95 "
          f"{result['p95_s']} s, served valid {valid}/{len(calls)}")
    print(f"per map: {result['prompt_tokens_mean']} prompt + {result['answer_tokens_mean']} "
          f"answer tokens per attempt, {result['attempts_mean']} attempts, "
          f"{result['redraws_mean']} item redraws; {result['forward_passes_per_map']} forward "
          f"passes; {result['ms_per_answer_token']} ms per answer token")
    for part, share in result["time_share"].items():
        print(f"  {share:6.1%}  {part}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
