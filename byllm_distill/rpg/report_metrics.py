"""Task metrics for the RPG showcase: `*create_next_map` and `*create_next_level`.

Maps (`rpg_map`), each for teacher and student over the same inputs:
- `adherence`: `reachability_rate` (the `reachable` check passes: every floor tile and
  enemy reachable from the player), `enemy_count_adherence` (exactly the requested
  `num_enemies`), `wall_count_adherence` (within `wall_tolerance` of the requested
  `num_wall`), and the mean absolute count errors. "Requested" is the call's `level`
  argument. Every answer is in the denominator; one that is not a Map fails all.
- `patterns`: the distributions of 2x2 tile windows over the ASCII grids (border
  included), smoothed by adding `SMOOTHING` to every pattern seen in either set, and the
  KL divergence in nats both ways. Identical sets give 0.
- `diversity`: unique-map fraction and mean pairwise Hamming distance (rpg/metrics.py).
- `memorisation`: per map, the Hamming distance to the nearest training map of the same
  size; `exact_copies` counts distance 0. Teacher maps are measured too, as the baseline.

Gate criteria (fidelity distances the promotion gate and rollback judge against the
teacher's split-half baseline, see gate/fidelity.py): `rpg_patterns`, KL(reference ||
candidate) of the smoothed 2x2 pattern distributions; `rpg_diversity`, how much lower the
candidate's mean pairwise Hamming distance is than the reference's, as a fraction of it
(0 when it is as diverse or more). Their margins are `PATTERN_MARGIN` and
`DIVERSITY_MARGIN` unless `margins` in jac.toml overrides them.

Levels (`rpg_level`): `difficulty_progression`, the fraction of sequences (the call's
`last_levels` followed by the answer, for calls with at least one previous level) whose
difficulty never decreases, likewise `enemies_non_decreasing`, and
`difficulty_match_rate` (answer's difficulty equals the requested one).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from byllm_distill.evaluation.pairing import EvalData
from byllm_distill.gate.fidelity import Rows, SetDistance, count_rows
from byllm_distill.rpg.checks import check_map, wall_tolerance
from byllm_distill.rpg.metrics import diversity
from byllm_distill.rpg.render import to_ascii, to_png
from byllm_distill.store.record import Record
from byllm_distill.task_metrics import MetricRegistry, TaskMetric

MAP_SITES = "*create_next_map"
LEVEL_SITES = "*create_next_level"
SMOOTHING = 0.5
TOP_PATTERNS = 16
PATTERN_MARGIN = 0.05
DIVERSITY_MARGIN = 0.15
MAP_LEGEND = ("Blue disc: the player's spawn. Red discs: enemies. Dark squares: the border "
              "and walls. Grey squares: small obstacles. Sand: floor.")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _grid(output: Any) -> str | None:
    try:
        return to_ascii(output)
    except ValueError:
        return None


def _requested(record: Record, key: str) -> int | None:
    """The count the call asked for; the answer's own level only if the call has none."""
    answered = record.output.get("level") if isinstance(record.output, dict) else None
    for level in ((record.args or {}).get("level"), answered):
        if isinstance(level, dict) and _is_int(level.get(key)):
            return level[key]
    return None


def adherence(records: Sequence[Record]) -> dict[str, Any]:
    n = len(records)
    reachable = enemies_ok = walls_ok = 0
    enemy_err, wall_err = [], []
    for record in records:
        verdicts = {v.name: v.passed for v in check_map(record.output)}
        if not verdicts.get("map_parses"):
            continue
        reachable += int(verdicts.get("reachable", False))
        want_e, want_w = _requested(record, "num_enemies"), _requested(record, "num_wall")
        got_e, got_w = len(record.output["enemies"]), len(record.output["walls"])
        if want_e is not None:
            enemies_ok += int(got_e == want_e)
            enemy_err.append(abs(got_e - want_e))
        if want_w is not None:
            walls_ok += int(abs(got_w - want_w) <= wall_tolerance(want_w))
            wall_err.append(abs(got_w - want_w))
    return {
        "n": n,
        "reachability_rate": reachable / n if n else None,
        "enemy_count_adherence": enemies_ok / n if n else None,
        "wall_count_adherence": walls_ok / n if n else None,
        "enemy_count_mae": sum(enemy_err) / len(enemy_err) if enemy_err else None,
        "wall_count_mae": sum(wall_err) / len(wall_err) if wall_err else None,
    }


def patterns_2x2(grids: Sequence[str]) -> Counter[str]:
    """Counts of 2x2 windows, written "ab/cd" (top row / bottom row)."""
    counts: Counter[str] = Counter()
    for grid in grids:
        rows = grid.split("\n")
        for top, bottom in zip(rows, rows[1:], strict=False):
            counts.update(f"{top[x:x + 2]}/{bottom[x:x + 2]}" for x in range(len(top) - 1))
    return counts


def smoothed(counts: Counter[str], support: Sequence[str]) -> dict[str, float]:
    total = sum(counts[k] for k in support) + SMOOTHING * len(support)
    return {k: (counts[k] + SMOOTHING) / total for k in support}


def kl(p: dict[str, float], q: dict[str, float]) -> float:
    """KL(p || q) in nats over p's keys (q must cover them, as smoothing guarantees)."""
    return sum(pk * math.log(pk / q[k]) for k, pk in p.items() if pk > 0)


def pattern_distance(teacher_maps: Sequence[Any], student_maps: Sequence[Any]) -> dict[str, Any]:
    t_counts = patterns_2x2([g for g in map(_grid, teacher_maps) if g])
    s_counts = patterns_2x2([g for g in map(_grid, student_maps) if g])
    support = sorted(set(t_counts) | set(s_counts))
    if not support:
        return {"kl_teacher_student": None, "kl_student_teacher": None, "patterns": 0,
                "smoothing": SMOOTHING, "top": []}
    p, q = smoothed(t_counts, support), smoothed(s_counts, support)
    top = sorted(support, key=lambda k: -(p[k] + q[k]))[:TOP_PATTERNS]
    return {
        "kl_teacher_student": kl(p, q),
        "kl_student_teacher": kl(q, p),
        "patterns": len(support),
        "smoothing": SMOOTHING,
        "top": [{"pattern": k, "teacher": p[k], "student": q[k]} for k in top],
    }


def memorisation(maps: Sequence[Any], training_maps: Sequence[Any]) -> dict[str, Any]:
    """Nearest-training-map Hamming distances, vectorised per grid size with numpy."""
    by_size: dict[tuple[int, int], list[bytes]] = {}
    for grid in filter(None, map(_grid, training_maps)):
        rows = grid.split("\n")
        by_size.setdefault((len(rows[0]), len(rows)), []).append(grid.encode())
    matrices = {size: np.frombuffer(b"".join(gs), dtype=np.uint8).reshape(len(gs), -1)
                for size, gs in by_size.items()}
    distances: list[int] = []
    tiles: list[int] = []
    for grid in filter(None, map(_grid, maps)):
        rows = grid.split("\n")
        size = (len(rows[0]), len(rows))
        if size not in matrices:
            continue
        row = np.frombuffer(grid.encode(), dtype=np.uint8)
        distances.append(int((matrices[size] != row).sum(axis=1).min()))
        tiles.append((size[0] - 2) * (size[1] - 2))
    return {
        "n": len(maps),
        "training_maps": sum(len(gs) for gs in by_size.values()),
        "compared": len(distances),
        "exact_copies": sum(d == 0 for d in distances),
        "mean_nearest_distance": sum(distances) / len(distances) if distances else None,
        "min_nearest_distance": min(distances) if distances else None,
        "mean_nearest_fraction": (sum(d / t for d, t in zip(distances, tiles, strict=True))
                                  / len(distances)) if distances else None,
        "distances": distances,
    }


def map_metrics(data: EvalData) -> dict[str, Any]:
    teacher = [r.output for r in data.teacher]
    student = [r.output for r in data.student]
    training = [r.output for r in data.training]
    return {
        "adherence": {"teacher": adherence(data.teacher), "student": adherence(data.student)},
        "patterns": pattern_distance(teacher, student),
        "diversity": {"teacher": diversity(teacher), "student": diversity(student)},
        "memorisation": {"teacher": memorisation(teacher, training),
                         "student": memorisation(student, training)},
    }


def _progression(records: Sequence[Record], key: str) -> dict[str, Any]:
    sequences = ok = 0
    for record in records:
        last = (record.args or {}).get("last_levels")
        levels = [lv for lv in last if isinstance(lv, dict)] if isinstance(last, list) else []
        previous = [lv[key] for lv in levels if _is_int(lv.get(key))]
        if not previous:
            continue
        sequences += 1
        value = record.output.get(key) if isinstance(record.output, dict) else None
        if _is_int(value):
            seq = [*previous, value]
            ok += int(all(a <= b for a, b in zip(seq, seq[1:], strict=False)))
    return {"sequences": sequences, "rate": ok / sequences if sequences else None}


def _difficulty_match(records: Sequence[Record]) -> float | None:
    hits = [isinstance(r.output, dict)
            and r.output.get("difficulty") == (r.args or {}).get("difficulty") for r in records]
    return sum(hits) / len(hits) if hits else None


def level_metrics(data: EvalData) -> dict[str, Any]:
    return {
        side: {
            "difficulty_progression": _progression(records, "difficulty"),
            "enemies_non_decreasing": _progression(records, "num_enemies"),
            "difficulty_match_rate": _difficulty_match(records),
        }
        for side, records in (("teacher", data.teacher), ("student", data.student))
    }


def plot_maps(result: dict[str, Any], out_dir: Path) -> list[Path]:
    from byllm_distill.evaluation import plots

    paths = []
    top = result["patterns"]["top"]
    if top:
        kl_ts = result["patterns"]["kl_teacher_student"]
        paths.append(plots.grouped_bars(
            out_dir / "rpg_patterns.png", [t["pattern"] for t in top],
            {"teacher": [t["teacher"] for t in top], "student": [t["student"] for t in top]},
            f"Most common 2x2 tile patterns (KL teacher||student = {kl_ts:.3f})",
            "share of 2x2 windows"))
    adh = result["adherence"]
    names = ["reachability_rate", "enemy_count_adherence", "wall_count_adherence"]
    paths.append(plots.grouped_bars(
        out_dir / "rpg_adherence.png", [n.replace("_", " ") for n in names],
        {side: [adh[side][n] or 0.0 for n in names] for side in ("teacher", "student")},
        "Map constraints met", "fraction of maps", ylim=(0, 1.2)))
    mem = result["memorisation"]
    if any(mem[side]["distances"] for side in ("teacher", "student")):
        paths.append(plots.histograms(
            out_dir / "rpg_memorisation.png",
            {side: mem[side]["distances"] for side in ("teacher", "student")},
            "Distance to the nearest training map (0 = exact copy)", "Hamming distance (tiles)",
            low=0))
    div = result["diversity"]
    paths.append(plots.grouped_bars(
        out_dir / "rpg_diversity.png", ["unique maps (%)", "mean pairwise Hamming"],
        {side: [100 * div[side]["unique_fraction"], div[side]["mean_pairwise_hamming"] or 0.0]
         for side in ("teacher", "student")}, "Diversity", "percent | tiles"))
    return paths


def plot_levels(result: dict[str, Any], out_dir: Path) -> list[Path]:
    from byllm_distill.evaluation import plots

    names = ["difficulty_progression", "enemies_non_decreasing"]
    return [plots.grouped_bars(
        out_dir / "rpg_progression.png", [n.replace("_", " ") for n in names],
        {side: [result[side][n]["rate"] or 0.0 for n in names] for side in ("teacher", "student")},
        "Sequences that never get easier", "fraction of sequences", ylim=(0, 1.2))]


def _pattern_prepare(outputs: Sequence[Any]) -> tuple[np.ndarray, list[bool]]:
    """One row of 2x2-pattern counts per map (zeros for an answer that is not a map)."""
    grids = [_grid(o) for o in outputs]
    rows, _ = count_rows([patterns_2x2([g]) if g else Counter() for g in grids],
                         dtype=np.float64)
    return rows, [g is not None for g in grids]


def pattern_kl(reference: Rows, candidate: Rows) -> float:
    """KL(reference || candidate) of the smoothed pattern distributions (as `kl`)."""
    p = reference.data[reference.idx].sum(axis=0)
    q = candidate.data[candidate.idx].sum(axis=0)
    support = (p + q) > 0
    if not support.any():
        return 0.0
    p, q = p[support] + SMOOTHING, q[support] + SMOOTHING
    p, q = p / p.sum(), q / q.sum()
    return float((p * np.log(p / q)).sum())


def _hamming_prepare(outputs: Sequence[Any]) -> tuple[np.ndarray, list[bool]]:
    """The pairwise Hamming matrix of the maps (NaN between maps of different sizes)."""
    grids = [_grid(o) for o in outputs]
    matrix = np.full((len(grids), len(grids)), np.nan)
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, grid in enumerate(grids):
        if grid:
            rows = grid.split("\n")
            by_size.setdefault((len(rows[0]), len(rows)), []).append(i)
    for members in by_size.values():
        tiles = np.stack([np.frombuffer(grids[i].encode(), dtype=np.uint8) for i in members])
        distances = (tiles[:, None, :] != tiles[None, :, :]).sum(axis=2)
        matrix[np.ix_(members, members)] = distances
    return matrix, [g is not None for g in grids]


def _mean_pairwise(rows: Rows) -> float | None:
    sub = rows.data[np.ix_(rows.idx, rows.idx)]
    upper = sub[np.triu_indices(len(rows.idx), k=1)]
    upper = upper[~np.isnan(upper)]
    return float(upper.mean()) if upper.size else None


def diversity_loss(reference: Rows, candidate: Rows) -> float:
    """How much less diverse the candidate maps are, as a fraction of the reference's mean
    pairwise Hamming distance (0 when as diverse or more)."""
    h_ref, h_cand = _mean_pairwise(reference), _mean_pairwise(candidate)
    if not h_ref:
        return 0.0
    return max(0.0, (h_ref - (h_cand or 0.0)) / h_ref)


MAP_CRITERIA = (
    SetDistance("rpg_patterns", _pattern_prepare, pattern_kl, PATTERN_MARGIN,
                "2x2 tile-pattern KL"),
    SetDistance("rpg_diversity", _hamming_prepare, diversity_loss, DIVERSITY_MARGIN,
                "loss of mean pairwise Hamming diversity"),
)


def render_map(output: Any, path: Path) -> Path | None:
    try:
        return to_png(output, path)
    except ValueError:
        return None


def register(registry: MetricRegistry) -> None:
    registry.register(MAP_SITES, TaskMetric("rpg_map", map_metrics, plot_maps, render_map,
                                            MAP_LEGEND, MAP_CRITERIA))
    registry.register(LEVEL_SITES, TaskMetric("rpg_level", level_metrics, plot_levels))
