"""Eval sets and teacher/student pairs.

An eval set is a site's held-out teacher records. `heldout_split` decides which: the
record ids a dataset manifest lists when one is given, else a deterministic split on a hash
of the site and the canonical arguments, so one input never lands on both sides and the
same store always splits the same way. A student answers the same `args`, either now
(`scoring.answer_with_student` runs it and scores each answer) or earlier: student
records already in the store (`STUDENT_SOURCES`), matched by `pair_records`. Evaluation
answers are stored as `source="eval"`, the store's name for "a student answered a
held-out teacher input during evaluation": live `student` records feed the router's
rollback check, and evaluation answers must not.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from byllm_distill.store.record import Record

HELDOUT_FRACTION = 0.2
# Sources whose records are a student's answers (see store/record.py).
STUDENT_SOURCES = ("student", "shadow", "eval")


@dataclass(frozen=True)
class Pair:
    """One held-out input answered by the teacher and by a student."""

    teacher: Record
    student: Record


@dataclass(frozen=True)
class EvalData:
    """What a task metric sees: the site, its pairs and the student's training records."""

    site: str
    pairs: list[Pair]
    training: list[Record] = field(default_factory=list)

    @property
    def teacher(self) -> list[Record]:
        return [p.teacher for p in self.pairs]

    @property
    def student(self) -> list[Record]:
        return [p.student for p in self.pairs]


def args_key(record: Record) -> str:
    """Identity of an input: the site plus its canonical arguments."""
    return record.input_key()


def heldout_split(records: Sequence[Record], heldout_ids: Iterable[str] | None = None,
                  fraction: float = HELDOUT_FRACTION) -> tuple[list[Record], list[Record]]:
    """(training, held-out) records. Duplicate inputs follow their first record's side."""
    if heldout_ids is not None:
        wanted = set(heldout_ids)
        return ([r for r in records if r.id not in wanted], [r for r in records if r.id in wanted])
    train, heldout = [], []
    for record in records:
        digest = hashlib.sha256(args_key(record).encode()).digest()
        bucket = int.from_bytes(digest[:8], "big") / 2**64
        (heldout if bucket < fraction else train).append(record)
    return train, heldout


def pair_records(teacher: Sequence[Record], student: Sequence[Record]) -> list[Pair]:
    """Pairs of teacher and student records with the same site and arguments.

    One pair per input, in the teacher records' order: the first teacher record of an
    input and the newest student record for it (ids sort by creation time).
    """
    newest: dict[str, Record] = {}
    for record in student:
        key = args_key(record)
        if key not in newest or record.id > newest[key].id:
            newest[key] = record
    pairs, seen = [], set()
    for record in teacher:
        key = args_key(record)
        if key in newest and key not in seen:
            seen.add(key)
            pairs.append(Pair(record, newest[key]))
    return pairs
