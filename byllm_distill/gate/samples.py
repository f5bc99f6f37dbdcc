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

Everything is looked up by index (`records.input_hash`, SQL counts for the repeats), so a
decision reads the version's own answers and their teacher references, not every teacher
record of the site.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from byllm_distill.store import Record, RecordFilter, Store


@dataclass
class Samples:
    answers: list[Record] = field(default_factory=list)  # the student's answers (validity)
    pairs: list[tuple[Record, Record]] = field(default_factory=list)  # (teacher, student)
    repeats: list[tuple[Record, Record]] = field(default_factory=list)  # (teacher, teacher)
    live: int = 0  # answers given on live traffic (shadow or served)


# Teacher repeats read per decision, at most: enough for any margin the gate tests.
MAX_REPEAT_INPUTS = 2000


def teacher_answers(store: Store, site: str, fingerprint: str | None,
                    input_hashes: Iterable[str] | None = None,
                    per_input: int | None = None) -> dict[str, list[Record]]:
    """The site's successful teacher records of one contract (any, when None), by input,
    oldest first: of the given inputs only (`Record.input_hash`), else of all of them; at
    most the oldest `per_input` of each input when given (chosen in SQL)."""
    flt = RecordFilter(site=site, source="teacher", status="ok", fingerprint=fingerprint)
    if input_hashes is None:
        chunks: list[RecordFilter] = [flt]
    else:
        wanted = sorted(set(input_hashes))
        chunks = [replace(flt, input_hashes=wanted[i:i + 500])
                  for i in range(0, len(wanted), 500)]
    by_input: dict[str, list[Record]] = {}
    for chunk in chunks:
        if per_input is not None:
            ids = store.first_per_input(chunk, per_input)
            chunk = RecordFilter(ids=ids)
            if not ids:
                continue
        for record in store.iter_records(chunk, with_verdicts=False):
            by_input.setdefault(record.input_key(), []).append(record)
    for group in by_input.values():
        group.sort(key=lambda r: r.id)
    return by_input


def repeat_pairs(by_input: dict[str, list[Record]]) -> list[tuple[Record, Record]]:
    return [(group[0], group[1]) for group in by_input.values() if len(group) >= 2]


def teacher_repeats(store: Store, site: str, fingerprint: str | None
                    ) -> list[tuple[Record, Record]]:
    """(first, second) teacher answers of each input the teacher answered twice or more
    (at most `MAX_REPEAT_INPUTS` inputs), found by an SQL count, not a scan."""
    flt = RecordFilter(site=site, source="teacher", status="ok", fingerprint=fingerprint)
    repeated = store.repeated_inputs(flt, MAX_REPEAT_INPUTS)
    if not repeated:
        return []
    return repeat_pairs(teacher_answers(store, site, fingerprint, repeated, per_input=2))


def _paired(answers: list[Record], store: Store, site: str, fingerprint: str | None
            ) -> list[tuple[Record, Record]]:
    by_input = teacher_answers(store, site, fingerprint,
                               (r.input_hash() for r in answers if r.status == "ok"),
                               per_input=1)
    return [(by_input[r.input_key()][0], r) for r in answers
            if r.status == "ok" and r.input_key() in by_input]


def promotion_samples(store: Store, site: str, version: int,
                      fingerprint: str | None) -> Samples:
    answers = [r for source in ("eval", "shadow") for r in store.iter_records(
        RecordFilter(site=site, version=version, source=source))]
    return Samples(answers, _paired(answers, store, site, fingerprint),
                   teacher_repeats(store, site, fingerprint),
                   live=sum(1 for r in answers if r.source == "shadow"))


def live_samples(store: Store, site: str, version: int, fingerprint: str | None,
                 window: int) -> Samples:
    served_by = RecordFilter(site=site, version=version, source="student")
    served = list(store.iter_records(served_by, limit=window, newest_first=True))
    checked = list(store.iter_records(replace(served_by, checked=True), limit=window,
                                      newest_first=True))
    return Samples(served, _paired(checked, store, site, fingerprint),
                   teacher_repeats(store, site, fingerprint), live=len(served))
