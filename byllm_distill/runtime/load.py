"""Turns on a model that answers one call at a time, and how long a new call would wait.

Contract. Every answer runs inside `with turns.turn():`, which queues the call, takes the
model's lock and holds it while the call answers. `expected_wait_s()` is what a call
arriving now would wait before its own turn: the rest of the answer in progress plus one
answer time for each call queued behind it. An answer time is the moving mean of recent
answers (weight `EWMA` for the newest); before any answer has finished, the one in
progress counts for as long as it has run so far (a lower bound, never a guess). The
router compares it with a site's `max_wait_ms` (see router.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

EWMA = 0.2


class Turns:
    def __init__(self) -> None:
        self.lock = threading.Lock()  # held by the call answering
        self._state = threading.Lock()
        self._inside = 0  # calls queued or answering
        self._answering_since: float | None = None
        self._mean_s: float | None = None

    @contextmanager
    def turn(self) -> Iterator[None]:
        with self._state:
            self._inside += 1
        began: float | None = None
        try:
            with self.lock:
                began = time.monotonic()
                with self._state:
                    self._answering_since = began
                yield
        finally:
            with self._state:
                self._inside -= 1
                if began is not None:
                    self._answering_since = None
                    took = time.monotonic() - began
                    self._mean_s = took if self._mean_s is None else (
                        (1 - EWMA) * self._mean_s + EWMA * took)

    def expected_wait_s(self) -> float:
        with self._state:
            if self._answering_since is None:
                return 0.0
            running = time.monotonic() - self._answering_since
            if self._mean_s is None:
                return running
            return max(self._mean_s - running, 0.0) + (self._inside - 1) * self._mean_s
