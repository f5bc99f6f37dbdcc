"""How many teacher calls until a site switches? Train on 25, 50, 100, 200, 400 records.

For each size, in a fresh data folder: capture that many teacher records of the site
(`triage.triage` from examples/triage by default, or the RPG level or map site), ask the
teacher a second time on every held-out input (what the router does on shadow inputs),
train a version with the default budget, answer the held-out inputs with it (the worker's
held-out evaluation) and run the default promotion gate over those answers. There is no
live shadow traffic here, so `min_shadow` is 0; everything else is the default gate. The
held-out split is the dataset's own (20% of the records), so small sizes are judged on few
inputs and their bounds are wide: that is part of the answer.

Prints one row per size: train steps and seconds, validity, each determined field's
agreement with the teacher (and its bound), fidelity gaps, the gate's decision and what
failed. `--plot` draws per-field agreement against the number of records, with the sizes
the gate promoted circled.

    .venv/bin/python benchmarks/learning_curve.py [--site triage|level|map]
        [--sizes 25,50,100,200,400] [--plot docs/images/learning_curve.png] [--json out.json]
    .venv/bin/python benchmarks/learning_curve.py --from-json out.json --plot curve.png

Takes ~25 min for triage on 2 cores (training dominates; run it on an otherwise idle
machine).
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

from gate_separation import (  # noqa: E402 - after the environment is set
    LEVEL_SITE,
    MAP_SITE,
    TRIAGE_SITE,
    capture_corpus,
    fresh_store,
    summarise,
    teacher_again,
)

SITES = {"triage": TRIAGE_SITE, "level": LEVEL_SITE, "map": MAP_SITE}


def run_size(site: str, size: int, args: argparse.Namespace) -> dict[str, Any]:
    from byllm_distill.gate import promotion_gate
    from byllm_distill.lifecycle import evaluate_heldout
    from byllm_distill.registry import SiteRegistry
    from byllm_distill.store import RecordFilter
    from byllm_distill.training.pipeline import train_site

    config, store = fresh_store(f"curve-{size}-")
    # RPG runs give one record per site per level, five levels a run.
    corpus = argparse.Namespace(triage_n=size, map_runs=max(1, size // 5), seed=args.seed)
    capture_corpus(site, corpus)
    teacher = list(store.iter_records(RecordFilter(site=site, source="teacher")))
    started = time.monotonic()
    trained = train_site(site, config=config, store=store, progress=False)
    train_s = time.monotonic() - started
    version = SiteRegistry(config, site).verify(trained.number)
    held_ids = set(trained.manifest["dataset"]["heldout_ids"])
    rng = random.Random(args.seed + 99)
    store.add_records([teacher_again(site, r, rng) for r in teacher if r.id in held_ids])
    evaluate_heldout(store, site, version)
    settings = replace(config.site(site), min_shadow=0)
    result = promotion_gate(store, site, trained.number, settings,
                            trained.manifest["fingerprint"])
    fields = {c.name.split(":", 1)[1]: {"student": c.value, "teacher": c.baseline,
                                        "bound": c.bound, "passed": c.passed}
              for c in result.criteria if c.kind == "agreement" and ":" in c.name}
    return {"site": site, "records": len(teacher), "heldout": len(held_ids),
            "steps": trained.manifest["training"]["steps"], "train_s": round(train_s),
            "fields": fields, **summarise(result)}


def print_row(row: dict[str, Any]) -> None:
    fields = ", ".join(f"{k} {v['student']:.2f}" + (f" ({v['bound']:+.2f})"
                                                    if v["bound"] is not None else "")
                       for k, v in row["fields"].items() if v["student"] is not None)
    fid = ", ".join(f"{k.split(':', 1)[1]} {v['gap']:+.3f} ({v['bound']:+.3f})"
                    for k, v in row["fidelity"].items())
    print(f"{row['records']:>4} records ({row['heldout']} held out), {row['steps']} steps "
          f"in {row['train_s']} s | validity {row['validity']:.3f} | {fields} | {fid} | "
          + ("PROMOTE" if row["passed"] else "refuse: " + ", ".join(row["failing"])),
          flush=True)


def markdown(rows: list[dict[str, Any]]) -> str:
    names = sorted({k for r in rows for k, v in r["fields"].items() if v["passed"] is not None})
    head = ["teacher records", "held out", "steps", "train s", "validity",
            *[f"`{n}` agreement (bound)" for n in names], "gate"]
    out = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        cells = []
        for n in names:
            f = r["fields"].get(n)
            cells.append("-" if not f or f["student"] is None else
                         f"{f['student']:.2f} ({f['bound']:+.2f})")
        gate = "**promote**" if r["passed"] else "refuse: " + ", ".join(r["failing"])
        out.append("| " + " | ".join([str(r["records"]), str(r["heldout"]), str(r["steps"]),
                                      str(r["train_s"]), f"{r['validity']:.2f}", *cells,
                                      gate]) + " |")
    return "\n".join(out)


def plot(rows: list[dict[str, Any]], path: Path, site: str) -> None:
    from byllm_distill.evaluation.plots import lines

    names = sorted({k for r in rows for k, v in r["fields"].items() if v["passed"] is not None})
    xs = [r["records"] for r in rows]
    series = {n: [r["fields"].get(n, {}).get("student") for r in rows] for n in names}
    marks = {n: [r["passed"] for r in rows] for n in names}
    lines(path, xs, series, f"{site}: held-out agreement with the teacher",
          "teacher records captured", "exact agreement per field", log_x=True, marks=marks,
          mark_label="gate promotes", hline=1.0)
    print(f"plot: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--site", choices=sorted(SITES), default="triage")
    parser.add_argument("--sizes", default="25,50,100,200,400")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--from-json", type=Path,
                        help="Print and plot the rows of an earlier --json run; no training.")
    args = parser.parse_args()
    site = SITES[args.site]
    if args.from_json:
        rows = json.loads(args.from_json.read_text())
        print(markdown(rows))
        if args.plot:
            plot(rows, args.plot, rows[0]["site"])
        return
    import jaclang  # noqa: F401 - the .jac importer and the capture plugin

    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        rows.append(run_size(site, size, args))
        print_row(rows[-1])
    print("\n" + markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    if args.plot:
        plot(rows, args.plot, site)


if __name__ == "__main__":
    main()
