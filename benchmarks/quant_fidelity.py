"""Is a faster quant as close to the teacher? Two exports of one adapter, the same maps.

`byllm-distill train SITE --quant Q4_0` exports the same LoRA to a smaller, faster GGUF than
the default Q4_K_M. Before a default changes, its answers must be as close to the teacher's
as before on the same inputs. This answers `--calls` maps for fresh levels (seeded, the
inputs of serving_load.py; the offline teacher's maps for the same levels are the
reference) with each version folder, one caller, seed i for input i, and prints per folder:
p50/p95 seconds per map, validity (served answers passing every validator, with a Wilson
95% lower bound) and the 2x2-pattern KL divergence from the teacher's maps (lower is
closer); then the KL difference (second minus first) with a 95% paired bootstrap interval
over the maps (the same resampled maps for both), and the p50 ratio.

    .venv/bin/python benchmarks/quant_fidelity.py Q4_K_M_VERSION_DIR Q4_0_VERSION_DIR \\
        [--calls 128] [--json out.json]

A version folder with another quant of the same adapter: copy the folder, run
`training.export.export_gguf(resolve_base(), DIR / "adapter", DIR / "model.gguf", "Q4_0")`
and rewrite its manifest's `files` (`registry.file_manifest(DIR)`) and `export.sha256`.
~5 min for 128 maps x 2 on 2 cores; run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from pathlib import Path
from typing import Any

from serving_load import SITE, _pct, inputs, teacher_maps

BOOTSTRAP = 2000


def answer_all(folder: Path, maps: list[dict[str, Any]]) -> list[Any]:
    from byllm_distill.runtime.engine import engine_for, unload

    engine = engine_for(SITE, folder=folder)
    try:
        return [engine.generate(a, seed=i) for i, a in enumerate(maps)]
    finally:
        unload(SITE)


def kl(reference: list[Any], rows: list[Any], picks: list[int]) -> float:
    from byllm_distill.rpg.report_metrics import pattern_distance

    return pattern_distance([reference[i] for i in picks],
                            [rows[i].output for i in picks
                             if rows[i].output is not None])["kl_teacher_student"]


def summary(rows: list[Any], reference: list[Any]) -> dict[str, Any]:
    from byllm_distill.stats import wilson_lower

    valid = sum(bool(g.passed and g.passed[-1]) for g in rows)
    return {"calls": len(rows), "p50_s": _pct([g.seconds for g in rows], 50),
            "p95_s": _pct([g.seconds for g in rows], 95), "valid": valid,
            "valid_lower_95": round(wilson_lower(valid, len(rows)), 3),
            "kl_2x2": round(kl(reference, rows, list(range(len(rows)))), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument("--calls", type=int, default=128)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    maps = inputs(args.calls, 11)
    reference = teacher_maps(maps, 11)
    rows = {folder: answer_all(folder, maps) for folder in (args.first, args.second)}
    result: dict[str, Any] = {"calls": args.calls}
    for folder, answered in rows.items():
        result[str(folder)] = summary(answered, reference)
        print(f"{str(folder):>40}: {result[str(folder)]}", flush=True)
    rng = random.Random(0)
    diffs = []
    for _ in range(BOOTSTRAP):
        picks = [rng.randrange(args.calls) for _ in range(args.calls)]
        diffs.append(kl(reference, rows[args.second], picks)
                     - kl(reference, rows[args.first], picks))
    diffs.sort()
    first, second = result[str(args.first)], result[str(args.second)]
    result["kl_difference"] = round(second["kl_2x2"] - first["kl_2x2"], 4)
    result["kl_difference_95"] = [round(diffs[int(0.025 * BOOTSTRAP)], 4),
                                  round(diffs[int(0.975 * BOOTSTRAP) - 1], 4)]
    result["p50_ratio"] = round(second["p50_s"] / first["p50_s"], 3)
    print(f"KL second - first: {result['kl_difference']} (95% paired bootstrap "
          f"{result['kl_difference_95']}); p50 second / first: {result['p50_ratio']}x; "
          f"mean of bootstrap differences {statistics.mean(diffs):.4f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
