"""The manual-rating rubric and the summary of ratings stored by the rating tool.

Each rating scores one record 1-5 on every criterion of its site's rubric: a task's own
(`task.rubric(pattern, ...)`, tasks.py; the RPG showcase's is in rpg/plugin.py), else
`GENERIC_RUBRIC`; `rubric_for(site)` says which. Ratings and preferences are
grouped by the rated record's source label, `"teacher (model)"` or `"student (model, vN)"`
(live, shadow and evaluation answers of one student version are one source), so several
student versions are told apart. The summary holds, per source and criterion,
the mean with a Student-t 95 % interval; per pair of sources the preference counts and the
first source's win rate (a tie counts half) with a Wilson 95 % interval; and per criterion
Krippendorff's alpha (interval) over the records that two or more raters scored, when
there are any.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from byllm_distill import tasks
from byllm_distill.stats import krippendorff_alpha, mean_ci, wilson
from byllm_distill.store.record import Record
from byllm_distill.tasks import Rubric

GENERIC_RUBRIC: Rubric = (
    ("correctness", "Correctness and consistency",
     "Is the answer right for this input, and consistent with itself?"),
    ("adherence", "Adherence to the request",
     "Does it do what was asked: every constraint, count, size and format?"),
    ("quality", "Overall quality",
     "Would you hand this answer to a user as it is?"),
)


def rubric_for(site: str) -> Rubric:
    """The (key, title, help) criteria raters score answers of `site` on."""
    return tasks.rubric_for(site) or GENERIC_RUBRIC


def criteria_for(site: str) -> tuple[str, ...]:
    return tuple(key for key, _, _ in rubric_for(site))


def source_label(record: Record) -> str:
    if record.source == "teacher":
        return f"teacher ({record.model})"
    version = f", v{record.version}" if record.version is not None else ""
    return f"student ({record.model}{version})"


def _teacher_first(label: str) -> tuple[bool, str]:
    """Sort key: teacher labels before student ones, as in every other table and chart."""
    return (not label.startswith("teacher"), label)


def summarize_ratings(ratings: Iterable[Mapping[str, Any]],
                      preferences: Iterable[Mapping[str, Any]],
                      records: Mapping[str, Record]) -> dict[str, Any]:
    """Summary of the ratings and preferences whose records are in `records` (by id), on
    the rubric of their site (`criteria`: (key, title) pairs, in the rubric's order)."""
    rubric = rubric_for(next(iter(records.values())).site) if records else GENERIC_RUBRIC
    criteria = tuple(key for key, _, _ in rubric)
    ratings = [r for r in ratings if r["record_id"] in records]
    preferences = [p for p in preferences
                   if p["left_id"] in records and p["right_id"] in records]
    by_source: dict[str, dict[str, list[float]]] = {}
    units: dict[str, dict[str, list[float]]] = {c: {} for c in criteria}
    for rating in ratings:
        label = source_label(records[rating["record_id"]])
        for criterion in criteria:
            score = rating["scores"].get(criterion)
            if isinstance(score, int | float):
                by_source.setdefault(label, {c: [] for c in criteria})[criterion].append(score)
                units[criterion].setdefault(rating["record_id"], []).append(score)
    multi = {rid for c in criteria for rid, vals in units[c].items() if len(vals) >= 2}
    return {
        "criteria": [[key, title] for key, title, _ in rubric],
        "ratings": len(ratings),
        "raters": sorted({r["rater"] for r in ratings} | {p["rater"] for p in preferences}),
        "by_source": {
            label: {c: mean_ci(scores[c]) for c in criteria}
            for label, scores in sorted(by_source.items(), key=lambda kv: _teacher_first(kv[0]))
        },
        "preferences": _preferences(preferences, records),
        "agreement": {
            "method": "krippendorff_alpha_interval",
            "items_rated_by_2plus": len(multi),
            "alpha": {c: krippendorff_alpha(units[c]) if multi else None for c in criteria},
        },
    }


def _preferences(preferences: list[Mapping[str, Any]],
                 records: Mapping[str, Record]) -> list[dict[str, Any]]:
    tally: dict[tuple[str, str], dict[str, int]] = {}
    for pref in preferences:
        left, right = (source_label(records[pref["left_id"]]),
                       source_label(records[pref["right_id"]]))
        if left == right:
            continue
        a, b = sorted((left, right), key=_teacher_first)
        counts = tally.setdefault((a, b), {"a_wins": 0, "b_wins": 0, "ties": 0})
        winner = {"left": left, "right": right}.get(pref["choice"])
        if winner is None:
            counts["ties"] += 1
        else:
            counts["a_wins" if winner == a else "b_wins"] += 1
    out = []
    ordered = sorted(tally, key=lambda ab: (_teacher_first(ab[0]), _teacher_first(ab[1])))
    for a, b in ordered:
        counts = tally[(a, b)]
        n = counts["a_wins"] + counts["b_wins"] + counts["ties"]
        score = counts["a_wins"] + counts["ties"] / 2
        out.append({"a": a, "b": b, **counts, "n": n, "a_win_rate": score / n,
                    "ci95": wilson(score, n)})
    return out
