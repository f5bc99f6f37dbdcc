"""What the gate judges: a version's answers, each paired with the teacher's answer to the
same input, and the teacher's answers paired with its own repeats.

* Promotion samples: the version's held-out evaluation answers (`source="eval"`) and live
  shadow answers (`source="shadow"`).
* Live samples (rollback): the version's most recent served answers (`source="student"`),
  `window` of them for validity; for agreement and fidelity only those the router also
  sent to the teacher (sampled teacher checks: their `agreement` is set), since a served
  answer with no teacher answer beside it cannot be compared.

A student answer's teacher reference is the oldest successful teacher record of the
site's contract with the same input (`Record.input_key`). Teacher repeats are inputs the
teacher answered more than once (the router asks again on a capped number of shadow
inputs, see `SiteSettings.teacher_repeats`; inputs that recur in real traffic count too):
the first two answers of each such input form one pair, so each input counts once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from byllm_distill.store import Record, RecordFilter, Store


@dataclass
class Samples:
    answers: list[Record] = field(default_factory=list)  # the student's answers (validity)
    pairs: list[tuple[Record, Record]] = field(default_factory=list)  # (teacher, student)
    repeats: list[tuple[Record, Record]] = field(default_factory=list)  # (teacher, teacher)
    live: int = 0  # answers given on live traffic (shadow or served)


def teacher_answers(store: Store, site: str, fingerprint: str | None) -> dict[str, list[Record]]:
    """The site's successful teacher records of one contract, by input, oldest first."""
    by_input: dict[str, list[Record]] = {}
    for record in store.iter_records(RecordFilter(site=site, source="teacher", status="ok"),
                                     with_verdicts=False):
        if fingerprint is None or record.fingerprint == fingerprint:
            by_input.setdefault(record.input_key(), []).append(record)
    for group in by_input.values():
        group.sort(key=lambda r: r.id)
    return by_input


def repeat_pairs(by_input: dict[str, list[Record]]) -> list[tuple[Record, Record]]:
    return [(group[0], group[1]) for group in by_input.values() if len(group) >= 2]


def _paired(answers: list[Record], by_input: dict[str, list[Record]]
            ) -> list[tuple[Record, Record]]:
    return [(by_input[r.input_key()][0], r) for r in answers
            if r.status == "ok" and r.input_key() in by_input]


def promotion_samples(store: Store, site: str, version: int,
                      fingerprint: str | None) -> Samples:
    answers = [r for source in ("eval", "shadow") for r in store.iter_records(
        RecordFilter(site=site, version=version, source=source))]
    by_input = teacher_answers(store, site, fingerprint)
    return Samples(answers, _paired(answers, by_input), repeat_pairs(by_input),
                   live=sum(1 for r in answers if r.source == "shadow"))


def live_samples(store: Store, site: str, version: int, fingerprint: str | None,
                 window: int) -> Samples:
    served = list(store.iter_records(RecordFilter(site=site, version=version, source="student"),
                                     limit=None, newest_first=True))
    checked = [r for r in served if r.agreement is not None][:window]
    by_input = teacher_answers(store, site, fingerprint)
    return Samples(served[:window], _paired(checked, by_input), repeat_pairs(by_input),
                   live=len(served[:window]))
