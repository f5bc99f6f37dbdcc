"""The gate's criteria. Each compares the student with the teacher on the same inputs and
decides on a confidence bound, never on a point estimate, in one of two directions:

* `promote`: the criterion passes only when the bound shows the student is good enough
  (non-inferiority: the pessimistic end of the interval clears the bar);
* `rollback`: the criterion fails only when the bound shows the student is worse (the
  optimistic end misses the bar), so a serving student is not dropped on noise.

Criteria:
- `samples`, `shadow`: enough scored answers, enough of them live (promotion only).
- `validity`: Wilson bound of the pass-every-validator rate: the lower end vs `threshold`
  (promotion), the upper end vs `rollback_below` (rollback).
- `agreement:<field>`: per top-level field of the answer (the whole answer for scalar and
  list answers), the rate at which the student's value equals the teacher's, against the
  rate at which the teacher's own repeated answers to one input agree with each other.
  A number the teacher itself varies by up to k between two answers to one input (a count
  drawn with jitter) agrees within ±k (`tolerances`); a number it derives agrees exactly.
  Newcombe interval of (student - teacher); the bar is `-agreement_margin`. A field the
  teacher answers the same way must be matched. A field the teacher itself varies (the
  upper Wilson bound of its self-agreement is below `FREE_BELOW`: a layout, free text) is
  not held to exact agreement at all (not applicable); fidelity judges it.
- `fidelity:<name>`: split-half distance gap (fidelity.py), the generic JSON one with
  `fidelity_margin`, plus the site's task distances (metric registry) with their margins
  (`margins` overrides per name).
- `ratings:<rubric item>`, `preference`: only when the store holds at least
  `min_ratings` manual ratings (preferences) of both sides; Welch interval of the mean
  difference vs `-rating_margin`, Wilson interval of the student's win rate (ties half)
  vs `0.5 - preference_margin`. Not applicable otherwise.
- `mean_agreement`: the legacy mean leaf agreement vs `agreement`, when that is set > 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from byllm_distill.config import SiteSettings
from byllm_distill.gate.fidelity import SetDistance, compare, generic_distance
from byllm_distill.gate.samples import Samples
from byllm_distill.serialize import dumps_canonical
from byllm_distill.stats import mean_diff_ci, newcombe_diff, wilson, wilson_lower
from byllm_distill.store import Record

WHOLE = "(answer)"
FREE_BELOW = 0.5
MORE_TRAINING = ("train longer (train_steps), capture more teacher records, or use a bigger "
                 "base (--base)")


@dataclass(frozen=True)
class Criterion:
    name: str
    kind: str  # samples, validity, agreement, fidelity, ratings
    passed: bool | None  # None: not applicable (no data of that kind)
    value: float | None  # the point estimate (student side, or the gap for fidelity)
    bound: float | None  # the confidence bound the decision used
    bar: float | None
    n: int
    detail: str
    baseline: float | None = None  # the teacher's own value, where there is one
    fix: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("value", "bound", "bar", "baseline"):
            if isinstance(out[key], float):
                out[key] = round(out[key], 4)
        return out

    def reason(self) -> str:
        return f"{self.name}: {self.detail}" + (f"; {self.fix}" if self.fix else "")


def _fix(point_ok: bool, n: int) -> str:
    if point_ok:
        return f"the estimate is fine but {n} samples leave the bound too wide: collect more"
    return MORE_TRAINING


def counts(samples: Samples, settings: SiteSettings) -> list[Criterion]:
    n, live = len(samples.answers), samples.live
    return [
        Criterion("samples", "samples", n >= settings.min_samples, n, None,
                  settings.min_samples, n, f"{n} scored answers (need {settings.min_samples})",
                  fix="" if n >= settings.min_samples else "run more calls in shadow mode"),
        Criterion("shadow", "samples", live >= settings.min_shadow, live, None,
                  settings.min_shadow, live, f"{live} live shadow answers (need "
                  f"{settings.min_shadow})",
                  fix="" if live >= settings.min_shadow else "run more calls in shadow mode"),
    ]


def validity(answers: Sequence[Record], bar: float, min_n: int, direction: str) -> Criterion:
    n = len(answers)
    passes = sum(1 for r in answers if r.valid)
    bound = wilson_lower(passes, n)
    rate = passes / n if n else 0.0
    if direction == "promote":
        ok = n >= min_n and bound >= bar
        detail = f"{passes}/{n} pass every validator, lower bound {bound:.3f} vs {bar}"
        fix = "" if ok else _fix(rate >= bar, n)
    else:
        bound = (wilson(passes, n) or [0.0, 1.0])[1]
        ok = not (n >= min_n and bound < bar)
        detail = (f"{passes}/{n} recent answers pass every validator, upper bound "
                  f"{bound:.3f} vs {bar}")
        fix = "" if ok else "the student's answers stopped passing the validators"
    return Criterion("validity", "validity", ok, rate, bound, bar, n, detail, fix=fix)


def _fields(output: Any) -> dict[str, Any]:
    return output if isinstance(output, dict) else {WHOLE: output}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def tolerances(repeats: Sequence[tuple[Record, Record]]) -> dict[str, float]:
    """Per numeric field, the largest difference between the teacher's own two answers to
    one input: 0 for a number the teacher derives from the inputs, 2 for a count it draws
    with a little jitter. Fields that are not numbers in every repeat have none."""
    spread: dict[str, float] = {}
    other: set[str] = set()
    for a, b in repeats:
        fa, fb = _fields(a.output), _fields(b.output)
        for name in fa.keys() | fb.keys():
            x, y = fa.get(name), fb.get(name)
            if _is_number(x) and _is_number(y):
                spread[name] = max(spread.get(name, 0.0), abs(x - y))
            else:
                other.add(name)
    return {name: value for name, value in spread.items() if name not in other}


def _agree_counts(pairs: Sequence[tuple[Record, Record]],
                  within: dict[str, float]) -> dict[str, int]:
    """Per field (of either answer), how many pairs have the same value; a numeric field
    with a tolerance counts as the same within it."""
    same: dict[str, int] = {}
    for a, b in pairs:
        fa, fb = _fields(a.output), _fields(b.output)
        for name in fa.keys() | fb.keys():
            x, y = fa.get(name), fb.get(name)
            tol = within.get(name, 0.0)
            agree = name in fa and name in fb and (
                dumps_canonical(x) == dumps_canonical(y)
                or (tol > 0 and _is_number(x) and _is_number(y) and abs(x - y) <= tol))
            same[name] = same.get(name, 0) + int(agree)
    return same


def agreement(samples: Samples, settings: SiteSettings, direction: str) -> list[Criterion]:
    pairs, repeats = samples.pairs, samples.repeats
    if not pairs:
        return [Criterion("agreement", "agreement", direction != "promote", None, None,
                          -settings.agreement_margin, 0,
                          "no student answer has a teacher answer to the same input",
                          fix="run more calls in shadow mode" if direction == "promote" else "")]
    within = tolerances(repeats)
    student_same = _agree_counts(pairs, within)
    teacher_same = _agree_counts(repeats, within)
    n_s, n_t = len(pairs), len(repeats)
    bar = -settings.agreement_margin
    out = []
    for name in sorted(student_same):
        k_s = student_same[name]
        p_s = k_s / n_s
        tol = within.get(name, 0.0)
        spread = f" within ±{tol:g} (the teacher's own spread)" if tol else ""
        if n_t:
            k_t = teacher_same.get(name, 0)
            p_t = k_t / n_t
            upper = (wilson(k_t, n_t) or [0.0, 1.0])[1]
            if upper < FREE_BELOW:
                out.append(Criterion(
                    f"agreement:{name}", "agreement", None, p_s, None, None, n_s,
                    f"the teacher varies this field (self-agreement {k_t}/{n_t}, upper bound "
                    f"{upper:.2f} < {FREE_BELOW}): judged by fidelity, not exact agreement",
                    p_t))
                continue
            low, high = newcombe_diff(k_s, n_s, k_t, n_t) or (-1.0, 1.0)
            baseline_text = f"teacher self-agreement {k_t}/{n_t}"
        elif settings.teacher_repeats == 0:
            # Repeats are off: the teacher is taken to be deterministic (self-agreement 1).
            p_t = 1.0
            low, high = (value - 1.0 for value in wilson(k_s, n_s) or (0.0, 1.0))
            baseline_text = "teacher assumed deterministic (teacher_repeats = 0)"
        else:
            out.append(Criterion(
                f"agreement:{name}", "agreement", direction != "promote", p_s, None, bar,
                n_s, f"student agrees {k_s}/{n_s}; the teacher's self-agreement is not "
                     "measured yet (no input answered twice)", None,
                "run more calls in shadow mode: the router repeats up to teacher_repeats "
                "teacher calls" if direction == "promote" else ""))
            continue
        if direction == "promote":
            ok, bound = low >= bar, low
            fix = "" if ok else _fix(p_s - p_t >= bar, n_s)
        else:
            ok, bound = high >= bar, high
            fix = "" if ok else "the student now disagrees with the teacher"
        out.append(Criterion(
            f"agreement:{name}", "agreement", ok, p_s, bound, bar, n_s,
            f"student agrees {k_s}/{n_s}{spread} vs {baseline_text}; difference bound "
            f"{bound:+.3f} vs {bar:+.3f}", p_t, fix))
    return out


def fidelity(samples: Samples, settings: SiteSettings, task: Sequence[SetDistance],
             direction: str) -> list[Criterion]:
    teacher = [t.output for t, _ in samples.pairs]
    student = [s.output for _, s in samples.pairs]
    out = []
    for metric in (generic_distance(settings.fidelity_margin), *task):
        margin = settings.margins.get(metric.name, metric.margin)
        result = compare(teacher, student, metric)
        name = f"fidelity:{metric.name}"
        if result is None:
            out.append(Criterion(name, "fidelity", direction != "promote", None, None, margin,
                                 len(teacher), f"too few comparable pairs ({len(teacher)})",
                                 fix="run more calls in shadow mode"
                                 if direction == "promote" else ""))
            continue
        if direction == "promote":
            ok, bound = result.upper <= margin, result.upper
            fix = "" if ok else _fix(result.gap <= margin, result.n)
        else:
            ok, bound = result.lower <= margin, result.lower
            fix = "" if ok else "the student's answers drifted from the teacher's"
        out.append(Criterion(
            name, "fidelity", ok, result.gap, bound, margin, result.n,
            f"{metric.about or metric.name}: student {result.student:.3f} vs teacher "
            f"split-half {result.baseline:.3f}, gap {result.gap:+.3f} (bound {bound:+.3f}) "
            f"vs margin {margin}", result.baseline, fix))
    return out


def ratings(student_ids: set[str], teacher_ids: set[str], all_ratings: Sequence[dict[str, Any]],
            preferences: Sequence[dict[str, Any]], settings: SiteSettings) -> list[Criterion]:
    """Manual ratings of this version's answers vs the site's teacher answers."""
    out = []
    scores: dict[str, dict[str, list[float]]] = {}
    for rating in all_ratings:
        side = ("student" if rating["record_id"] in student_ids
                else "teacher" if rating["record_id"] in teacher_ids else None)
        if side is None:
            continue
        for item, score in (rating.get("scores") or {}).items():
            if isinstance(score, int | float):
                scores.setdefault(item, {"student": [], "teacher": []})[side].append(score)
    for item, sides in sorted(scores.items()):
        s, t = sides["student"], sides["teacher"]
        n = min(len(s), len(t))
        interval = mean_diff_ci(s, t) if n >= settings.min_ratings else None
        if interval is None:
            continue
        ok = interval[0] >= -settings.rating_margin
        diff = sum(s) / len(s) - sum(t) / len(t)
        out.append(Criterion(
            f"ratings:{item}", "ratings", ok, sum(s) / len(s), interval[0],
            -settings.rating_margin, n, f"mean {sum(s) / len(s):.2f} vs teacher "
            f"{sum(t) / len(t):.2f} ({len(s)}/{len(t)} ratings), difference bound "
            f"{interval[0]:+.2f}", sum(t) / len(t),
            "" if ok else _fix(diff >= -settings.rating_margin, n)))
    wins = ties = total = 0
    for pref in preferences:
        left, right = pref["left_id"], pref["right_id"]
        if left in student_ids and right in teacher_ids:
            student_side = "left"
        elif right in student_ids and left in teacher_ids:
            student_side = "right"
        else:
            continue
        total += 1
        if pref["choice"] == "tie":
            ties += 1
        elif pref["choice"] == student_side:
            wins += 1
    if total >= settings.min_ratings:
        score = wins + ties / 2
        lower = (wilson(score, total) or [0.0])[0]
        bar = 0.5 - settings.preference_margin
        ok = lower >= bar
        out.append(Criterion("preference", "ratings", ok, score / total, lower, bar, total,
                             f"student preferred {score:g}/{total} times (ties half), lower "
                             f"bound {lower:.3f}", 0.5,
                             "" if ok else _fix(score / total >= bar, total)))
    return out


def mean_agreement(answers: Sequence[Record], bar: float) -> Criterion:
    values = [r.agreement for r in answers if r.agreement is not None]
    mean = sum(values) / len(values) if values else None
    ok = mean is not None and mean >= bar
    shown = "none measured" if mean is None else f"{mean:.3f}"
    return Criterion("mean_agreement", "agreement", ok, mean, mean, bar, len(values),
                     f"mean leaf agreement {shown} vs {bar} (legacy point estimate)",
                     fix="" if ok else MORE_TRAINING)
