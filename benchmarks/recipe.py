"""What the training recipe's enum change buys on a non-RPG site: same inputs, two students.

`triage.triage` (examples/triage) has an enum (`Severity`), a string, an integer and a
boolean field, and its offline teacher's answers are a function of the inputs, so every
field has one right answer. In a fresh data folder: capture `--n` tickets, then train two
versions with the default budget on the same dataset split:

- `enum values`: Jac enums written as byLLM's schema has them (`[3,"platform",2,false]`),
  the codec before this change (`train_site(..., enum_names=False)`);
- `enum names` (the default now): written by member name (`["HIGH","platform",2,false]`),
  read back as values.

Both answer the same held-out inputs, as served (the version's sampling, T=0.7) and
greedy; the table gives each field's exact agreement with the teacher, with its 95%
Wilson interval, and the share of answers right on every field.

    .venv/bin/python benchmarks/recipe.py [--n 200] [--seed 0] [--json out.json]

Takes ~10 min on 2 cores (two trainings; run it on an otherwise idle machine).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gate_separation import TRIAGE, TRIAGE_SITE, capture_corpus, fresh_store  # noqa: E402


def score(site: str, trained: Any, store: Any, temperature: float | None) -> dict[str, Any]:
    from byllm_distill.runtime.engine import engine_for, unload
    from byllm_distill.stats import wilson
    from byllm_distill.store import RecordFilter

    sys.path.insert(0, str(TRIAGE))
    from rule_teacher import triage

    held = list(store.iter_records(RecordFilter(ids=trained.manifest["dataset"]["heldout_ids"])))
    engine = engine_for(site, folder=trained.path, version=trained.number)
    right: dict[str, int] = {}
    every = 0
    try:
        for i, record in enumerate(held):
            want = triage(record.args["ticket"])
            got = engine.generate(record.args, temperature=temperature, seed=i).output or {}
            for key, value in want.items():
                right[key] = right.get(key, 0) + (got.get(key) == value)
            every += got == want
    finally:
        unload(site)
    n = len(held)
    fields = {k: {"agreement": v / n, "ci95": wilson(v, n)} for k, v in right.items()}
    return {"n": n, "fields": fields, "all_fields": every / n, "all_ci95": wilson(every, n)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200, help="Tickets captured.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import jaclang  # noqa: F401 - the .jac importer and the capture plugin

    from byllm_distill.training.pipeline import train_site

    config, store = fresh_store("recipe-")
    capture_corpus(TRIAGE_SITE, argparse.Namespace(triage_n=args.n, seed=args.seed))
    rows = []
    for names in (False, True):
        label = "enum names" if names else "enum values"
        started = time.monotonic()
        trained = train_site(TRIAGE_SITE, config=config, store=store, enum_names=names,
                             progress=False)
        train_s = round(time.monotonic() - started)
        for mode, temperature in (("served (T=0.7)", None), ("greedy", 0.0)):
            rows.append({"codec": label, "decoding": mode, "train_s": train_s,
                         "steps": trained.manifest["training"]["steps"],
                         "final_loss": trained.manifest["training"]["final_loss"],
                         **score(TRIAGE_SITE, trained, store, temperature)})
            print_row(rows[-1])
    print("\n" + markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


def _cell(value: float, ci: tuple[float, float]) -> str:
    return f"{value:.1%} ({ci[0]:.2f}-{ci[1]:.2f})"


def print_row(row: dict[str, Any]) -> None:
    fields = ", ".join(f"{k} {_cell(v['agreement'], v['ci95'])}" for k, v in row["fields"].items())
    print(f"{row['codec']}, {row['decoding']}: {row['steps']} steps in {row['train_s']} s, "
          f"loss {row['final_loss']} | {row['n']} held-out | {fields} | every field "
          f"{_cell(row['all_fields'], row['all_ci95'])}", flush=True)


def markdown(rows: list[dict[str, Any]]) -> str:
    names = list(rows[0]["fields"])
    head = ["codec", "decoding", "train", *[f"`{n}`" for n in names], "every field"]
    out = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        out.append("| " + " | ".join([
            r["codec"], r["decoding"], f"{r['steps']} steps, {r['train_s']} s, loss "
            f"{r['final_loss']}", *[_cell(r["fields"][n]["agreement"], r["fields"][n]["ci95"])
                                    for n in names],
            _cell(r["all_fields"], r["all_ci95"])]) + " |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
