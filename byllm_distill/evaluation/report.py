"""Teacher-vs-student evaluation report for one call site.

`build_report` pairs the teacher and student records on their inputs, computes every
metric (metrics.py and the site's task metrics), summarises the manual ratings stored
for the site when a store is given, and writes into `out_dir`:

- `report.json`: every number, the plot and sample paths (relative to `out_dir`);
- `plots/*.png` and `samples/*.png`: the charts and the rendered sample outputs;
- `report.html`: one self-contained page (the PNGs are embedded), returned.

It raises `DistillError` when no student record answers a teacher input, or when the
teacher records span several call sites (one report per site).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from byllm_distill.errors import DistillError
from byllm_distill.evaluation import plots
from byllm_distill.evaluation.metrics import compute_metrics
from byllm_distill.evaluation.pairing import EvalData, Pair, pair_records
from byllm_distill.evaluation.ratings import summarize_ratings
from byllm_distill.evaluation.report_html import render_html
from byllm_distill.store import RecordFilter, Store
from byllm_distill.store.record import Record
from byllm_distill.task_metrics import MetricRegistry
from byllm_distill.task_metrics import registry as metric_registry

SAMPLES = 4


def build_report(teacher_records: Sequence[Record], student_records: Sequence[Record],
                 training_records: Sequence[Record], out_dir: str | Path,
                 title: str = "Teacher vs student", store: Store | None = None,
                 samples: int = SAMPLES, registry: MetricRegistry | None = None,
                 gate: dict[str, Any] | None = None,
                 history: list[dict[str, Any]] | None = None) -> Path:
    """Write the report files into `out_dir`; return the path of report.html. `gate` is
    the promotion gate's result for the version (`GateResult.to_dict()`), shown as is;
    `history` the site's versions with their criteria (`run.version_history`), drawn as
    versions over time."""
    registry = registry or metric_registry
    sites = {r.site for r in teacher_records}
    if len(sites) != 1:
        raise DistillError(f"a report covers one call site; the teacher records span "
                           f"{len(sites)} ({', '.join(sorted(sites)) or 'none'}).")
    site = sites.pop()
    pairs = pair_records(teacher_records, student_records)
    if not pairs:
        raise DistillError(f"no student record answers any of the {len(teacher_records)} "
                           f"teacher inputs of {site}; let the student answer them first.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = EvalData(site, pairs, [r for r in training_records if r.site == site])
    metrics = compute_metrics(data, registry)
    ratings = _ratings(store, site) if store is not None else None
    report: dict[str, Any] = {
        "title": title,
        "site": site,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "metrics": metrics,
        "ratings": ratings,
        "gate": gate,
        "history": history,
        "plots": [str(p.relative_to(out))
                  for p in _plots(data, metrics, ratings, registry, out, history)],
        "samples": _samples(pairs[:samples], registry, out),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    html_path = out / "report.html"
    html_path.write_text(render_html(report, out), encoding="utf-8")
    return html_path


def _ratings(store: Store, site: str) -> dict[str, Any]:
    ratings, preferences = store.ratings(), store.preferences()
    ids = {r["record_id"] for r in ratings}
    ids |= {i for p in preferences for i in (p["left_id"], p["right_id"])}
    records = {r.id: r for r in store.iter_records(RecordFilter(site=site, ids=sorted(ids)),
                                                   with_verdicts=False)} if ids else {}
    return summarize_ratings(ratings, preferences, records)


def _plots(data: EvalData, metrics: dict[str, Any], ratings: dict[str, Any] | None,
           registry: MetricRegistry, out: Path,
           history: list[dict[str, Any]] | None = None) -> list[Path]:
    folder = out / "plots"
    validity = metrics["validity"]
    names = sorted(set(validity["teacher"]["per_validator"])
                   | set(validity["student"]["per_validator"]))
    paths = [plots.grouped_bars(
        folder / "validity.png", ["all pass", *names],
        {side: [validity[side]["all_pass"] or 0.0,
                *(validity[side]["per_validator"].get(n, 0.0) for n in names)]
         for side in ("teacher", "student")},
        "Validity per validator", "pass rate", ylim=(0, 1.2))]
    # Teacher calls take seconds and student calls milliseconds: a log axis shows both.
    paths.append(plots.boxplot(
        folder / "latency.png",
        {"teacher": [r.latency_ms for r in data.teacher],
         "student": [r.latency_ms for r in data.student]},
        "Latency per call", "milliseconds (log scale)", log=True))
    for metric in registry.for_site(metrics["site"]):
        result = metrics["task"].get(metric.name)
        if metric.plot is not None and result and "error" not in result:
            paths += metric.plot(result, folder)
    if ratings and ratings["by_source"]:
        labels, criteria = list(ratings["by_source"]), [k for k, _ in ratings["criteria"]]
        means = {s: [ratings["by_source"][s][c]["mean"] or 0.0 for c in criteria] for s in labels}
        errors = {s: [tuple(ratings["by_source"][s][c]["ci95"] or (means[s][i], means[s][i]))
                      for i, c in enumerate(criteria)] for s in labels}
        paths.append(plots.grouped_bars(folder / "ratings.png", criteria, means,
                                        "Manual ratings (mean, 95% CI)", "score 1-5",
                                        ylim=(0, 7.0), errors=errors))
    if history:
        labels = [f"v{h['version']} {str(h.get('created_at') or '')[5:16].replace('T', ' ')}"
                  for h in history]
        paths.append(plots.version_history(folder / "versions.png", labels,
                                           [h["criteria"] for h in history],
                                           f"{metrics['site']}: the gate's criteria per version"))
    return paths


def _samples(pairs: list[Pair], registry: MetricRegistry, out: Path) -> list[dict[str, Any]]:
    render = registry.renderer(pairs[0].teacher.site) if pairs else None
    samples = []
    for i, pair in enumerate(pairs):
        entry: dict[str, Any] = {"args": pair.teacher.args}
        for side, record in (("teacher", pair.teacher), ("student", pair.student)):
            path = None
            if render is not None:
                path = render(record.output, out / "samples" / f"{i:02d}-{side}.png")
            entry[side] = {"id": record.id, "model": record.model,
                           "image": str(path.relative_to(out)) if path else None,
                           "output": None if path else record.output}
        samples.append(entry)
    return samples
