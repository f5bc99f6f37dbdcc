"""Distribution fidelity: do the student's answers look like the teacher's, as a set?

Exact agreement cannot judge outputs the teacher itself varies (a generated layout, free
text). Fidelity compares the two sets of answers to the same inputs with a distance, and
judges it against the teacher's own split-half baseline, so "how different is the student"
is read against "how different is the teacher from itself on other inputs":

    split the inputs into halves A and B at random;
    baseline = d(teacher[A], teacher[B]),  student = d(teacher[A], student[B])
    (each averaged with the mirrored split, so asymmetric distances such as KL are fair);
    gap = student - baseline.

Both sides compare two half-sized sets drawn from different inputs, so sample size and
input shift cancel. The point value averages `SPLITS` random splits of the data; the
bound is the 95th percentile of the gap over `ROUNDS` bootstrap resamples of the inputs
(each resample split on its distinct inputs, so a duplicated input never sits on both
sides). Promotion needs the upper bound <= the criterion's margin; rollback fires when
the lower end (5th percentile) exceeds it: the student is then clearly further from the
teacher than the teacher is from itself.

A `SetDistance` is `prepare(outputs) -> (data, usable)`, which turns a list of answers into
shared data (usually one numpy row per answer) and says which answers could be read, and
`distance(reference, candidate) -> float` over two `Rows` of that data (0 = alike). The
generic one here works for any JSON answer; tasks register their own through the metric
registry (`TaskMetric.criteria`; the RPG maps register their 2x2 tile-pattern KL and
diversity).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from byllm_distill.serialize import dumps_canonical

ROUNDS = 200
SPLITS = 20
MIN_PAIRS = 4  # two inputs a half; `min_samples` (20) is what the gate asks for


class Rows:
    """Some of the prepared answers: `data` is shared, `idx` selects rows of it."""

    def __init__(self, data: Any, idx: np.ndarray) -> None:
        self.data, self.idx = data, idx

    def __getitem__(self, positions: Sequence[int]) -> Rows:
        return Rows(self.data, self.idx[np.asarray(positions, dtype=np.intp)])

    def __len__(self) -> int:
        return len(self.idx)


@dataclass(frozen=True)
class SetDistance:
    name: str
    prepare: Callable[[Sequence[Any]], tuple[Any, list[bool]]]
    distance: Callable[[Rows, Rows], float]
    margin: float
    about: str = ""


@dataclass(frozen=True)
class FidelityResult:
    n: int
    gap: float  # point estimate: student's distance minus the teacher's split-half baseline
    baseline: float  # the teacher's split-half distance (point estimate)
    student: float  # the student's distance to the teacher (point estimate)
    lower: float  # 5th percentile of the bootstrap gap
    upper: float  # 95th percentile


# -- the generic distance: per-path value and length distributions of any JSON answer --


def json_tokens(value: Any) -> list[tuple[str, str]]:
    """(path, value) tokens: every scalar by its path with list indices generalised
    (`/walls/*/start_pos/x`), plus each list's length (`/walls#len`)."""
    out: list[tuple[str, str]] = []

    def walk(item: Any, path: str) -> None:
        if isinstance(item, dict):
            for key, child in item.items():
                walk(child, f"{path}/{key}")
        elif isinstance(item, list):
            out.append((f"{path}#len", str(len(item))))
            for child in item:
                walk(child, f"{path}/*")
        else:
            out.append((path, dumps_canonical(item)))

    walk(value, "")
    return out


@dataclass(frozen=True)
class TokenCounts:
    counts: np.ndarray  # answers x tokens
    path_of: np.ndarray  # token -> path index
    paths: int


def count_rows(counters: Sequence[Mapping[Any, int]],
               dtype: Any = np.float32) -> tuple[np.ndarray, list[Any]]:
    """One row per counter and one column per key any of them has (first seen first):
    the counts, and the keys in column order. Distances sum rows of it."""
    columns: dict[Any, int] = {}
    for counter in counters:
        for key in counter:
            columns.setdefault(key, len(columns))
    rows = np.zeros((len(counters), max(1, len(columns))), dtype=dtype)
    for i, counter in enumerate(counters):
        for key, count in counter.items():
            rows[i, columns[key]] = count
    return rows, list(columns)


def json_prepare(outputs: Sequence[Any]) -> tuple[TokenCounts, list[bool]]:
    counts, tokens = count_rows([Counter(json_tokens(output)) for output in outputs])
    path_ids: dict[str, int] = {}
    path_of = np.zeros(max(1, len(tokens)), dtype=np.intp)
    for j, (path, _) in enumerate(tokens):
        path_of[j] = path_ids.setdefault(path, len(path_ids))
    return TokenCounts(counts, path_of, max(1, len(path_ids))), [True] * len(outputs)


def json_distance(reference: Rows, candidate: Rows) -> float:
    """Mean over paths of the total variation distance between the two sets' value
    distributions at that path (a path only one set has counts 1)."""
    data: TokenCounts = reference.data
    p = data.counts[reference.idx].sum(axis=0)
    q = data.counts[candidate.idx].sum(axis=0)
    p_tot = np.bincount(data.path_of, weights=p, minlength=data.paths)
    q_tot = np.bincount(data.path_of, weights=q, minlength=data.paths)
    present = (p_tot > 0) | (q_tot > 0)
    if not present.any():
        return 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        p_n = np.where(p_tot[data.path_of] > 0, p / p_tot[data.path_of], 0.0)
        q_n = np.where(q_tot[data.path_of] > 0, q / q_tot[data.path_of], 0.0)
    tvd = 0.5 * np.bincount(data.path_of, weights=np.abs(p_n - q_n), minlength=data.paths)
    tvd[(p_tot == 0) | (q_tot == 0)] = 1.0
    return float(tvd[present].mean())


def generic_distance(margin: float) -> SetDistance:
    return SetDistance("json_values", json_prepare, json_distance, margin,
                       "per-path value and list-length distributions (total variation)")


# -- the split-half comparison -------------------------------------------------------


def _gap(teacher: Rows, student: Rows, distance: Callable[[Rows, Rows], float],
         a: list[int], b: list[int]) -> tuple[float, float]:
    ta, tb, sa, sb = teacher[a], teacher[b], student[a], student[b]
    base = (distance(ta, tb) + distance(tb, ta)) / 2
    stud = (distance(ta, sb) + distance(tb, sa)) / 2
    return stud - base, base


def _halves(draw: list[int], rng: random.Random) -> tuple[list[int], list[int]]:
    distinct = sorted(set(draw))
    rng.shuffle(distinct)
    left = set(distinct[:len(distinct) // 2])
    return [i for i in draw if i in left], [i for i in draw if i not in left]


def compare(teacher_outputs: Sequence[Any], student_outputs: Sequence[Any],
            metric: SetDistance, seed: int = 0) -> FidelityResult | None:
    """The split-half comparison of paired outputs (same index = same input); None when
    fewer than `MIN_PAIRS` pairs can be prepared."""
    n_all = len(teacher_outputs)
    data, usable = metric.prepare([*teacher_outputs, *student_outputs])
    kept = [i for i in range(n_all) if usable[i] and usable[n_all + i]]
    n = len(kept)
    if n < MIN_PAIRS:
        return None
    teacher = Rows(data, np.asarray(kept, dtype=np.intp))
    student = Rows(data, np.asarray(kept, dtype=np.intp) + n_all)
    rng = random.Random(seed)
    everyone = list(range(n))
    points = [_gap(teacher, student, metric.distance, *_halves(everyone, rng))
              for _ in range(SPLITS)]
    gap = sum(g for g, _ in points) / SPLITS
    baseline = sum(b for _, b in points) / SPLITS
    boot = sorted(_gap(teacher, student, metric.distance,
                       *_halves([rng.randrange(n) for _ in range(n)], rng))[0]
                  for _ in range(ROUNDS))
    return FidelityResult(n, gap, baseline, gap + baseline,
                          boot[int(0.05 * (ROUNDS - 1))], boot[int(0.95 * (ROUNDS - 1))])
