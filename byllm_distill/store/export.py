"""JSON text written straight from stored columns: `records export` lines and the
`records.verdicts_json` column.

An export line has the values and field order of `Record.to_public()`; JSON-valued
columns are spliced in as stored (compact, unparsed), because decoding and re-encoding them
would make export several times slower. `verdicts_text` writes a record's verdicts (one
per name) as `json.dumps([asdict(v) ...], ensure_ascii=False)` would.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any

import sqlalchemy as sa

from byllm_distill.records import JSON_COLUMNS, Record, Verdict
from byllm_distill.store import tables

# What json.dumps(..., ensure_ascii=False) writes a string with.
_encode_str = json.encoder.encode_basestring  # type: ignore[attr-defined]
# The export's fields, in its order: whatever `Record.to_public` writes.
PUBLIC_FIELDS = list(Record(site="", fingerprint="", model="", messages=[], args={},
                             latency_ms=0.0).to_public())
# How `Record.from_row` reads a NULL JSON column, where that is not None.
_NULL_JSON = {"usage": "{}"}



def export_query(clauses: Sequence[Any]) -> tuple[Any, Callable[[Sequence[Any]], str]]:
    """The query for `records export` over `clauses`, oldest first, and the function
    that writes one of its rows as an export line."""
    names = [name for name in PUBLIC_FIELDS if name != "verdicts"]
    query = (sa.select(*(tables.records.c[name] for name in names),
                       tables.records.c.verdicts_json)
             .where(*clauses).order_by(tables.records.c.id))
    heads = [json.dumps(name) + ": " for name in names]
    writers = [functools.partial(_stored_json, _NULL_JSON.get(name, "null"))
               if name in JSON_COLUMNS else _json_str
               if isinstance(tables.records.c[name].type, sa.String) else json_scalar
               for name in names]
    verdicts_at = PUBLIC_FIELDS.index("verdicts")

    def line(row: Sequence[Any]) -> str:
        *values, verdicts = row
        out = [head + write(value) for head, write, value in zip(heads, writers, values,
                                                                 strict=True)]
        out.insert(verdicts_at, '"verdicts": ' + (verdicts or "[]"))
        return "{" + ", ".join(out) + "}"

    return query, line


def unique_verdicts(verdicts: list[Verdict]) -> list[Verdict]:
    """One verdict per name (the first), as the table's key requires."""
    seen: dict[str, Verdict] = {}
    for verdict in verdicts:
        seen.setdefault(verdict.name, verdict)
    return list(seen.values())


def _stored_json(null: str, text: str | None) -> str:
    return null if text is None else text


def _json_str(value: str | None) -> str:
    return "null" if value is None else _encode_str(value)


def json_scalar(value: Any) -> str:
    """`json.dumps(value, ensure_ascii=False)` for a column's str, int, float or None,
    without its per-call overhead."""
    if value is None:
        return "null"
    if type(value) is str:
        return _encode_str(value)
    if type(value) is bool:
        return "true" if value else "false"
    if type(value) is int:
        return int.__repr__(value)
    if type(value) is float and math.isfinite(value):
        return float.__repr__(value)
    return json.dumps(value)


def verdicts_text(verdicts: list[Verdict] | None) -> str | None:
    """`records.verdicts_json`: the verdicts by name (one per name, as stored), written as
    `json.dumps([asdict(v) ...], ensure_ascii=False)` would; None when there are none."""
    unique = sorted(unique_verdicts(verdicts or []), key=lambda v: v.name)
    if not unique:
        return None
    heads = [json.dumps(f.name) + ": " for f in fields(Verdict)]
    items = ("{" + ", ".join(head + json_scalar(getattr(v, f.name)) for head, f in
                             zip(heads, fields(Verdict), strict=True)) + "}" for v in unique)
    return "[" + ", ".join(items) + "]"
