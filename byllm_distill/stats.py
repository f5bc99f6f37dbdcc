"""Small statistics for the gate and the evaluation reports, in plain Python (no scipy).

`percentile` interpolates linearly between order statistics (numpy's default method).
`mean_ci` is the Student-t 95 % interval of a mean. `wilson` is the Wilson score interval
of a proportion and `wilson_lower` its lower end (one-sided use at the 95 % level of the
two-sided interval). `newcombe_diff` is Newcombe's hybrid score interval for the
difference of two independent proportions (method 10 of Newcombe 1998), built from the
two Wilson intervals: it behaves at 0 and 1, where the Wald interval collapses.
`mean_diff_ci` is Welch's t interval for a difference of means. `krippendorff_alpha` is
Krippendorff's alpha for interval data: 1 is perfect agreement, 0 agreement at chance level,
below 0 systematic disagreement; it is None when no item has two ratings or every rating
is the same value (no variation to explain).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

Z95 = 1.959963984540054
# Two-sided 95 % Student-t critical values for 1..30 degrees of freedom.
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) of `values`, None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def t95(df: int) -> float:
    """Two-sided 95 % t critical value; past the table a Cornish-Fisher expansion (error
    below 1e-3 there)."""
    if df < 1:
        raise ValueError("degrees of freedom must be at least 1")
    if df <= len(_T95):
        return _T95[df - 1]
    z = Z95
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def mean_ci(values: Sequence[float]) -> dict[str, float | int | None]:
    """{"n", "mean", "ci95": [low, high]}; the interval is None with fewer than 2 values."""
    n = len(values)
    if n == 0:
        return {"n": 0, "mean": None, "ci95": None}
    mean = sum(values) / n
    if n < 2:
        return {"n": n, "mean": mean, "ci95": None}
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t95(n - 1) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "ci95": [mean - half, mean + half]}


def wilson(successes: float, n: int) -> list[float] | None:
    """95 % Wilson score interval of successes/n (ties may count as half a success)."""
    if n == 0:
        return None
    p = successes / n
    denom = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denom
    return [max(0.0, centre - half), min(1.0, centre + half)]


def wilson_lower(successes: float, n: int) -> float:
    """The smallest true rate consistent with successes/n (0.0 with no samples)."""
    interval = wilson(successes, n)
    return interval[0] if interval else 0.0


def newcombe_diff(k1: float, n1: int, k2: float, n2: int) -> list[float] | None:
    """95 % interval of p1 - p2 for k1/n1 and k2/n2; None if either sample is empty."""
    w1, w2 = wilson(k1, n1), wilson(k2, n2)
    if w1 is None or w2 is None:
        return None
    p1, p2 = k1 / n1, k2 / n2
    (l1, u1), (l2, u2) = w1, w2
    diff = p1 - p2
    return [diff - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
            diff + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)]


def mean_diff_ci(a: Sequence[float], b: Sequence[float]) -> list[float] | None:
    """Welch 95 % interval of mean(a) - mean(b); None with fewer than 2 values a side."""
    if len(a) < 2 or len(b) < 2:
        return None
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    va = sum((x - ma) ** 2 for x in a) / (len(a) - 1) / len(a)
    vb = sum((x - mb) ** 2 for x in b) / (len(b) - 1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return [ma - mb, ma - mb]
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = t95(max(1, int(df))) * se
    return [ma - mb - half, ma - mb + half]


def krippendorff_alpha(units: Mapping[str, Sequence[float]]) -> float | None:
    """Interval-metric alpha over units (items), each with the values its raters gave.

    Units with a single value carry no information about agreement and are left out.
    """
    pairable = [list(vals) for vals in units.values() if len(vals) >= 2]
    n = sum(len(vals) for vals in pairable)
    if n < 2:
        return None
    observed = sum(
        sum((a - b) ** 2 for i, a in enumerate(vals) for j, b in enumerate(vals) if i != j)
        / (len(vals) - 1)
        for vals in pairable
    ) / n
    every = [v for vals in pairable for v in vals]
    mean = sum(every) / n
    # Sum over ordered pairs i != j of (a - b)^2 is 2 n sum (v - mean)^2.
    expected = 2 * n * sum((v - mean) ** 2 for v in every) / (n * (n - 1))
    if expected == 0:
        return None
    return 1 - observed / expected
