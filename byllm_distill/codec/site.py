"""A site's codec: the compact text a student reads and writes, and the way back.

Contract. `SiteCodec.mine(site, args, outputs, response_format)` learns a codec from the
training records of one call site (arguments and teacher outputs, never held-out ones);
`to_dict()` / `from_dict()` store it in a version's manifest, so serving uses exactly the
codec training used.

- Prompt (`prompt(args)`): the arguments as JSON with the keys of fixed-shape objects
  dropped. Where every training record has the same key set at a place in the arguments
  (for example a Jac `obj`), the object is written as the list of its values in sorted-key
  order; anything else stays a canonical JSON object, so an unexpected shape is still
  readable. Key names never change for a site, so the student learns them instead of
  reading them; the site key is not written either (one student serves one site).
- Target, three modes. `text` for `str` sites: the answer as is. `tuple` when the output
  schema is made of fixed-shape objects (every property required), arrays and scalars:
  objects are written as lists of their values in schema order, and a top-level field
  that equalled an argument in every training record (a `Map` that repeats its input
  `level`) is left out and copied back from the arguments on decode. Fields of a fixed
  size come before arrays (`field_order`), so a left-to-right writer places the one-off
  things (a `Map`'s spawn) before the many (its enemies, which must keep away from the
  spawn). `json` for any other
  schema (unions, optional fields, free-form objects): compact JSON in grammar key order.
- Constraints (tuple mode), for the per-call grammar in `grammar.py`. Mined from the
  training outputs where at least `MIN_EVIDENCE` records agree: an array whose length
  tracked an integer argument (`len(enemies) == level.num_enemies`, or within a small band)
  gets that length from the live call's argument; an integer whose values never exceeded
  an integer argument (`x <= level.width`) gets that bound. Every other array and string
  gets a length limit from the longest seen, and integers the range rules of `schema.py`,
  so generation always terminates.

`decode(text, args)` turns a student's text back into the site's JSON answer (keys in
schema order), or raises `ValueError` when the text does not have the codec's shape.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from byllm_distill.codec.inputs import InputPolicy
from byllm_distill.codec.paths import (
    UnsupportedSchema,
    arg_leaves,
    arg_value,
    field_order,
    inline_schema,
    is_int,
    join_path,
    objects_by_path,
    values_at,
    walk_schema,
)
from byllm_distill.codec.schema import (
    DEFAULT_MAX_ITEMS,
    DEFAULT_MAX_LENGTH,
    bounded_schema,
    collect_stats,
    response_schema,
    target_text,
)
from byllm_distill.serialize import dumps_canonical

CODEC_VERSION = 4
# Versions this code reads: 3 added enum names, 4 the input policy (an older codec has
# neither, so reads the same: every input whole, no budget).
READABLE_VERSIONS = (2, 3, 4)
# Fewer records than this cannot establish a pattern; constraints are left out.
MIN_EVIDENCE = 5
# An array length may follow an argument within a band this wide (e.g. walls ±1).
MAX_LENGTH_BAND = 2


@dataclass
class SiteCodec:
    mode: str  # "tuple", "json" or "text"
    arg_tuples: dict[str, list[str]] = field(default_factory=dict)
    schema: dict[str, Any] | None = None  # tuple: inlined; json: the bounded schema
    copies: dict[str, str] = field(default_factory=dict)
    lengths: dict[str, dict[str, Any]] = field(default_factory=dict)
    ints: dict[str, dict[str, Any]] = field(default_factory=dict)
    max_items: dict[str, int] = field(default_factory=dict)
    max_length: dict[str, int] = field(default_factory=dict)
    inputs: InputPolicy = field(default_factory=InputPolicy)
    version: int = CODEC_VERSION

    # Prompt ------------------------------------------------------------------------------

    def prompt(self, args: dict[str, Any]) -> str:
        """The student's prompt for `args` under the input policy's drops and cuts (the
        budget needs a token counter: `fit_prompt`)."""
        return dumps_canonical(self._encode_args(self.inputs.apply(args), ""))

    def fit_prompt(self, args: dict[str, Any], count: Any) -> tuple[str, str]:
        """(prompt, what the budget did: "kept" | "compacted" | "over"); `count(text)` is
        the tokens of the whole student prompt around a compact prompt `text`."""
        shown, action = self.inputs.fit(
            args, lambda a: count(dumps_canonical(self._encode_args(a, ""))))
        return dumps_canonical(self._encode_args(shown, "")), action

    def _encode_args(self, value: Any, path: str) -> Any:
        if isinstance(value, dict):
            keys = self.arg_tuples.get(path)
            if keys is not None and sorted(value) == keys:
                return [self._encode_args(value[k], join_path(path, k)) for k in keys]
            return {k: self._encode_args(v, join_path(path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self._encode_args(v, join_path(path, "*")) for v in value]
        return value

    # Target ------------------------------------------------------------------------------

    def encode(self, output: Any) -> str:
        """The training target for one teacher output."""
        if self.mode == "text":
            return output if isinstance(output, str) else json.dumps(output, ensure_ascii=False)
        if self.mode == "json":
            return target_text(output, self.schema)
        return json.dumps(self._encode(output, self.schema, ""), separators=(",", ":"),
                          ensure_ascii=False)

    def _encode(self, value: Any, node: dict[str, Any], path: str) -> Any:
        if node.get("type") == "object":
            return [self._encode(value[k], node["properties"][k], join_path(path, k))
                    for k in field_order(node) if path or k not in self.copies]
        if node.get("type") == "array":
            return [self._encode(v, node["items"], join_path(path, "*")) for v in value]
        if "values" in node:
            return node["enum"][node["values"].index(value)]
        return value

    def decode(self, text: str, args: dict[str, Any]) -> Any:
        """The site's answer (JSON value) from a student's text; `ValueError` if malformed."""
        if self.mode == "text":
            return text
        value = json.loads(text)
        if self.mode == "json":
            return value
        try:
            return self._decode(value, self.schema, "", args)
        except (TypeError, IndexError, KeyError) as exc:
            raise ValueError(f"the student's answer does not fit the site's shape: {exc}") \
                from exc

    def decode_prefix(self, value: list[Any], args: dict[str, Any]) -> Any:
        """The answer from the first values of a tuple answer, its arrays cut short: array
        fields not begun yet are empty. `ValueError` when a missing field is not an array or
        a value does not fit (tuple mode, object or array answers only)."""
        schema = self.schema or {}
        if self.mode != "tuple" or not isinstance(value, list):
            raise ValueError("only tuple answers have prefixes")
        if schema.get("type") == "object":
            own = [k for k in field_order(schema) if k not in self.copies]
            missing = own[len(value):]
            if any(schema["properties"][k].get("type") != "array" for k in missing):
                raise ValueError(f"{missing[0]} is not written yet")
            value = [*value, *([] for _ in missing)]
        elif schema.get("type") != "array":
            raise ValueError("a scalar answer has no prefix")
        try:
            return self._decode(value, schema, "", args)
        except (TypeError, IndexError, KeyError) as exc:
            raise ValueError(f"the answer so far does not fit the site's shape: {exc}") \
                from exc

    def _decode(self, value: Any, node: dict[str, Any], path: str, args: dict[str, Any]) -> Any:
        if node.get("type") == "object":
            props = node["properties"]
            own = [k for k in field_order(node) if path or k not in self.copies]
            if not isinstance(value, list) or len(value) != len(own):
                raise TypeError(f"{path or 'the answer'} needs {len(own)} values")
            given = dict(zip(own, value, strict=True))
            return {k: (self._decode(given[k], sub, join_path(path, k), args) if k in given
                        else arg_value(args, self.copies[k]))
                    for k, sub in props.items()}
        if node.get("type") == "array":
            if not isinstance(value, list):
                raise TypeError(f"{path} needs a list")
            return [self._decode(v, node["items"], join_path(path, "*"), args) for v in value]
        if "values" in node:
            if value not in node["enum"]:
                raise KeyError(f"{path or 'the answer'}: {value!r} is not one of {node['enum']}")
            return node["values"][node["enum"].index(value)]
        return value

    # Per-call limits (tuple mode) --------------------------------------------------------

    def length_range(self, path: str, args: dict[str, Any]) -> tuple[int, int]:
        """(min, max) items of the array at `path` for a call with `args`."""
        link = self.lengths.get(path)
        if link is not None:
            base = arg_value(args, link["arg"])
            if is_int(base):
                return max(0, base + link["min"]), max(0, base + link["max"])
        return 0, self.max_items.get(path, DEFAULT_MAX_ITEMS)

    def int_range(self, path: str, args: dict[str, Any]) -> tuple[int | None, int | None]:
        """(min, max) of the integer at `path` for a call with `args`; None is unbounded."""
        rule = self.ints.get(path)
        if rule is None:
            return None, None
        high = rule.get("max")
        if "arg" in rule:
            base = arg_value(args, rule["arg"])
            high = base + rule["offset"] if is_int(base) else rule.get("fallback_max")
        low = rule.get("min")
        if low is not None and high is not None and high < low:
            high = low
        return low, high

    def linked_args(self) -> set[str]:
        """The argument paths answers are tied to: copied from, or bounding a length or an
        integer (an input policy must never take these away)."""
        return ({*self.copies.values()} | {link["arg"] for link in self.lengths.values()}
                | {rule["arg"] for rule in self.ints.values() if "arg" in rule})

    # Storage -----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "mode": self.mode, "arg_tuples": self.arg_tuples,
                "schema": self.schema, "copies": self.copies, "lengths": self.lengths,
                "ints": self.ints, "max_items": self.max_items, "max_length": self.max_length,
                "inputs": self.inputs.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SiteCodec:
        found = data.get("version") if isinstance(data, dict) else None
        if found not in READABLE_VERSIONS:
            raise ValueError(f"codec version {found} is not one of {READABLE_VERSIONS}")
        return cls(mode=data["mode"], arg_tuples=data["arg_tuples"], schema=data["schema"],
                   copies=data["copies"], lengths=data["lengths"], ints=data["ints"],
                   max_items={k: int(v) for k, v in data["max_items"].items()},
                   max_length={k: int(v) for k, v in data["max_length"].items()},
                   inputs=InputPolicy.from_dict(data.get("inputs")))

    # Mining ------------------------------------------------------------------------------

    @classmethod
    def mine(cls, args: list[dict[str, Any]], outputs: list[Any],
             response_format: dict[str, Any] | None, enum_names: bool = True) -> SiteCodec:
        """The codec of a site from its training records' arguments and outputs.
        `enum_names=False` writes Jac enums by value, as byLLM's schema does."""
        arg_tuples = _mine_arg_tuples(args)
        schema = response_schema(response_format)
        if schema is None and all(isinstance(o, str) for o in outputs):
            return cls("text", arg_tuples)
        if schema is None:
            return cls("json", arg_tuples)
        try:
            inlined = inline_schema(schema, enum_names)
        except UnsupportedSchema:
            stats: dict[str, dict[str, Any]] = {}
            for output in outputs:
                collect_stats(output, schema, stats)
            return cls("json", arg_tuples, schema=bounded_schema(schema, stats))
        codec = cls("tuple", arg_tuples, schema=inlined)
        codec._mine_constraints(args, outputs)
        return codec

    def _mine_constraints(self, args: list[dict[str, Any]], outputs: list[Any]) -> None:
        schema = self.schema or {}
        leaves = [arg_leaves(a) for a in args]
        enough = len(outputs) >= MIN_EVIDENCE
        if enough and schema.get("type") == "object":
            for key in schema["properties"]:
                source = _copied_from(key, [o.get(key) for o in outputs], leaves)
                if source is not None:
                    self.copies[key] = source
        int_args = sorted(p for p in (set.intersection(*(set(lv) for lv in leaves))
                                      if leaves else set())
                          if all(is_int(lv[p]) for lv in leaves))
        for path, node in walk_schema(schema):
            top = path.split("/", 1)[0]
            if top in self.copies:
                continue
            per_record = [values_at(o, path) for o in outputs]
            kind = node.get("type")
            if kind == "array":
                lengths = [len(v) for found in per_record for v in found if isinstance(v, list)]
                longest = max(lengths, default=None)
                self.max_items[path] = int(node.get("maxItems") or (
                    DEFAULT_MAX_ITEMS if longest is None
                    else max(longest + 2, math.ceil(longest * 1.5))))
                if enough and "*" not in path:
                    link = _length_link([len(f[0]) if f else None for f in per_record],
                                        leaves, int_args)
                    if link is not None:
                        self.lengths[path] = link
            elif kind == "string":
                longest = max((len(v) for found in per_record for v in found
                               if isinstance(v, str)), default=None)
                self.max_length[path] = int(node.get("maxLength") or (
                    DEFAULT_MAX_LENGTH if longest is None else max(2 * longest, 16)))
            elif kind == "integer":
                self.ints[path] = _int_rule(node, per_record, leaves, int_args, enough)


def _mine_arg_tuples(args: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Places in the arguments where every record has objects of one key set."""
    seen: dict[str, set[tuple[str, ...]]] = {}
    for a in args:
        for path, objects in objects_by_path(a).items():
            seen.setdefault(path, set()).update(tuple(sorted(o)) for o in objects)
    return {path: list(next(iter(keys))) for path, keys in sorted(seen.items())
            if len(keys) == 1 and next(iter(keys))}


def _copied_from(key: str, values: list[Any], leaves: list[dict[str, Any]]) -> str | None:
    """The argument path whose value equalled output[`key`] in every record, if any."""
    common = set.intersection(*(set(lv) for lv in leaves)) if leaves else set()
    matches = sorted(p for p in common
                     if all(lv[p] == v for lv, v in zip(leaves, values, strict=True)))
    if not matches:
        return None
    named = [p for p in matches if p.split("/")[-1] == key]
    return (named or matches)[0]


def _length_link(lengths: list[int | None], leaves: list[dict[str, Any]],
                 int_args: list[str]) -> dict[str, Any] | None:
    """The integer argument an array's length followed most tightly, within the band."""
    if any(n is None for n in lengths):
        return None
    best: tuple[int, int, str] | None = None
    for path in int_args:
        diffs = [n - lv[path] for n, lv in zip(lengths, leaves, strict=True)]
        low, high = min(diffs), max(diffs)
        if high - low <= MAX_LENGTH_BAND:
            score = (high - low, abs(low) + abs(high), path)
            best = score if best is None or score < best else best
    if best is None:
        return None
    diffs = [n - lv[best[2]] for n, lv in zip(lengths, leaves, strict=True)]
    return {"arg": best[2], "min": min(diffs), "max": max(diffs)}


def _int_rule(node: dict[str, Any], per_record: list[list[Any]], leaves: list[dict[str, Any]],
              int_args: list[str], enough: bool) -> dict[str, Any]:
    """Bounds of one integer place: a declared range wins, then an argument it never
    exceeded (tightest first), then the range rules of schema.py."""
    values = [v for found in per_record for v in found if is_int(v)]
    rule: dict[str, Any] = {}
    if values:
        low, high = min(values), max(values)
        rule["min"] = (low if enough and low >= 0 else 0 if low >= 0 else 2 * low)
        rule["max"] = max(2 * high, 10)
    if enough and values:
        best: tuple[float, str, int] | None = None
        for path in int_args:
            slack = [lv[path] - max(v for v in found if is_int(v))
                     for found, lv in zip(per_record, leaves, strict=True)
                     if any(is_int(v) for v in found)]
            if len(slack) >= MIN_EVIDENCE and min(slack) >= 0:
                score = (sum(slack) / len(slack), path, min(slack))
                best = score if best is None or score < best else best
        if best is not None:
            rule.update(arg=best[1], offset=-best[2], fallback_max=rule.pop("max"))
    if "minimum" in node:
        rule["min"] = node["minimum"]
    if "maximum" in node:
        rule = {"min": rule.get("min"), "max": node["maximum"]}
    return rule
