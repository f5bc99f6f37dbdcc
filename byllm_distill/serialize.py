"""Turn call arguments, outputs and messages into plain JSON values.

Jac `obj`s are dataclasses and enums are stored by value (byLLM parses enums from their
values). A value with no faithful JSON form raises `SerializationError`: capture drops
that record and counts it, rather than storing a lossy `repr`.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from typing import Any

from byllm_distill.errors import SerializationError

_SCALARS = (str, int, bool, type(None))


def to_jsonable(value: Any, _seen: frozenset[int] = frozenset()) -> Any:
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SerializationError(f"float {value!r} has no JSON form")
        return value
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value, _seen)
    if id(value) in _seen:
        raise SerializationError(f"cycle through {type(value).__name__}")
    seen = _seen | {id(value)}
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str | int):
                raise SerializationError(f"dict key {key!r} is not a string")
            out[str(key)] = to_jsonable(item, seen)
        return out
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
        return [to_jsonable(item, seen) for item in items]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name), seen)
                for f in dataclasses.fields(value) if not f.name.startswith("_")}
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        try:
            return to_jsonable(dump(mode="json"), seen)
        except TypeError:
            return to_jsonable(dump(), seen)
    raise SerializationError(f"{type(value).__module__}.{type(value).__qualname__} "
                             "has no JSON form")


def dumps_canonical(value: Any) -> str:
    """Canonical JSON text (sorted keys, no spaces): the basis of content hashes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
