"""Turns on a model that answers up to `slots` calls at once, and how long a new call would
wait for one.

Contract. Every answer runs inside `with turns.turn() as slot:`, which queues the call
(first come, first served) until one of the model's `slots` is free, and holds that slot
(a number below `slots`: the batcher's sequence, batch.py) while the call answers.
`exclusive()` waits until no call answers and keeps new ones out while it is held
(closing a model, reading its KV cache directly).

`expected_wait_s()` is what a call arriving now would wait before its own turn: nothing
while a slot is free and nobody is queued; else the time until the slot it would get
frees, each answering call ending after one answer time from its start and each queued
call ahead of it taking one answer time of the slot it gets. An answer time is the
moving mean of recent answers (weight `EWMA` for the newest); before any answer has
finished, an answer in progress is expected to run as long again as it has so far (a
lower bound, never a guess). The router compares it with a site's `max_wait_ms` (see
router.py).
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

EWMA = 0.2


class Turns:
    def __init__(self, slots: int = 1) -> None:
        if slots < 1:
            raise ValueError(f"a model needs at least one slot, not {slots}")
        self.slots = slots
        self._cond = threading.Condition()
        self._answering: dict[int, float] = {}  # slot -> when its answer began
        self._tickets = 0  # tickets handed out; calls take their slot in ticket order
        self._next = 0  # the ticket whose turn comes next
        self._closed = 0  # exclusive() holders
        self._abandoned: set[int] = set()  # tickets whose callers stopped waiting
        self._mean_s: float | None = None

    @contextmanager
    def turn(self, prefer: Callable[[list[int]], int] | None = None) -> Iterator[int]:
        """Wait for a free slot and hold it; `prefer` picks among the free ones."""
        with self._cond:
            ticket = self._tickets
            self._tickets += 1
            try:
                while (ticket != self._next or self._closed
                       or len(self._answering) >= self.slots):
                    self._cond.wait()
            finally:
                if ticket == self._next:
                    self._next += 1
                    self._cond.notify_all()
                else:  # interrupted while queued: let the tickets behind it through
                    self._skip(ticket)
            free = [s for s in range(self.slots) if s not in self._answering]
            slot = prefer(free) if prefer is not None else free[0]
            began = self._answering[slot] = time.monotonic()
        try:
            yield slot
        finally:
            with self._cond:
                del self._answering[slot]
                took = time.monotonic() - began
                self._mean_s = took if self._mean_s is None else (
                    (1 - EWMA) * self._mean_s + EWMA * took)
                self._cond.notify_all()

    def _skip(self, ticket: int) -> None:
        # A ticket that never took its turn (KeyboardInterrupt while waiting) must not
        # stall the queue: the calls behind it are served as if it had gone.
        self._abandoned.add(ticket)
        while self._next in self._abandoned:
            self._abandoned.discard(self._next)
            self._next += 1
        self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Every slot: wait until no call answers; new calls wait while this is held."""
        with self._cond:
            self._closed += 1
            while self._answering:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._closed -= 1
                self._cond.notify_all()

    def busy(self) -> int:
        """Calls answering or queued now."""
        with self._cond:
            return len(self._answering) + self._tickets - self._next

    def expected_wait_s(self) -> float:
        with self._cond:
            queued = self._tickets - self._next
            if len(self._answering) + queued < self.slots:
                return 0.0
            now = time.monotonic()
            ran = [now - began for began in self._answering.values()]
            mean = self._mean_s
        # When each slot frees next, then every answer after it takes one answer time.
        ends = [max(mean - r, 0.0) if mean is not None else r for r in ran]
        step = mean if mean is not None else max(ran, default=0.0)
        ends += [0.0] * (self.slots - len(ends))
        heapq.heapify(ends)
        for _ in range(queued):  # the calls ahead take the slots as they free
            heapq.heapreplace(ends, ends[0] + step)
        return ends[0]
