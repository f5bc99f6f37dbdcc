"""The rating tool's pages. Pure functions from already-blinded content to HTML.

Nothing here ever sees a record: callers pass opaque handles, rendered images (data URIs)
and the call's arguments, so no page can name where an answer came from. Every string is
escaped; pages need no script, and forms post back to the same origin.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any
from urllib.parse import quote

from byllm_distill.tasks import Rubric

STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:20px auto;max-width:1180px;color:#222}
header{display:flex;justify-content:space-between;align-items:baseline}
.muted{color:#666} .error{color:#a40000;font-weight:600}
.item{display:flex;gap:28px;align-items:flex-start;flex-wrap:wrap}
.item>div{flex:1;min-width:340px}
figure{margin:0} figure img{image-rendering:pixelated;border:1px solid #ccc;width:440px}
figcaption{font-weight:600;margin-bottom:4px}
table{border-collapse:collapse;font-size:13px} td{border:1px solid #ddd;padding:2px 8px}
fieldset{border:1px solid #ddd;margin:8px 0;padding:6px 12px}
legend{font-weight:600} .help{color:#555;font-size:13px;margin:0 0 4px}
label.score{margin-right:14px} textarea{width:100%;max-width:520px}
button{font-size:15px;padding:6px 16px;margin-top:8px}
pre{background:#f7f7f7;padding:8px;max-width:560px;max-height:420px;overflow:auto}
"""
MAX_VALUE_CHARS = 160


def page(title: str, body: str) -> str:
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
            f"<body>{body}</body></html>")


def welcome(error: str = "") -> str:
    message = f'<p class="error">{escape(error)}</p>' if error else ""
    return page("Rate generated content", f"""
<h1>Rate generated content</h1>
<p>You will see answers one at a time, in random order, and sometimes two answers to the
same request side by side. Score each on the rubric; nothing tells you where an answer
came from, and that is on purpose.</p>{message}
<form method="get" action="/">
<label for="rater">Your rater id</label>
<input id="rater" name="rater" required maxlength="64" autofocus>
<button id="start" type="submit">Start rating</button></form>""")


def done(rater: str, count: int) -> str:
    return page("All done", f"""
<h1>All done, {escape(rater)}</h1>
<p>You have rated every item in this session ({count} in all). Thank you!</p>
<p class="muted">You can close this page.</p>""")


def message(title: str, text: str) -> str:
    return page(title, f"<h1>{escape(title)}</h1><p>{escape(text)}</p>")


def _value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS - 1] + "…"


def request_table(args: dict[str, Any]) -> str:
    """The call's arguments, nested objects flattened to dotted names."""
    rows: list[tuple[str, Any]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        else:
            rows.append((prefix, value))

    walk("", args)
    body = "".join(f"<tr><td>{escape(k)}</td><td>{escape(_value(v))}</td></tr>" for k, v in rows)
    return f"<h3>The request</h3><table>{body}</table>"


def answer_view(caption: str, image: str | None, output: Any) -> str:
    """One answer: its picture (a data: URI) when the site has a renderer, else its JSON."""
    if image is not None:
        body = f'<img alt="{escape(caption)}" src="{escape(image)}">'
    else:
        body = f"<pre>{escape(json.dumps(output, indent=2, ensure_ascii=False))}</pre>"
    return f"<figure><figcaption>{escape(caption)}</figcaption>{body}</figure>"


def _hidden(handle: str, rater: str) -> str:
    return (f'<input type="hidden" name="handle" value="{escape(handle)}">'
            f'<input type="hidden" name="rater" value="{escape(rater)}">')


def _header(rater: str, position: int, total: int) -> str:
    return (f"<header><h1>Item {position} of {total}</h1>"
            f'<span class="muted">rating as <b>{escape(rater)}</b> &middot; '
            f'<a href="/?rater={quote(rater)}">reload</a></span></header>')


def _skip(handle: str, rater: str) -> str:
    return (f'<form method="post" action="/skip">{_hidden(handle, rater)}'
            '<button id="skip" type="submit">Skip this one</button></form>')


def rating_page(handle: str, rater: str, position: int, total: int, args: dict[str, Any],
                answer: str, legend: str, rubric: Rubric) -> str:
    fields = []
    for key, title, help_text in rubric:
        radios = "".join(
            f'<label class="score" for="{key}-{n}"><input type="radio" id="{key}-{n}" '
            f'name="{key}" value="{n}" required> {n}</label>' for n in range(1, 6))
        fields.append(f"<fieldset><legend>{escape(title)}</legend>"
                      f'<p class="help">{escape(help_text)} (1 = poor, 5 = excellent)</p>'
                      f"{radios}</fieldset>")
    legend_html = f'<p class="muted">{escape(legend)}</p>' if legend else ""
    return page(f"Item {position} of {total}", f"""
{_header(rater, position, total)}
<div class="item">{answer}<div>{request_table(args)}{legend_html}
<form method="post" action="/rate">{_hidden(handle, rater)}{''.join(fields)}
<label for="comment">Comment (optional)</label><br>
<textarea id="comment" name="comment" rows="3" maxlength="2000"></textarea><br>
<button id="submit" type="submit">Save rating</button></form>
{_skip(handle, rater)}</div></div>""")


def pair_page(handle: str, rater: str, position: int, total: int, args: dict[str, Any],
              left: str, right: str, legend: str, rubric: Rubric) -> str:
    choices = "".join(
        f'<label class="score" for="choice-{value}"><input type="radio" id="choice-{value}" '
        f'name="choice" value="{value}" required> {label}</label>'
        for value, label in (("left", "Left is better"), ("tie", "About the same"),
                             ("right", "Right is better")))
    legend_html = f'<p class="muted">{escape(legend)}</p>' if legend else ""
    criteria = "; ".join(title.lower() for _, title, _ in rubric)
    return page(f"Item {position} of {total}", f"""
{_header(rater, position, total)}
<p>Two answers to the same request. Which is better overall ({escape(criteria)})?</p>
<div class="item">{left}{right}</div>{legend_html}
<form method="post" action="/prefer">{_hidden(handle, rater)}
<fieldset><legend>Your preference</legend>{choices}</fieldset>
<button id="submit" type="submit">Save preference</button></form>
{_skip(handle, rater)}{request_table(args)}""")
