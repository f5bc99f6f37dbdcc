"""report.html: one self-contained page (styles inline, PNGs embedded as data URIs).

`render_html(report, out_dir)` turns the dict that report.py writes to report.json into
HTML. Every string from the data (site names, outputs, arguments, rater ids) is escaped.
Task metrics are shown generically: nested results are flattened to rows, and a path
that goes through a `teacher` or `student` key becomes one row with both columns.
"""

from __future__ import annotations

import base64
import json
from html import escape
from pathlib import Path
from typing import Any

SIDES = ("teacher", "student")
GENERIC_PLOTS = {"plots/validity.png": "validity", "plots/latency.png": "latency",
                 "plots/ratings.png": "ratings", "plots/versions.png": "versions"}
STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#222}
h1{margin-bottom:4px} h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
.meta{color:#666} table{border-collapse:collapse;margin:8px 0}
td,th{border:1px solid #ddd;padding:4px 10px;text-align:left} th{background:#f4f4f4}
td.num{text-align:right;font-variant-numeric:tabular-nums}
img.plot{max-width:100%;border:1px solid #eee;margin:6px 0}
.pair{display:flex;gap:24px;align-items:flex-start;margin:12px 0}
.pair figure{margin:0} figcaption{color:#555;font-size:13px}
pre{background:#f7f7f7;padding:8px;max-height:260px;overflow:auto;font-size:12px}
.plots{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
"""


def _fmt(value: Any) -> str:
    if value is None:
        return "&ndash;"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.3f}"
    if isinstance(value, list):
        if value and all(isinstance(v, int | float) for v in value) and len(value) <= 4:
            return "[" + ", ".join(_fmt(v) for v in value) + "]"
        return f"{len(value)} values"
    return escape(str(value))


def _img(out_dir: Path, rel: str, alt: str, cls: str = "plot") -> str:
    data = base64.b64encode((out_dir / rel).read_bytes()).decode()
    return f'<img class="{cls}" alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def _flatten(value: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    if isinstance(value, dict):
        return [row for k, v in value.items() for row in _flatten(v, (*path, str(k)))]
    return [(path, value)]


def _comparison_table(result: dict[str, Any]) -> str:
    """Rows for every leaf; teacher/student leaves of the same path share a row."""
    rows: dict[str, dict[str, Any]] = {}
    for path, value in _flatten(result):
        side = next((s for s in SIDES if s in path), None)
        key = " / ".join(p for p in path if p != side)
        rows.setdefault(key, {})[side or "value"] = value
    body = "".join(
        f"<tr><td>{escape(key)}</td>"
        + "".join(f'<td class="num">{_fmt(cols.get(c))}</td>' for c in (*SIDES, "value"))
        + "</tr>"
        for key, cols in rows.items()
    )
    return ("<table><tr><th>metric</th><th>teacher</th><th>student</th><th>both</th></tr>"
            f"{body}</table>")


def _summary(m: dict[str, Any]) -> str:
    v, lat, cost, agree = m["validity"], m["latency"], m["cost"], m["agreement"]
    rows = [
        ("answers", v["teacher"]["n"], v["student"]["n"]),
        ("pass every validator", v["teacher"]["all_pass"], v["student"]["all_pass"]),
        ("exact match with the teacher", None, agree["exact_match"]),
        ("field-level agreement (mean)", None, agree["field_mean"]),
        ("leaf-value agreement (mean)", None, agree["leaf_mean"]),
        ("latency p50 (ms)", lat["teacher"]["p50_ms"], lat["student"]["p50_ms"]),
        ("latency p95 (ms)", lat["teacher"]["p95_ms"], lat["student"]["p95_ms"]),
        ("USD per 1,000 calls", cost["teacher"]["usd_per_1k_calls"],
         cost["student"]["usd_per_1k_calls"]),
        ("CPU seconds per 1,000 calls", None, cost["student"]["cpu_s_per_1k_calls"]),
    ]
    body = "".join(f'<tr><td>{escape(name)}</td><td class="num">{_fmt(t)}</td>'
                   f'<td class="num">{_fmt(s)}</td></tr>' for name, t, s in rows)
    return f"<table><tr><th></th><th>teacher</th><th>student</th></tr>{body}</table>"


def _validity(m: dict[str, Any]) -> str:
    t, s = m["validity"]["teacher"]["per_validator"], m["validity"]["student"]["per_validator"]
    body = "".join(f'<tr><td>{escape(n)}</td><td class="num">{_fmt(t.get(n))}</td>'
                   f'<td class="num">{_fmt(s.get(n))}</td></tr>' for n in sorted({*t, *s}))
    return f"<table><tr><th>validator</th><th>teacher</th><th>student</th></tr>{body}</table>"


def _samples(report: dict[str, Any], out_dir: Path) -> str:
    parts = []
    for i, sample in enumerate(report["samples"]):
        args = json.dumps(sample["args"], indent=1, ensure_ascii=False)
        figures = []
        for side in SIDES:
            entry = sample[side]
            body = (_img(out_dir, entry["image"], f"{side} answer", "sample") if entry["image"]
                    else f"<pre>{escape(json.dumps(entry['output'], indent=1))}</pre>")
            figures.append(f"<figure>{body}<figcaption>{side} &middot; "
                           f"{escape(entry['model'])}</figcaption></figure>")
        parts.append(f"<h3>Sample {i + 1}</h3><details><summary>input</summary>"
                     f"<pre>{escape(args)}</pre></details>"
                     f"<div class='pair'>{''.join(figures)}</div>")
    return "".join(parts)


def _ratings(ratings: dict[str, Any] | None) -> str:
    if not ratings or (not ratings["ratings"] and not ratings["preferences"]):
        return "<p>No manual ratings for this call site yet (<code>byllm-distill rate</code>).</p>"
    names = dict(ratings["criteria"])
    head = "".join(f"<th>{escape(title)}</th>" for title in names.values())
    rows = []
    for label, scores in ratings["by_source"].items():
        cells = []
        for c, _ in ratings["criteria"]:
            s = scores[c]
            ci = f" [{s['ci95'][0]:.2f}, {s['ci95'][1]:.2f}]" if s["ci95"] else ""
            cells.append(f'<td class="num">{_fmt(s["mean"])}{ci} (n={s["n"]})</td>')
        rows.append(f"<tr><td>{escape(label)}</td>{''.join(cells)}</tr>")
    prefs = "".join(
        f"<tr><td>{escape(p['a'])}</td><td>{escape(p['b'])}</td><td class='num'>{p['a_wins']}"
        f"</td><td class='num'>{p['b_wins']}</td><td class='num'>{p['ties']}</td>"
        f"<td class='num'>{_fmt(p['a_win_rate'])} {_fmt(p['ci95'])}</td></tr>"
        for p in ratings["preferences"])
    alpha = ratings["agreement"]
    alphas = ", ".join(f"{escape(names[c])}: {_fmt(a)}" for c, a in alpha["alpha"].items())
    return (f"<p>{ratings['ratings']} ratings by {len(ratings['raters'])} rater(s).</p>"
            f"<table><tr><th>source</th>{head}</tr>{''.join(rows)}</table>"
            "<h3>Side-by-side preferences</h3><table><tr><th>A</th><th>B</th><th>A wins</th>"
            "<th>B wins</th><th>ties</th><th>A win rate [95% CI]</th></tr>"
            f"{prefs}</table><p>Inter-rater agreement (Krippendorff's alpha, interval; "
            f"{alpha['items_rated_by_2plus']} items rated by two or more raters): {alphas}</p>")


def _gate(gate: dict[str, Any] | None) -> str:
    if not gate:
        return ("<p>Not evaluated: the gate judges a trained version's held-out and shadow "
                "answers (run without <code>--student-records</code>).</p>")
    verdict = "passes: the version may serve" if gate["passed"] else "refuses"
    marks = {True: "pass", False: "FAIL", None: "n/a"}
    rows = "".join(
        f"<tr><td>{escape(c['name'])}</td><td>{marks[c['passed']]}</td>"
        f"<td class='num'>{_fmt(c['value'])}</td><td class='num'>{_fmt(c['baseline'])}</td>"
        f"<td class='num'>{_fmt(c['bound'])}</td><td class='num'>{_fmt(c['bar'])}</td>"
        f"<td class='num'>{c['n']}</td><td>{escape(c['detail'])}</td></tr>"
        for c in gate["criteria"])
    return (f"<p>The promotion gate over this version's scored answers {verdict}.</p>"
            "<table><tr><th>criterion</th><th>result</th><th>value</th><th>teacher</th>"
            "<th>bound</th><th>bar</th><th>n</th><th>what was measured</th></tr>"
            f"{rows}</table>")


def _history(history: list[dict[str, Any]] | None, figure: str) -> str:
    if not history:
        return ""
    rows = "".join(
        f"<tr><td>v{h['version']}</td><td>{escape(str(h.get('created_at') or '-'))}</td>"
        f"<td>{'passes' if h['passed'] else 'refuses'}</td>"
        f"<td>{escape(', '.join(n for n, c in h['criteria'].items() if c['passed'] is False))}"
        "</td></tr>" for h in history)
    return ("<h2>Versions over time</h2><p>Each version judged by today's gate over the "
            "answers it left in the store (held-out and shadow).</p>" + figure
            + "<table><tr><th>version</th><th>trained</th><th>gate</th><th>failing</th></tr>"
            + rows + "</table>")


def render_html(report: dict[str, Any], out_dir: Path) -> str:
    m = report["metrics"]
    plots = report["plots"]
    figs = {name: _img(out_dir, rel, name) for rel, name in GENERIC_PLOTS.items() if rel in plots}
    task_plots = "".join(_img(out_dir, rel, Path(rel).stem) for rel in plots
                         if rel not in GENERIC_PLOTS)
    task = "".join(f"<h3>{escape(name)}</h3>{_comparison_table(result)}"
                   for name, result in m["task"].items())
    agree_fields = "".join(f"<tr><td>{escape(k)}</td><td class='num'>{_fmt(v)}</td></tr>"
                           for k, v in m["agreement"]["fields"].items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(report['title'])}</title>
<style>{STYLE}</style></head><body>
<h1>{escape(report['title'])}</h1>
<p class="meta">{escape(m['site'])} &middot; {m['pairs']} held-out inputs &middot;
teacher: {escape(', '.join(m['teacher_models']))} &middot;
student: {escape(', '.join(m['student_models']))} &middot;
{m['training_records']} training records &middot; {escape(report['generated_at'])}</p>
<h2>Summary</h2>{_summary(m)}
<h2>Promotion gate</h2>{_gate(report.get('gate'))}
{_history(report.get('history'), figs.get('versions', ''))}
<h2>Validity</h2>{figs.get('validity', '')}{_validity(m)}
<h2>Agreement with the teacher</h2>
<p>Exact match: {_fmt(m['agreement']['exact_match'])}. Per field:</p>
<table><tr><th>field</th><th>identical</th></tr>{agree_fields}</table>
<h2>Latency and cost</h2>{figs.get('latency', '')}
{_comparison_table({'latency': m['latency'], 'cost': m['cost']})}
<h2>Task metrics</h2><div class="plots">{task_plots}</div>{task or '<p>None registered.</p>'}
<h2>Samples: the same input, teacher and student</h2>{_samples(report, out_dir)}
<h2>Manual ratings</h2>{figs.get('ratings', '')}{_ratings(report['ratings'])}
</body></html>
"""
