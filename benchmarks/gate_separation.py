"""Does the gate tell a good student from a bad one? Students trained for 1, 30, 100 steps
and the default budget, judged by the default promotion gate on the same held-out inputs.

For each site (the RPG map and level sites, and `triage.triage` from examples/triage, whose offline
teacher answers are a function of the inputs), in a fresh data folder:

1. capture a corpus with the offline teacher (`--map-runs` x 5 levels; `--triage-n`
   tickets);
2. ask the teacher a second time on every held-out input (what the router does on shadow
   inputs, `teacher_repeats`), so the teacher's self-agreement is known;
3. per budget: train a version, answer every held-out input with it (the worker's
   held-out evaluation), and run the promotion gate over those answers. There is no
   live shadow traffic here, so `min_shadow` is 0; everything else is the default gate;
4. as a reference, the teacher's own repeated answers judged as if they were a student.

Prints, per site and budget: validity, the lowest agreement bound among fields the
teacher determines, each fidelity criterion (student distance and the teacher's split-half
baseline, gap and bound vs margin) and the gate's decision with the failing criteria.

    .venv/bin/python benchmarks/gate_separation.py [--sites map,triage]
        [--steps 1,30,100,default] [--map-runs 40] [--triage-n 200] [--json out.json]
        [--sites level] [--train-config '{"batch_size": 4}']

Takes ~25 min on 2 cores (training dominates; run it on an otherwise idle machine).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

ROOT = Path(__file__).resolve().parent.parent
TRIAGE = ROOT / "examples" / "triage"
MAP_SITE, LEVEL_SITE, TRIAGE_SITE = "rpg.create_next_map", "rpg.create_next_level", "triage.triage"


def capture_corpus(site: str, args: argparse.Namespace) -> None:
    if site in (MAP_SITE, LEVEL_SITE):
        from byllm_distill.rpg.corpus import generate_corpus

        generate_corpus(args.map_runs, 5, seed=args.seed, progress=False)
        return
    env = {**os.environ, "TRIAGE_N": str(args.triage_n), "TRIAGE_SEED": str(args.seed)}
    subprocess.run([str(Path(sys.executable).parent / "jac"), "run", str(TRIAGE / "triage.jac")],
                   check=True, env=env, cwd=TRIAGE, stdout=subprocess.DEVNULL)


def teacher_again(site: str, record: Any, rng: random.Random) -> Any:
    """The offline teacher's answer to the record's input, asked once more."""
    from byllm_distill.rpg.checks import check_level, check_map
    from byllm_distill.rpg.generator import design_level, design_map
    from byllm_distill.store import Record

    if site == MAP_SITE:
        output = design_map(record.args["level"], rng)
        verdicts = check_map(output)
    elif site == LEVEL_SITE:
        a = record.args
        output = design_level(a["last_levels"], a["difficulty"], a["level_width"],
                              a["level_height"], rng)
        verdicts = check_level(output, a)
    else:
        sys.path.insert(0, str(TRIAGE))
        from rule_teacher import triage

        output, verdicts = triage(record.args["ticket"]), list(record.verdicts or [])
    return Record(site=site, fingerprint=record.fingerprint, model=record.model,
                  messages=record.messages, args=record.args, latency_ms=record.latency_ms,
                  schema=record.schema, output_raw=json.dumps(output), output=output,
                  verdicts=verdicts)


def summarise(result: Any) -> dict[str, Any]:
    crits = {c.name: c for c in result.criteria}
    determined = [c for c in result.criteria if c.kind == "agreement" and c.passed is not None
                  and c.bound is not None]
    worst = min(determined, key=lambda c: c.bound) if determined else None
    return {
        "validity": crits["validity"].value, "validity_lb": crits["validity"].bound,
        "agreement_worst": None if worst is None else {
            "field": worst.name, "student": worst.value, "teacher": worst.baseline,
            "bound": worst.bound, "bar": worst.bar},
        "fidelity": {c.name: {"student": c.value + (c.baseline or 0.0), "baseline": c.baseline,
                              "gap": c.value, "bound": c.bound, "margin": c.bar}
                     for c in result.criteria if c.kind == "fidelity" and c.value is not None},
        "passed": result.passed,
        "failing": [c.name for c in result.failing()],
    }


def fresh_store(prefix: str) -> tuple[Any, Any]:
    """A new data folder for one run (BYLLM_DISTILL_HOME, kept for a look afterwards), with
    no capture or router left from an earlier one; its config and store."""
    from byllm_distill import capture, router
    from byllm_distill.config import load_config
    from byllm_distill.store import Store

    home = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ["BYLLM_DISTILL_HOME"] = str(home)
    router.reset_router()
    capture.reset_capture()
    config = load_config()
    return config, Store(config.database_url)


def run_site(site: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    from byllm_distill.gate import evaluate, promotion_gate
    from byllm_distill.gate.samples import Samples, teacher_repeats
    from byllm_distill.lifecycle import evaluate_heldout
    from byllm_distill.registry import SiteRegistry
    from byllm_distill.store import RecordFilter
    from byllm_distill.training.pipeline import train_site
    from byllm_distill.training.trainer import TrainConfig

    config, store = fresh_store(f"gate-{site}-")
    capture_corpus(site, args)
    teacher = list(store.iter_records(RecordFilter(site=site, source="teacher")))
    settings = replace(config.site(site), min_shadow=0)
    rows: list[dict[str, Any]] = []
    repeated = False
    for budget in args.steps.split(","):
        steps = None if budget == "default" else int(budget)
        started = time.monotonic()
        trained = train_site(site, config=config, store=store,
                             train_config=TrainConfig(steps=steps, **args.train_config),
                             progress=False)
        train_s = time.monotonic() - started
        version = SiteRegistry(config, site).verify(trained.number)
        held_ids = set(trained.manifest["dataset"]["heldout_ids"])
        if not repeated:
            rng = random.Random(args.seed + 99)
            store.add_records([teacher_again(site, r, rng) for r in teacher if r.id in held_ids])
            repeated = True
        started = time.monotonic()
        evaluate_heldout(store, site, version)
        eval_s = time.monotonic() - started
        result = promotion_gate(store, site, trained.number, settings, trained.manifest[
            "fingerprint"])
        rows.append({"site": site, "student": f"{budget} steps" if steps else "default budget",
                     "steps": trained.manifest["training"]["steps"],
                     "train_s": round(train_s), "eval_s": round(eval_s),
                     "criteria": [c.to_dict() for c in result.criteria], **summarise(result)})
        print_row(rows[-1])
    # The teacher's repeats judged as a student: what a perfect student would score.
    pairs = teacher_repeats(store, site, teacher[-1].fingerprint)
    loaded = {r.id: r for r in store.iter_records(RecordFilter(ids=[b.id for _, b in pairs]))}
    pairs = [(a, loaded[b.id]) for a, b in pairs]
    samples = Samples(answers=[b for _, b in pairs], pairs=pairs, repeats=pairs, live=0)
    reference = evaluate(samples, site, settings, "promote")
    rows.append({"site": site, "student": "teacher (repeat)", "steps": None,
                 **summarise(reference)})
    print_row(rows[-1])
    return rows


def _f(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


def print_row(row: dict[str, Any]) -> None:
    worst = row["agreement_worst"]
    agree = (f"{worst['field']} {_f(worst['student'])} vs teacher {_f(worst['teacher'])}, "
             f"bound {_f(worst['bound'])}" if worst else "no determined field")
    print(f"\n{row['site']} | {row['student']}"
          + (f" ({row['steps']} steps, train {row['train_s']} s, eval {row['eval_s']} s)"
             if row.get("train_s") is not None else ""))
    print(f"  validity {_f(row['validity'])} (lb {_f(row['validity_lb'])}); agreement: {agree}")
    for name, f in row["fidelity"].items():
        print(f"  {name:<24} student {_f(f['student'])}  teacher split-half {_f(f['baseline'])}"
              f"  gap {f['gap']:+.3f}  bound {f['bound']:+.3f}  margin {f['margin']}")
    print(f"  gate: {'PROMOTE' if row['passed'] else 'refuse'}"
          + (f" (failing: {', '.join(row['failing'])})" if row["failing"] else ""))


def markdown(rows: list[dict[str, Any]]) -> str:
    names = sorted({n for r in rows for n in r["fidelity"]})
    head = ["site", "student", "validity", "worst determined field: student / teacher (bound)",
            *[f"{n} gap (bound)" for n in names], "gate"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        w = r["agreement_worst"]
        agree = (f"{w['field'].split(':', 1)[1]}: {_f(w['student'])} / {_f(w['teacher'])} "
                 f"({w['bound']:+.3f})" if w else "-")
        fid = [f"{r['fidelity'][n]['gap']:+.3f} ({r['fidelity'][n]['bound']:+.3f})"
               if n in r["fidelity"] else "-" for n in names]
        gate = "promote" if r["passed"] else "refuse: " + ", ".join(r["failing"])
        lines.append("| " + " | ".join([r["site"], r["student"], _f(r["validity"]), agree, *fid,
                                        gate]) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sites", default="map,triage")
    parser.add_argument("--steps", default="1,30,100,default")
    parser.add_argument("--map-runs", type=int, default=40)
    parser.add_argument("--triage-n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-config", type=json.loads, default={},
                        help='More TrainConfig fields as JSON, e.g. \'{"batch_size": 4}\'.')
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import jaclang  # noqa: F401 - the .jac importer and the capture plugin

    sites = {"map": MAP_SITE, "level": LEVEL_SITE, "triage": TRIAGE_SITE}
    rows = [row for key in args.sites.split(",") for row in run_site(sites[key], args)]
    print("\n" + markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
