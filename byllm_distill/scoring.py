"""One scoring step for a student's (or any) answer: validators and agreement with the
teacher's answer to the same input.

`score(record, reference)` attaches both: `record.verdicts` from the validator registry
and, when the teacher's answer is given and the call succeeded, `record.agreement`, the
fraction of equal leaf values (agreement.py), to 4 places. Every path scores through it:
the router (it scores the student's answer inside the call to decide a fallback, and its
shadow answers in the background, comparison.py, then hands capture the scored records),
capture's writer thread (every other record gets its verdicts there), the router's teacher
checks of
served answers (`agreement_with`), the worker's held-out evaluation
(lifecycle.evaluate_heldout) and `eval` (evaluation/run.py), both through
`answer_with_student`, which asks a student every teacher input and scores each answer.

`answer` may return the tuple `(output, latency_ms)` or the output alone (latency is then
the measured wall time); the output may be the parsed JSON value or its JSON text, and text
that does not parse is kept as a failed call, except on `str` sites (no schema, a text
answer), where text is the answer. Answers are stored as `source="eval"` by default.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from byllm_distill.agreement import agreement
from byllm_distill.serialize import to_jsonable
from byllm_distill.store.record import Record
from byllm_distill.validators import registry as validators

if TYPE_CHECKING:
    from byllm_distill.store import Store

StudentAnswer = Callable[[dict[str, Any]], tuple[Any, float] | Any]


def score(record: Record, reference: Any = None) -> Record:
    """Attach verdicts and, given the teacher's answer (not None), agreement with it;
    returns `record`."""
    if reference is not None and record.status == "ok":
        record.agreement = agreement_with(record.output, reference)
    record.verdicts = validators.validate(record)
    return record


def agreement_with(answer: Any, reference: Any) -> float:
    """The agreement of an answer with the teacher's (JSON values or byLLM objects), as
    records store it (the router's later teacher checks set it with this too)."""
    return round(agreement(to_jsonable(answer), to_jsonable(reference)), 4)


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
        score(record, teacher_record.output)
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
