"""Paths into a site's arguments and answer schema, shared by the codec, its grammar and
the input policy.

A path is `/`-separated object keys; `*` stands for "every item of a list"
(`walls/*/start_pos/x`). `inline_schema` resolves byLLM's `$ref`s (and writes an enum by its
member names when asked), `walk_schema` lists a schema's paths, `values_at` /
`arg_value` read values at a path, `field_order` is the order a tuple codec writes an
object's fields in (fixed-size fields before lists).
"""

from __future__ import annotations

import re
from typing import Any

from byllm_distill.codec.inputs import get_path

SCALARS = ("string", "integer", "number", "boolean", "null")


class UnsupportedSchema(ValueError):
    """The output schema has a part the tuple form cannot express; use JSON mode."""


def join_path(path: str, part: str) -> str:
    return f"{path}/{part}" if path else part


def inline_schema(schema: dict[str, Any], enum_names: bool = True) -> dict[str, Any]:
    """`schema` with every `$ref` replaced by its target and only the keys a codec needs;
    raises `UnsupportedSchema` for unions, optional fields, free-form or recursive parts."""
    return _inline(schema, schema, (), enum_names)


def _inline(node: dict[str, Any], root: dict[str, Any], refs: tuple[str, ...],
            enum_names: bool = True) -> dict[str, Any]:
    ref = node.get("$ref")
    if isinstance(ref, str):
        if ref in refs or not ref.startswith("#/"):
            raise UnsupportedSchema(f"recursive or external reference {ref}")
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part) if isinstance(target, dict) else None
        if not isinstance(target, dict):
            raise UnsupportedSchema(f"unresolvable reference {ref}")
        return _inline(target, root, (*refs, ref), enum_names)
    if any(key in node for key in ("anyOf", "oneOf", "allOf")):
        raise UnsupportedSchema("a union type")
    if "const" in node:
        return {"enum": [node["const"]]}
    if isinstance(node.get("enum"), list):
        values = list(node["enum"])
        names = member_names(node) if enum_names else None
        # A student writes a Jac enum by its member names (the names carry the meaning the
        # base model already knows: "URGENT", not 4); the answer keeps the values.
        return {"enum": names, "values": values} if names else {"enum": values}
    kind = node.get("type")
    if kind == "object":
        props = node.get("properties")
        if not isinstance(props, dict) or not props:
            raise UnsupportedSchema("an object without declared properties")
        if set(node.get("required", [])) != set(props):
            raise UnsupportedSchema("an object with optional properties")
        return {"type": "object",
                "properties": {k: _inline(v, root, refs, enum_names) for k, v in props.items()}}
    if kind == "array":
        items = node.get("items")
        if not isinstance(items, dict):
            raise UnsupportedSchema("an array without an item schema")
        out = {"type": "array", "items": _inline(items, root, refs, enum_names)}
        out.update({k: node[k] for k in ("minItems", "maxItems") if k in node})
        return out
    if kind in SCALARS:
        return {"type": kind, **{k: node[k] for k in ("minimum", "maximum", "maxLength")
                                 if k in node}}
    raise UnsupportedSchema(f"type {kind!r}")


def field_order(node: dict[str, Any]) -> list[str]:
    """The order a tuple lists an object's fields: fixed-size fields, then arrays, each
    in schema order."""
    props = node["properties"]
    return ([k for k, sub in props.items() if sub.get("type") != "array"]
            + [k for k, sub in props.items() if sub.get("type") == "array"])


def walk_schema(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every (path, node) of an inlined schema; array items are the part `*`."""
    out = [(path, node)]
    if node.get("type") == "object":
        for key, sub in node["properties"].items():
            out += walk_schema(sub, join_path(path, key))
    elif node.get("type") == "array":
        out += walk_schema(node["items"], join_path(path, "*"))
    return out


def values_at(value: Any, path: str) -> list[Any]:
    """The values found at `path` in a JSON value (`*` fans out over list items)."""
    found = [value]
    for part in path.split("/") if path else []:
        nxt = []
        for item in found:
            if part == "*" and isinstance(item, list):
                nxt.extend(item)
            elif isinstance(item, dict) and part in item:
                nxt.append(item[part])
        found = nxt
    return found


def arg_value(args: dict[str, Any], path: str) -> Any:
    """The argument at a `/`-separated path of object keys, or None."""
    return get_path(args, path)


ENUM_NAMES = re.compile(r"names are \[([^\]]*)\]")


def member_names(node: dict[str, Any]) -> list[str] | None:
    """The member names of an enum node, from the description byLLM writes for a Jac enum
    ("... one in this list: [1, 2] where the names are [LOW, HIGH]"); None unless there
    is one distinct name per value."""
    match = ENUM_NAMES.search(str(node.get("description") or ""))
    if not match:
        return None
    names = [n.strip().strip("'\"") for n in match.group(1).split(",")]
    if len(names) != len(node["enum"]) or len(set(names)) != len(names) or not all(names):
        return None
    return names


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def objects_by_path(value: Any, path: str = "", out: dict[str, list[Any]] | None = None
                  ) -> dict[str, list[Any]]:
    """Every object in `value` by path (`*` for list items), e.g. for key-set mining."""
    out = {} if out is None else out
    if isinstance(value, dict):
        out.setdefault(path, []).append(value)
        for key, item in value.items():
            objects_by_path(item, join_path(path, key), out)
    elif isinstance(value, list):
        for item in value:
            objects_by_path(item, join_path(path, "*"), out)
    return out


def arg_leaves(args: dict[str, Any], path: str = "") -> dict[str, Any]:
    """Values reachable through object keys only (no list items), by path."""
    out: dict[str, Any] = {}
    for key, value in args.items():
        here = join_path(path, key)
        out[here] = value
        if isinstance(value, dict):
            out.update(arg_leaves(value, here))
    return out
