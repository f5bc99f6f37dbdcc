"""Agreement between two JSON answers to the same input: the fraction of leaf values
(by path) that are equal, over the union of both answers' leaf paths. 1.0 means
identical; for a `str` answer it is 1.0 or 0.0 (exact match after trimming)."""

from __future__ import annotations

from typing import Any


def leaves(value: Any, path: str = "") -> dict[str, Any]:
    """Every scalar (and empty container) of a JSON value by its `/`-joined path."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(leaves(item, f"{path}/{key}"))
        return out or {path: {}}
    if isinstance(value, list):
        out = {}
        for index, item in enumerate(value):
            out.update(leaves(item, f"{path}/{index}"))
        return out or {path: []}
    return {path: value.strip() if isinstance(value, str) else value}


def agreement(a: Any, b: Any) -> float:
    left, right = leaves(a), leaves(b)
    paths = left.keys() | right.keys()
    if not paths:
        return 1.0
    same = sum(1 for p in paths if p in left and p in right and left[p] == right[p])
    return same / len(paths)
