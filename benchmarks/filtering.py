"""Filtered or unfiltered training data, when the teacher errs? Two map students, same inputs.

1. Capture a corpus with the offline teacher making simulated hosted-model mistakes
   (`--teacher-errors`, default 0.15 of its answers; rpg/mistakes.py): wrong counts, two
   things on one tile, out-of-bounds tiles, unreachable pockets, enemies next to the
   spawn, blank fields. Every mistake fails a validator (tests/test_rpg_mistakes.py).
2. Train two versions of `rpg.create_next_map` with the default budget: on the filtered
   dataset (records that passed every validator, the default) and on the unfiltered one
   (every successful call, mistakes included).
3. Answer the same held-out inputs with both (the filtered split's held-out inputs, so
   both are judged on the same inputs, none of which either trained on), ask the
   teacher a second time on each of them, and run the default promotion gate on each
   version's answers (no live shadow traffic here, so `min_shadow` is 0).

Prints, per version: training examples, validity unguided on the first attempt (the
student's own skill, no per-call grammar checks and no redraws), validity as served
(guided, redraws and up to 3 attempts), fidelity to the teacher (2x2-pattern KL gap,
diversity gap, per-path JSON gap, each with its bound), the worst determined field's
agreement, and the gate's decision.

    .venv/bin/python benchmarks/filtering.py [--runs 40] [--teacher-errors 0.15]
        [--json out.json]

Takes ~20 min on 2 cores (two map trainings; run it on an otherwise idle machine).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gate_separation import MAP_SITE, fresh_store, summarise, teacher_again  # noqa: E402


def first_attempt_validity(site: str, version: Any, inputs: list[Any]) -> float:
    """Share of inputs whose first unguided answer passes every validator."""
    from byllm_distill.runtime.engine import engine_for, unload

    engine = engine_for(site, folder=version.path, version=version.number)
    try:
        passed = sum(engine.generate(r.args, attempts=1, guided=False, seed=i).passed[0]
                     for i, r in enumerate(inputs))
    finally:
        unload(site)
    return passed / len(inputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=40, help="Corpus runs of 5 levels.")
    parser.add_argument("--teacher-errors", type=float, default=0.15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import jaclang  # noqa: F401 - the .jac importer and the capture plugin

    from byllm_distill.gate import promotion_gate
    from byllm_distill.lifecycle import evaluate_heldout
    from byllm_distill.registry import SiteRegistry
    from byllm_distill.rpg.corpus import generate_corpus
    from byllm_distill.store import RecordFilter
    from byllm_distill.training.pipeline import train_site

    config, store = fresh_store("filtering-")
    corpus = generate_corpus(args.runs, 5, seed=args.seed, teacher_errors=args.teacher_errors,
                             progress=False)
    for line in corpus.lines():
        print(line)
    teacher = {r.id: r for r in store.iter_records(RecordFilter(site=MAP_SITE,
                                                                source="teacher"))}
    registry = SiteRegistry(config, MAP_SITE)
    settings = replace(config.site(MAP_SITE), min_shadow=0)
    rows: list[dict[str, Any]] = []
    heldout: list[str] | None = None
    for filtered in (True, False):
        label = "filtered (valid only)" if filtered else "unfiltered (every answer)"
        started = time.monotonic()
        trained = train_site(MAP_SITE, config=config, store=store, filtered=filtered,
                             progress=False)
        train_s = time.monotonic() - started
        version = registry.verify(trained.number)
        if heldout is None:  # the filtered split's held-out inputs judge both versions
            heldout = list(trained.manifest["dataset"]["heldout_ids"])
            rng = random.Random(args.seed + 99)
            store.add_records([teacher_again(MAP_SITE, teacher[i], rng) for i in heldout])
        same_inputs = replace(version, manifest={**version.manifest, "dataset": {
            **version.manifest["dataset"], "heldout_ids": heldout}})
        first = first_attempt_validity(MAP_SITE, version, [teacher[i] for i in heldout])
        evaluate_heldout(store, MAP_SITE, same_inputs)
        result = promotion_gate(store, MAP_SITE, trained.number, settings,
                                trained.manifest["fingerprint"])
        counts = trained.manifest["dataset"]
        rows.append({"dataset": label, "train_examples": len(counts["train_ids"]),
                     "invalid_in_training": sum(1 for i in counts["train_ids"]
                                                if teacher[i].valid is False),
                     "train_s": round(train_s), "first_attempt_unguided": first,
                     "heldout": len(heldout), **summarise(result)})
        print_row(rows[-1])
    print("\n" + markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


def _fid(row: dict[str, Any], name: str) -> str:
    f = row["fidelity"].get(f"fidelity:{name}")
    return "-" if f is None else f"{f['gap']:+.3f} ({f['bound']:+.3f})"


def print_row(row: dict[str, Any]) -> None:
    print(f"\n{row['dataset']}: {row['train_examples']} training examples "
          f"({row['invalid_in_training']} invalid), trained in {row['train_s']} s")
    print(f"  validity on {row['heldout']} held-out inputs: first attempt unguided "
          f"{row['first_attempt_unguided']:.1%}, served {row['validity']:.1%}")
    for name in ("rpg_patterns", "rpg_diversity", "json_values"):
        print(f"  {name:<14} gap (bound) {_fid(row, name)}")
    print("  gate: " + ("PROMOTE" if row["passed"] else "refuse: " + ", ".join(row["failing"])))


def markdown(rows: list[dict[str, Any]]) -> str:
    head = ["training data", "examples (invalid)", "valid, first attempt unguided",
            "valid, served", "`rpg_patterns` KL gap (bound)", "`rpg_diversity` gap (bound)",
            "`json_values` gap (bound)", "gate"]
    out = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        gate = "**promote**" if r["passed"] else "refuse: " + ", ".join(r["failing"])
        out.append("| " + " | ".join([
            r["dataset"], f"{r['train_examples']} ({r['invalid_in_training']})",
            f"{r['first_attempt_unguided']:.1%}", f"{r['validity']:.1%}",
            _fid(r, "rpg_patterns"), _fid(r, "rpg_diversity"), _fid(r, "json_values"),
            gate]) + " |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
