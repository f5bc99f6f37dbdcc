"""Turn call arguments, outputs and messages into plain JSON values.

Jac `obj`s are dataclasses and enums are stored by value (byLLM parses enums from their
values). A value with no faithful JSON form raises `SerializationError`: capture drops
that record and counts it, rather than storing a lossy `repr`.

`snapshot(value)` is what capture keeps of a value on the caller's thread, so that the
record shows it as it was at the call even if the program changes it right after: an
immutable value (a scalar, an enum, a tuple or frozenset of immutable values) is kept as
is, to be serialised later on the writer thread; anything else (lists, dicts, objects, a
method's `self`) is serialised at once. `to_jsonable(snapshot(v)) == to_jsonable(v)`.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from typing import Any

from byllm_distill.errors import SerializationError

_SCALARS = (str, int, bool, type(None))
_IMMUTABLE = (*_SCALARS, float, enum.Enum)
# Exactly these types (not subclasses) are their own JSON form: the fast path's test.
_PLAIN = frozenset(_SCALARS)
# The public fields of each dataclass type (a type's fields never change).
_FIELDS: dict[type, tuple[str, ...]] = {}


def to_jsonable(value: Any) -> Any:
    return _jsonable(value, set())


def _jsonable(value: Any, seen: set[int]) -> Any:
    kind = type(value)
    if kind in _PLAIN:
        return value
    names = _FIELDS.get(kind)
    if names is not None:  # a dataclass type met before (never a dict, list or scalar)
        key = id(value)
        if key in seen:
            raise SerializationError(f"cycle through {kind.__name__}")
        seen.add(key)
        try:
            # A plain field is its own JSON form: no call for it (most fields are).
            return {name: item if type(item := getattr(value, name)) in _PLAIN
                    else _jsonable(item, seen) for name in names}
        finally:
            seen.discard(key)
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SerializationError(f"float {value!r} has no JSON form")
        return value
    if isinstance(value, enum.Enum):
        return _jsonable(value.value, seen)
    key = id(value)
    if key in seen:
        raise SerializationError(f"cycle through {type(value).__name__}")
    seen.add(key)
    try:
        return _container(value, seen)
    finally:
        seen.discard(key)


def _container(value: Any, seen: set[int]) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str | int):
                raise SerializationError(f"dict key {key!r} is not a string")
            out[str(key)] = item if type(item) in _PLAIN else _jsonable(item, seen)
        return out
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
        return [item if type(item) in _PLAIN else _jsonable(item, seen) for item in items]
    kind = type(value)
    names = _FIELDS.get(kind)
    if names is None and dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = _FIELDS[kind] = tuple(f.name for f in dataclasses.fields(value)
                                      if not f.name.startswith("_"))
    if names is not None:
        return {name: _jsonable(getattr(value, name), seen) for name in names}
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        try:
            return _jsonable(dump(mode="json"), seen)
        except TypeError:
            return _jsonable(dump(), seen)
    raise SerializationError(f"{type(value).__module__}.{type(value).__qualname__} "
                             "has no JSON form")


def immutable(value: Any) -> bool:
    """Whether `value` cannot change after the call (so serialising it may wait)."""
    if isinstance(value, _IMMUTABLE):
        return True
    if isinstance(value, tuple | frozenset):
        return all(immutable(item) for item in value)
    return False


def snapshot(value: Any) -> Any:
    """`value` if it is immutable, else its JSON form now (see the module docstring)."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind in _FIELDS:  # a dataclass type met before: serialised now, as `immutable` says
        return _jsonable(value, set())
    return value if immutable(value) else to_jsonable(value)


def dumps_canonical(value: Any) -> str:
    """Canonical JSON text (sorted keys, no spaces): the basis of content hashes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
