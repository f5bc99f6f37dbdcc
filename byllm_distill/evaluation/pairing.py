"""Eval sets and teacher/student pairs.

An eval set is a site's held-out teacher records. `heldout_split` decides which: the
record ids a dataset manifest lists when one is given, else a deterministic split on a hash
of the site and the canonical arguments, so one input never lands on both sides and the
same store always splits the same way. A student answers the same `args`: either a
callable `answer(args) -> (output, latency_ms)` run by `answer_with_student`, which turns
each answer into a validated record (stored, so it can be rated), or student records
already in the store (`STUDENT_SOURCES`), matched by `pair_records`.

`answer` may return the tuple or the output alone (latency is then the measured wall time);
the output may be the parsed JSON value or its JSON text, and text that does not parse is
kept as a failed call, except on `str` sites (no schema, a text answer), where text is the
answer. Answers are stored as `source="eval"` by default, the store's name
for "a student answered a held-out teacher input during evaluation": live `student`
records feed the router's rollback check, and evaluation answers must not.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from byllm_distill.agreement import agreement as leaf_agreement
from byllm_distill.store.record import Record
from byllm_distill.validators import registry as validators

if TYPE_CHECKING:
    from byllm_distill.store import Store

StudentAnswer = Callable[[dict[str, Any]], tuple[Any, float] | Any]
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


def answer_with_student(teacher: Sequence[Record], answer: StudentAnswer, model: str,
                        store: Store | None = None, version: int | None = None,
                        source: str = "eval") -> list[Record]:
    """Ask the student every teacher input; return (and store) its validated answers.

    Each record carries `version`, its `agreement` with the teacher's answer, and in
    `usage["cpu_s"]` the process CPU time the answer took (the student's cost).
    """
    out = []
    for teacher_record in teacher:
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        try:
            result = answer(dict(teacher_record.args))
            error = None
        except Exception as exc:  # noqa: BLE001 - a crashing student is a failed answer
            result, error = None, f"{type(exc).__name__}: {exc}"
        wall_ms = 1000 * (time.perf_counter() - wall_start)
        cpu_s = time.process_time() - cpu_start
        output, latency_ms = result if isinstance(result, tuple) else (result, wall_ms)
        record = _student_record(teacher_record, output, error)
        record.model, record.source, record.version = model, source, version
        record.latency_ms, record.usage = float(latency_ms), {"cpu_s": cpu_s}
        if record.status == "ok":
            record.agreement = leaf_agreement(teacher_record.output, record.output)
        record.verdicts = validators.validate(record)
        out.append(record)
    if store is not None:
        store.add_records(out)
    return out


def _student_record(teacher: Record, output: Any, error: str | None) -> Record:
    """A record of the student's answer to the teacher record's input (same contract)."""
    raw = output if isinstance(output, str) else None
    # A `str` site (no schema, a text answer) takes text as is; any other wants JSON.
    text_site = teacher.schema is None and isinstance(teacher.output, str)
    if isinstance(output, str):
        if not text_site:
            try:
                output = json.loads(output)
            except json.JSONDecodeError as exc:
                output, error = None, f"output is not JSON: {exc}"
    elif output is not None:
        raw = json.dumps(output, ensure_ascii=False)
    return Record(site=teacher.site, fingerprint=teacher.fingerprint, model="", messages=[],
                  args=dict(teacher.args), latency_ms=0.0, schema=teacher.schema,
                  output_raw=raw, output=output, cost=0.0, status="error" if error else "ok",
                  error=error)
