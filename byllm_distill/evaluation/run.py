"""Evaluate one call site's student against its teacher: what `byllm-distill eval` runs.

`evaluate_site` picks the eval set, gets the student's answers and builds the report
(report.py). The eval set is the site's successful teacher records of one contract (the
student version's fingerprint, else the newest), split by the version manifest's
`dataset.heldout_ids` / `dataset.train_ids` when present, else by `pairing.heldout_split`.

Student answers. With `use_student_records`, the student is not run: its answers already
in the store (sources in `pairing.STUDENT_SOURCES`, of `version` when given) are paired
with the held-out inputs. Otherwise the version is resolved from the site registry
(`version`, else the active one, else the newest); its `eval` answers already in the store
(the worker's held-out evaluation writes them) are reused, and only inputs without one are
answered, through the runtime engine (llama.cpp, `runtime.engine.engine_for`), or through
`loader(site, version)` when given. So running `eval` twice never doubles the samples the
promotion gate counts.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from byllm_distill.config import SiteSettings
from byllm_distill.errors import NotFoundError
from byllm_distill.evaluation.pairing import (
    STUDENT_SOURCES,
    args_key,
    heldout_split,
    pair_records,
)
from byllm_distill.evaluation.report import build_report
from byllm_distill.registry import SiteRegistry, Version, site_dirname
from byllm_distill.runtime.answer import engine_loader, student_label
from byllm_distill.scoring import StudentAnswer, answer_with_student
from byllm_distill.store import Record, RecordFilter, Store

StudentLoader = Callable[[str, Version], StudentAnswer]


@dataclass(frozen=True)
class EvalOutcome:
    report: Path
    metrics: dict[str, Any]
    student: str
    gate: dict[str, Any] | None
    answered: int  # held-out inputs the student answered in this run (the rest were reused)


def eval_set(store: Store, site: str, version: Version | None = None,
             limit: int | None = None) -> tuple[list[Record], list[Record]]:
    """(training, held-out) teacher records of the site's contract."""
    teacher = list(store.iter_records(RecordFilter(site=site, source="teacher", status="ok")))
    if not teacher:
        raise NotFoundError(f"no teacher records for {site}; run the program with capture on "
                            "(see `byllm-distill sites` for the sites captured).")
    manifest = version.manifest if version is not None else {}
    fingerprint = manifest.get("fingerprint") or teacher[-1].fingerprint
    teacher = [r for r in teacher if r.fingerprint == fingerprint]
    dataset = manifest.get("dataset") if isinstance(manifest.get("dataset"), dict) else {}
    train, heldout = heldout_split(teacher, dataset.get("heldout_ids"))
    if dataset.get("train_ids") is not None:
        wanted = set(dataset["train_ids"])
        train = [r for r in teacher if r.id in wanted]
    if not heldout:
        raise NotFoundError(f"{site} has no held-out teacher records yet ({len(teacher)} in "
                            "all); capture more calls before evaluating.")
    return train, heldout[:limit] if limit else heldout


def evaluate_site(store: Store, data_dir: Path, site: str, version: int | None = None,
                  out_dir: Path | None = None, limit: int | None = 100,
                  use_student_records: bool = False,
                  loader: StudentLoader | None = None,
                  settings: SiteSettings | None = None) -> EvalOutcome:
    """With `settings`, the report also shows the promotion gate's criteria for the version
    (over all its held-out and shadow answers in the store)."""
    answered = 0
    gate = None
    if use_student_records:
        train, heldout = eval_set(store, site)
        stored = [r for source in STUDENT_SOURCES for r in store.iter_records(
            RecordFilter(site=site, source=source, version=version))]
        pairs = pair_records(heldout, stored)[:limit or None]
        heldout, students = [p.teacher for p in pairs], [p.student for p in pairs]
        if not students:
            raise NotFoundError(f"no student record in the store answers a held-out input of "
                                f"{site}; drop --student-records to run the student.")
        label = ", ".join(sorted({r.model for r in students}))
    else:
        resolved = SiteRegistry.at(data_dir, site).resolve(version)
        label = student_label(site, resolved)
        train, heldout = eval_set(store, site, resolved, limit)
        stored = list(store.iter_records(RecordFilter(site=site, source="eval",
                                                      version=resolved.number)))
        students = [p.student for p in pair_records(heldout, stored)]
        done = {args_key(r) for r in students}
        todo = [r for r in heldout if args_key(r) not in done]
        if todo:
            answer = (loader or engine_loader)(site, resolved)
            try:
                students += answer_with_student(todo, answer, label, store,
                                                version=resolved.number)
            finally:
                if loader is None:
                    from byllm_distill.runtime.engine import unload

                    unload(site)
            answered = len(todo)
        if settings is not None:
            from byllm_distill.gate import promotion_gate

            gate = promotion_gate(store, site, resolved.number, settings,
                                  resolved.manifest.get("fingerprint")).to_dict()
    history = version_history(store, data_dir, site, settings) if settings else None
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out = out_dir or data_dir / "reports" / f"{site_dirname(site)}-{stamp}"
    report = build_report(heldout, students, train, out, title=f"{site}: teacher vs {label}",
                          store=store, gate=gate, history=history)
    metrics = json.loads((report.parent / "report.json").read_text())["metrics"]
    return EvalOutcome(report, metrics, label, gate, answered)


def version_history(store: Store, data_dir: Path, site: str,
                    settings: SiteSettings) -> list[dict[str, Any]] | None:
    """Each version's gate criteria over its scored answers in the store, oldest first;
    None when the site has fewer than two versions (nothing to compare over time)."""
    from byllm_distill.gate import promotion_gate
    from byllm_distill.registry import SiteRegistry

    versions = SiteRegistry.at(data_dir, site, store).versions()
    if len(versions) < 2:
        return None
    out = []
    for v in versions:
        result = promotion_gate(store, site, v.number, settings, v.manifest.get("fingerprint"))
        out.append({"version": v.number, "created_at": v.manifest.get("created_at"),
                    "passed": result.passed,
                    "criteria": {c.name: c.to_dict() for c in result.criteria}})
    return out
