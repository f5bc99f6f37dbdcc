"""Statistical gates: when a student may serve a site, and when it must stop.

Decisions use the Wilson score lower bound of a pass rate, never a raw count: with `k`
passing samples out of `n`, `wilson_lower(k, n)` is the smallest true pass rate
consistent with the data at 95% confidence. Ten passes out of ten give 0.72, fifty out
of fifty 0.93, so a handful of lucky samples cannot promote a student.

* Promotion: over the version's scored samples (held-out evaluation, `source="eval"`,
  and live shadow answers, `source="shadow"`), promote when n >= `min_samples`, at least
  `min_shadow` of them are live, the lower bound >= `threshold`, and the mean agreement
  with the teacher >= `agreement`.
* Rollback: over the most recent `rollback_window` answers the version served
  (`source="student"`), roll back when n >= `min_samples` and the lower bound falls below
  `rollback_below`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from byllm_distill.config import SiteSettings
from byllm_distill.store import RecordFilter, Store

Z95 = 1.959963984540054


def wilson_lower(successes: int, n: int, z: float = Z95) -> float:
    if n <= 0:
        return 0.0
    p = successes / n
    denom = 1 + z * z / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - spread) / denom)


@dataclass(frozen=True)
class GateResult:
    passed: bool
    n: int
    passes: int
    lower_bound: float
    agreement: float | None
    reasons: list[str] = field(default_factory=list)

    @property
    def pass_rate(self) -> float:
        return self.passes / self.n if self.n else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "pass_rate": round(self.pass_rate, 4),
                "lower_bound": round(self.lower_bound, 4)}


def _score(store: Store, site: str, version: int, sources: tuple[str, ...],
           limit: int | None) -> tuple[int, int, float | None]:
    records = [r for source in sources for r in store.iter_records(
        RecordFilter(site=site, version=version, source=source), limit=limit,
        newest_first=True)]
    passes = sum(1 for r in records if r.valid)
    agreements = [r.agreement for r in records if r.agreement is not None]
    mean_agreement = sum(agreements) / len(agreements) if agreements else None
    return len(records), passes, mean_agreement


def promotion_gate(store: Store, site: str, version: int, settings: SiteSettings) -> GateResult:
    n, passes, agreement = _score(store, site, version, ("eval", "shadow"), None)
    live = store.count(RecordFilter(site=site, version=version, source="shadow"))
    bound = wilson_lower(passes, n)
    reasons = []
    if n < settings.min_samples:
        reasons.append(f"only {n} scored samples (need {settings.min_samples})")
    if live < settings.min_shadow:
        reasons.append(f"only {live} live shadow samples (need {settings.min_shadow})")
    if bound < settings.threshold:
        reasons.append(f"pass-rate lower bound {bound:.3f} < {settings.threshold}")
    if settings.agreement > 0 and (agreement is None or agreement < settings.agreement):
        shown = "none measured" if agreement is None else f"{agreement:.3f}"
        reasons.append(f"agreement {shown} < {settings.agreement}")
    return GateResult(not reasons, n, passes, bound, agreement, reasons)


def live_check(store: Store, site: str, version: int, settings: SiteSettings) -> GateResult:
    n, passes, agreement = _score(store, site, version, ("student",), settings.rollback_window)
    bound = wilson_lower(passes, n)
    failing = n >= settings.min_samples and bound < settings.rollback_below
    reasons = [f"live lower bound {bound:.3f} < {settings.rollback_below} over {n} answers"
               ] if failing else []
    return GateResult(not failing, n, passes, bound, agreement, reasons)
