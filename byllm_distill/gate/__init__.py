"""The quality gate: when a student may serve a site, and when it must stop.

A student replaces the teacher only when it is as good as the teacher on the same inputs,
shown by confidence bounds; validity alone never promotes (the per-call grammar and guided
decoding make nearly any student valid). `promotion_gate` and `live_check` gather the
samples (samples.py), evaluate every criterion (criteria.py: validity, per-field
agreement against the teacher's self-agreement, split-half distribution fidelity with the
site's task distances, manual ratings when there are any) and return a `GateResult` whose
`criteria` carry each value, bound, bar and n. The decision is taken and logged by the
lifecycle (lifecycle.py), never here.

* Promotion passes when every applicable criterion passes (non-inferiority bounds).
* The live check fails when any criterion shows the serving student is worse (the
  optimistic end of its bound misses the bar), over the last `rollback_window` answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from byllm_distill.config import SiteSettings
from byllm_distill.gate import criteria as c
from byllm_distill.gate.criteria import Criterion
from byllm_distill.gate.fidelity import SetDistance
from byllm_distill.gate.samples import Samples, live_samples, promotion_samples
from byllm_distill.stats import wilson_lower
from byllm_distill.store import Store

__all__ = ["Criterion", "GateResult", "SetDistance", "live_check", "promotion_gate",
           "wilson_lower"]


@dataclass(frozen=True)
class GateResult:
    passed: bool
    n: int
    passes: int
    lower_bound: float
    agreement: float | None
    reasons: list[str] = field(default_factory=list)
    criteria: list[Criterion] = field(default_factory=list)

    @property
    def pass_rate(self) -> float:
        return self.passes / self.n if self.n else 0.0

    def failing(self) -> list[Criterion]:
        return [x for x in self.criteria if x.passed is False]

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "n": self.n, "passes": self.passes,
                "pass_rate": round(self.pass_rate, 4),
                "lower_bound": round(self.lower_bound, 4),
                "agreement": None if self.agreement is None else round(self.agreement, 4),
                "reasons": list(self.reasons),
                "criteria": [x.to_dict() for x in self.criteria]}


def task_distances(site: str) -> list[SetDistance]:
    """The fidelity distances the site's task metrics register (metric registry)."""
    from byllm_distill.task_metrics import registry

    return [d for metric in registry.for_site(site) for d in metric.criteria]


def _result(samples: Samples, criteria: list[Criterion]) -> GateResult:
    answers = samples.answers
    passes = sum(1 for r in answers if r.valid)
    values = [r.agreement for r in answers if r.agreement is not None]
    failing = [x for x in criteria if x.passed is False]
    return GateResult(not failing, len(answers), passes, wilson_lower(passes, len(answers)),
                      sum(values) / len(values) if values else None,
                      [x.reason() for x in failing], criteria)


def evaluate(samples: Samples, site: str, settings: SiteSettings, direction: str,
             store: Store | None = None) -> GateResult:
    """Every criterion over `samples`; `direction` is "promote" or "rollback"."""
    promote = direction == "promote"
    criteria = c.counts(samples, settings) if promote else []
    criteria.append(c.validity(samples.answers,
                               settings.threshold if promote else settings.rollback_below,
                               settings.min_samples, direction))
    if promote or len(samples.pairs) >= settings.min_samples:
        criteria += c.agreement(samples, settings, direction)
        criteria += c.fidelity(samples, settings, task_distances(site), direction)
    if promote and store is not None:
        student_ids = {r.id for r in samples.answers}
        teacher_ids = {t.id for t, _ in samples.pairs} | {
            r.id for pair in samples.repeats for r in pair}
        criteria += c.ratings(student_ids, teacher_ids, store.ratings(), store.preferences(),
                              settings)
    if promote and settings.agreement > 0:
        criteria.append(c.mean_agreement(samples.answers, settings.agreement))
    return _result(samples, criteria)


def promotion_gate(store: Store, site: str, version: int, settings: SiteSettings,
                   fingerprint: str | None = None) -> GateResult:
    """Over the version's held-out and shadow answers (teacher records of `fingerprint`)."""
    samples = promotion_samples(store, site, version, fingerprint)
    return evaluate(samples, site, settings, "promote", store)


def live_check(store: Store, site: str, version: int, settings: SiteSettings,
               fingerprint: str | None = None) -> GateResult:
    """Over the version's most recent served answers and their teacher checks."""
    samples = live_samples(store, site, version, fingerprint, settings.rollback_window)
    return evaluate(samples, site, settings, "rollback")
