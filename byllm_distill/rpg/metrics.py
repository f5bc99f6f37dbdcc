"""Distances between Maps, on their ASCII grids (render.to_ascii).

`hamming(a, b)`: tiles that differ between two same-size maps, None when sizes differ.
`diversity(maps)`: the fraction of distinct grids, and the mean Hamming distance over all
same-size pairs. Values that are not Maps are left out of both.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from byllm_distill.rpg.render import to_ascii


def hamming(a: Any, b: Any) -> int | None:
    grid_a, grid_b = to_ascii(a), to_ascii(b)
    if len(grid_a) != len(grid_b) or grid_a.index("\n") != grid_b.index("\n"):
        return None
    return sum(x != y for x, y in zip(grid_a, grid_b, strict=True))


def _grid_or_none(map: Any) -> str | None:
    try:
        return to_ascii(map)
    except ValueError:
        return None


def diversity(maps: list[Any]) -> dict:
    """{"unique_fraction", "mean_pairwise_hamming" (None without a same-size pair), "pairs"}.

    The mean is exact but not computed pair by pair: per size and per tile position, the
    pairs that differ there are all pairs minus those sharing a character, which costs
    O(maps x tiles) instead of O(maps^2 x tiles) for corpora of thousands of maps.
    """
    grids = [g for g in map(_grid_or_none, maps) if g is not None]
    by_size: dict[tuple[int, int], list[str]] = {}
    for grid in grids:
        rows = grid.split("\n")
        by_size.setdefault((len(rows[0]), len(rows)), []).append(grid)
    pairs = differing = 0
    for group in by_size.values():
        n = len(group)
        group_pairs = n * (n - 1) // 2
        pairs += group_pairs
        for column in zip(*group, strict=True):
            same = sum(k * (k - 1) // 2 for k in Counter(column).values())
            differing += group_pairs - same
    return {
        "unique_fraction": len(set(grids)) / len(grids) if grids else 0.0,
        "mean_pairwise_hamming": differing / pairs if pairs else None,
        "pairs": pairs,
    }
