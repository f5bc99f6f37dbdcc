"""The router's background comparisons of a student with the teacher on the same input.

All of it runs off the caller's path (on the router's background thread), and every answer
is captured and scored (scoring.py; a shadow answer here, with its agreement with the
teacher's, before capture stores it; a teacher's answer by capture's writer):

* `shadow_sample`: the student answers an input the teacher has just answered for the
  program (`source="shadow"`, with its agreement with that answer). On up to
  `teacher_repeats` of a contract's inputs the teacher is asked the same input again, so
  the gate can measure the teacher's agreement with itself; the count starts from the
  store, so a restart does not ask more.
* `teacher_check`: the teacher answers an input the student served, and the served
  record gets its agreement with that answer (the live check's sample).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from byllm_distill.capture import Capture
from byllm_distill.config import DistillConfig
from byllm_distill.scoring import agreement_with, score
from byllm_distill.sites import fresh_run
from byllm_distill.store import Record, Store


class Comparisons:
    def __init__(self, capture: Capture, config: DistillConfig,
                 store: Callable[[], Store]) -> None:
        self.capture = capture
        self.config = config
        self._store = store
        self._repeats: dict[tuple[str, str], int] = {}  # (site, fingerprint) -> repeats
        self._lock = threading.Lock()

    def shadow_sample(self, student: Any, version: int | None, shadow_run: Any,
                      teacher_result: Any, model: Any = None) -> None:
        """The student's scored answer to the shadow input; maybe a teacher repeat."""
        outcome = self.capture.run(student, shadow_run, source="shadow", version=version,
                                   hand_back=True)
        record = outcome.record
        if record is not None:
            try:
                score(record, teacher_result)
            finally:  # stored scored or not; a scoring failure is logged by the router
                self.capture.store(record)
        if model is not None and record is not None and self._wants_repeat(record):
            self.capture.run(model, fresh_run(shadow_run), source="teacher")
        self.capture.flush()

    def _wants_repeat(self, record: Record) -> bool:
        """Whether to ask the teacher this input again: fewer than `teacher_repeats` of
        the contract's inputs have two teacher answers (counted once from the store)."""
        site, fingerprint = record.site, record.fingerprint
        cap = self.config.site(site).teacher_repeats
        if cap <= 0:
            return False
        key = (site, fingerprint)
        if key not in self._repeats:
            from byllm_distill.gate.samples import teacher_repeats

            self.capture.flush()
            found = len(teacher_repeats(self._store(), site, fingerprint))
            with self._lock:
                self._repeats.setdefault(key, found)
        with self._lock:
            if self._repeats[key] >= cap:
                return False
            self._repeats[key] += 1
            return True

    def teacher_check(self, model: Any, check_run: Any, student_result: Any,
                      student_record: Record | None) -> None:
        """The teacher's answer to a served input; the served record gets its agreement."""
        outcome = self.capture.run(model, check_run, source="teacher")
        if outcome.error is None and student_record is not None:
            self.capture.flush()
            self._store().set_agreement(student_record.id,
                                        agreement_with(student_result, outcome.result))
