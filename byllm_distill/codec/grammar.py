"""The per-call GBNF grammar of a tuple-mode codec (see site.py).

`call_grammar(codec, args)` is a llama.cpp GBNF grammar admitting exactly the compact
texts the codec can decode for this call: objects as value lists in the codec's field
order, arrays with the item counts the codec allows for these arguments (exact when a
length followed an argument), integers inside their per-call range (digit patterns, so
`[1, 20]` admits `1`..`20` and nothing else), strings up to their length limit, and no
whitespace. Every part is bounded, so a grammar-bound decoder always finishes.
"""

from __future__ import annotations

import json
import re
from typing import Any

from byllm_distill.codec.paths import field_order, join_path
from byllm_distill.codec.site import SiteCodec

CHAR = r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})'
INTEGER = r'"-"? ("0" | [1-9] [0-9]{0,15})'
NUMBER = INTEGER + r' ("." [0-9]{1,16})? ([eE] [-+]? [0-9]{1,4})?'


def literal(text: str) -> str:
    """`text` as a GBNF string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") \
        .replace("\r", "\\r").replace("\t", "\\t") + '"'


def _digits_between(low: str, high: str) -> list[str]:
    """Patterns for the same-length digit strings low..high (no leading-zero rules here)."""
    if low == high:
        return [literal(low)]
    if len(low) == 1:
        return [f"[{low}-{high}]"]
    if low[0] == high[0]:
        return [f"{literal(low[0])} {rest}" for rest in _digits_between(low[1:], high[1:])]
    rest = len(low) - 1
    out: list[str] = []
    first, last = int(low[0]), int(high[0])
    if low[1:] != "0" * rest:
        out += [f"{literal(low[0])} {tail}" for tail in _digits_between(low[1:], "9" * rest)]
        first += 1
    tails: list[str] = []
    if high[1:] != "9" * rest:
        tails = [f"{literal(high[0])} {tail}" for tail in _digits_between("0" * rest, high[1:])]
        last -= 1
    if first <= last:
        out.append(f"[{first}-{last}]" + " [0-9]" * rest)
    return out + tails


def int_pattern(low: int | None, high: int | None) -> str:
    """A GBNF expression for the JSON integers in [low, high]; None sides are open."""
    if low is None or high is None or high - low > 10**6:
        return f"({INTEGER})"
    alternatives: list[str] = []
    if low < 0:
        alternatives += [f'"-" ({p})' for p in _nonneg(max(1, -high) if high < 0 else 1, -low)]
    if high >= 0:
        alternatives += _nonneg(max(low, 0), high)
    return "(" + " | ".join(alternatives) + ")"


def _nonneg(low: int, high: int) -> list[str]:
    out: list[str] = []
    for digits in range(len(str(low)), len(str(high)) + 1):
        lo = max(low, 10 ** (digits - 1) if digits > 1 else 0)
        hi = min(high, 10**digits - 1)
        if lo <= hi:
            out += _digits_between(str(lo), str(hi))
    return out


def _repeat(item: str, low: int, high: int) -> str:
    if high <= 0:
        return '"[]"'
    low = min(low, high)
    more = f'("," {item}){{{max(low - 1, 0)},{high - 1}}}'
    body = f"{item} {more}"
    return f'"[" {body} "]"' if low >= 1 else f'"[" ({body})? "]"'


def call_grammar(codec: SiteCodec, args: dict[str, Any]) -> str:
    """The GBNF grammar (root rule `root`) of a tuple-mode codec for one call."""
    rules: dict[str, str] = {"char": CHAR}
    root = _expr(codec, codec.schema or {}, "", args, rules)
    lines = [f"root ::= {root}"] + [f"{name} ::= {body}" for name, body in rules.items()]
    return "\n".join(lines) + "\n"


def _rule_name(path: str) -> str:
    return "r-" + (re.sub(r"[^A-Za-z0-9]+", "-", path.replace("*", "item")).strip("-") or "root")


def _expr(codec: SiteCodec, node: dict[str, Any], path: str, args: dict[str, Any],
          rules: dict[str, str]) -> str:
    if "enum" in node:
        return "(" + " | ".join(literal(json.dumps(v, separators=(",", ":"), ensure_ascii=False))
                                for v in node["enum"]) + ")"
    kind = node.get("type")
    if kind == "object":
        parts = [_expr(codec, node["properties"][k], join_path(path, k), args, rules)
                 for k in field_order(node) if path or k not in codec.copies]
        body = ' "," '.join(parts) if parts else ""
        return f'"[" {body} "]"' if body else '"[]"'
    if kind == "array":
        name = _rule_name(join_path(path, "*"))
        rules[name] = _expr(codec, node["items"], join_path(path, "*"), args, rules)
        low, high = codec.length_range(path, args)
        return _repeat(name, low, high)
    if kind == "string":
        return f'"\\"" char{{0,{codec.max_length.get(path, 128)}}} "\\""'
    if kind == "integer":
        return int_pattern(*codec.int_range(path, args))
    if kind == "number":
        return f"({NUMBER})"
    if kind == "boolean":
        return '("true" | "false")'
    return '"null"'
