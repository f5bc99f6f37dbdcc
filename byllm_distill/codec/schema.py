"""JSON-schema helpers shared by the dataset (target order, output statistics) and the
student runtime (a bounded schema for the generation grammar).

Targets are written with object keys in the order the grammar will force them:
llama.cpp's schema-to-grammar emits required properties first, in `properties` order,
then optional ones; keys the schema does not name come last, sorted. Training on that
order means the constrained student never has to write keys in an order it did not learn.

`bounded_schema` adds limits where the schema has none, so constrained generation always
terminates (an unbounded array or string can loop forever):

- arrays: `maxItems` = max(longest seen + 2, 1.5 × longest seen), or 32 with no data;
- strings: `maxLength` = max(2 × longest seen, 16), or 128 with no data;
- integers: `minimum` 0 when every value seen was ≥ 0 (else twice the lowest seen) and
  `maximum` = max(2 × highest seen, 10); left unbounded with no data (llama.cpp already
  caps integer digits).

Limits the schema already states are kept. The statistics come from the training outputs,
keyed by the schema location they were validated against, so `$ref`-shared definitions
pool their statistics.
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any

DEFAULT_MAX_ITEMS = 32
DEFAULT_MAX_LENGTH = 128


def response_schema(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    """The JSON schema inside a byLLM/OpenAI `response_format`, or None (a `str` answer)."""
    if not response_format:
        return None
    if response_format.get("type") == "json_schema":
        inner = response_format.get("json_schema") or {}
        return inner.get("schema")
    if "properties" in response_format or "type" in response_format:
        return response_format
    return None


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    ref = node.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return node, None
    target: Any = root
    for part in ref[2:].split("/"):
        target = target.get(part, {}) if isinstance(target, dict) else {}
    return (target if isinstance(target, dict) else {}), ref


def _branches(node: dict[str, Any]) -> list[dict[str, Any]]:
    for key in ("anyOf", "oneOf"):
        if isinstance(node.get(key), list):
            return [b for b in node[key] if isinstance(b, dict)]
    return []


def _type_matches(node: dict[str, Any], value: Any) -> bool:
    kind = node.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    checks = {"object": isinstance(value, dict), "array": isinstance(value, list),
              "string": isinstance(value, str), "null": value is None,
              "boolean": isinstance(value, bool),
              "integer": isinstance(value, int) and not isinstance(value, bool),
              "number": isinstance(value, int | float) and not isinstance(value, bool)}
    return any(checks.get(k, k is None) for k in kinds)


def _pick(node: dict[str, Any], root: dict[str, Any], value: Any,
          where: str) -> tuple[dict[str, Any], str]:
    node, ref = _resolve(node, root)
    where = ref or where
    for i, branch in enumerate(_branches(node)):
        resolved, bref = _resolve(branch, root)
        if _type_matches(resolved, value):
            return _pick(resolved, root, value, bref or f"{where}/anyOf/{i}")
    return node, where


def ordered(value: Any, schema: dict[str, Any] | None, root: dict[str, Any] | None = None) -> Any:
    """`value` with object keys in grammar order (see the module docstring)."""
    if schema is None:
        return value
    root = root if root is not None else schema
    node, _ = _pick(schema, root, value, "#")
    if isinstance(value, dict):
        props = node.get("properties") if isinstance(node.get("properties"), dict) else {}
        required = [k for k in node.get("required", []) if k in props]
        keys = required + [k for k in props if k not in required]
        keys = [k for k in keys if k in value] + sorted(k for k in value if k not in props)
        return {k: ordered(value[k], props.get(k), root) for k in keys}
    if isinstance(value, list):
        items = node.get("items") if isinstance(node.get("items"), dict) else None
        return [ordered(v, items, root) for v in value]
    return value


def target_text(output: Any, schema: dict[str, Any] | None) -> str:
    """The training target: the raw string for `str` answers, else compact JSON in grammar
    order (no spaces, non-ASCII kept)."""
    if schema is None and isinstance(output, str):
        return output
    return json.dumps(ordered(output, schema), separators=(",", ":"), ensure_ascii=False)


def collect_stats(value: Any, schema: dict[str, Any] | None, stats: dict[str, dict[str, Any]],
                  root: dict[str, Any] | None = None, where: str = "#") -> None:
    """Fold one output into `stats`: per schema location, longest array/string, int range."""
    if schema is None:
        return
    root = root if root is not None else schema
    node, where = _pick(schema, root, value, where)
    entry = stats.setdefault(where, {})
    if isinstance(value, dict):
        props = node.get("properties") if isinstance(node.get("properties"), dict) else {}
        for key, item in value.items():
            if key in props:
                collect_stats(item, props[key], stats, root, f"{where}/properties/{key}")
    elif isinstance(value, list):
        entry["max_items"] = max(entry.get("max_items", 0), len(value))
        items = node.get("items") if isinstance(node.get("items"), dict) else None
        for item in value:
            collect_stats(item, items, stats, root, f"{where}/items")
    elif isinstance(value, str):
        entry["max_length"] = max(entry.get("max_length", 0), len(value))
    elif isinstance(value, int) and not isinstance(value, bool):
        entry["min"] = min(entry.get("min", value), value)
        entry["max"] = max(entry.get("max", value), value)


def bounded_schema(schema: dict[str, Any], stats: dict[str, dict[str, Any]] | None = None
                   ) -> dict[str, Any]:
    """A copy of `schema` with the limits described in the module docstring added."""
    out = copy.deepcopy(schema)
    _bound(out, out, "#", stats or {}, set())
    return out


def _bound(node: dict[str, Any], root: dict[str, Any], where: str,
           stats: dict[str, dict[str, Any]], seen: set[str]) -> None:
    ref = node.get("$ref")
    if isinstance(ref, str):
        if ref in seen:
            return
        seen.add(ref)
        target, _ = _resolve(node, root)
        _bound(target, root, ref, stats, seen)
        return
    for i, branch in enumerate(_branches(node)):
        _bound(branch, root, f"{where}/anyOf/{i}", stats, seen)
    for name in ("$defs", "definitions"):
        for key, sub in (node.get(name) or {}).items():
            if isinstance(sub, dict):
                _bound(sub, root, f"#/{name}/{key}", stats, seen)
    entry = stats.get(where, {})
    kind = node.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    if "array" in kinds and "maxItems" not in node:
        seen_max = entry.get("max_items")
        node["maxItems"] = (DEFAULT_MAX_ITEMS if seen_max is None
                            else max(seen_max + 2, math.ceil(seen_max * 1.5)))
    if "string" in kinds and "maxLength" not in node and "enum" not in node \
            and "const" not in node and "pattern" not in node:
        seen_max = entry.get("max_length")
        node["maxLength"] = (DEFAULT_MAX_LENGTH if seen_max is None
                             else max(2 * seen_max, 16))
    if "integer" in kinds and "min" in entry:
        if not any(k in node for k in ("minimum", "exclusiveMinimum")):
            node["minimum"] = 0 if entry["min"] >= 0 else 2 * entry["min"]
        if not any(k in node for k in ("maximum", "exclusiveMaximum")):
            node["maximum"] = max(2 * entry["max"], 10)
    props = node.get("properties")
    if isinstance(props, dict):
        for key, sub in props.items():
            if isinstance(sub, dict):
                _bound(sub, root, f"{where}/properties/{key}", stats, seen)
    items = node.get("items")
    if isinstance(items, dict):
        _bound(items, root, f"{where}/items", stats, seen)


def max_json_chars(schema: dict[str, Any], root: dict[str, Any] | None = None,
                   depth: int = 0) -> int:
    """An upper bound on the length of compact JSON that `schema` admits (and so on the
    tokens a grammar-bound answer can take). Unbounded parts count as `UNBOUNDED`."""
    root = root if root is not None else schema
    if depth > 32:
        return UNBOUNDED
    node, _ = _resolve(schema, root)
    if "const" in node:
        return len(json.dumps(node["const"]))
    if isinstance(node.get("enum"), list):
        return max((len(json.dumps(v)) for v in node["enum"]), default=0)
    branches = _branches(node)
    if branches:
        return max(max_json_chars(b, root, depth + 1) for b in branches)
    kind = node.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    best = 0
    for k in kinds:
        if k == "object":
            props = node.get("properties") or {}
            if node.get("additionalProperties", True) is not False and not props:
                return UNBOUNDED
            size = 2 + max(0, len(props) - 1) + sum(
                len(json.dumps(key)) + 1 + max_json_chars(sub, root, depth + 1)
                for key, sub in props.items())
        elif k == "array":
            items = node.get("items") if isinstance(node.get("items"), dict) else {}
            if "maxItems" not in node:
                return UNBOUNDED
            size = 2 + int(node["maxItems"]) * (max_json_chars(items, root, depth + 1) + 1)
        elif k == "string":
            if "maxLength" not in node:
                return UNBOUNDED
            size = 2 + 6 * int(node["maxLength"])  # worst case: every char a \uXXXX escape
        elif k == "integer":
            size = 17  # llama.cpp's integer rule: a sign and at most 16 digits
        elif k == "number":
            size = 40
        elif k == "boolean":
            size = 5
        elif k == "null":
            size = 4
        else:
            return UNBOUNDED
        best = max(best, size)
    return min(best, UNBOUNDED)


UNBOUNDED = 1_000_000
