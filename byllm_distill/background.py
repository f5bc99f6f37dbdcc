"""Work off the caller's path, on one daemon thread whose owner decides how long exit waits.

`Background.submit(task)` queues a no-argument callable; tasks run one at a time, in the
order submitted. `wait(timeout)` blocks until every task submitted so far has finished or
`timeout` seconds pass, and returns how many are still unfinished. Tasks handle their own
errors (the router wraps each one); a task that raises anyway ends the thread, and the
next `submit` starts a new one.

Why not `concurrent.futures.ThreadPoolExecutor`: the interpreter joins its threads at
exit, with no time limit and before `atexit` handlers run, so a slow or stuck student
would hold the user's program open indefinitely. This thread is a daemon; the router
waits for it at exit for at most its configured `exit_wait` (see router.py), then gives
up with `park`: a daemon thread still inside native code (a llama.cpp decode step) when
the process exits crashes it (SIGSEGV: the libraries are torn down under it), so the
thread is first stopped between two steps.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("byllm_distill")


class Background:
    def __init__(self, name: str) -> None:
        self.name = name
        self._tasks: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._unfinished = 0
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def submit(self, task: Callable[[], None]) -> None:
        with self._changed:
            self._unfinished += 1
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
        self._tasks.put(task)

    def unfinished(self) -> int:
        with self._changed:
            return self._unfinished

    def wait(self, timeout: float | None = None) -> int:
        """Block until every submitted task has finished or `timeout` passes; return how
        many are still unfinished (0: all done)."""
        with self._changed:
            self._changed.wait_for(lambda: self._unfinished == 0, timeout)
            return self._unfinished

    def _run(self) -> None:
        while True:
            task = self._tasks.get()
            try:
                task()
            finally:
                with self._changed:
                    self._unfinished -= 1
                    self._changed.notify_all()

    def park(self, modules: tuple[str, ...], timeout: float) -> bool:
        """Stop the worker for good the next time it calls or returns in Python code of
        `modules` (module names or prefixes). Return True once it is parked or idle (no
        task left), False if neither happened within `timeout` seconds.

        For exit only: a parked thread never resumes, and keeps whatever locks its task
        held in that code, so the caller must not need those afterwards. Parking happens
        only in the given code (a student's), never elsewhere, where the thread might hold
        a lock the rest of exit needs (logging's, the capture queue's). After a timeout
        the hook stays in place, so the thread is still parked if it gets there later.
        """
        thread = self._thread
        if thread is None or not thread.is_alive():
            return True
        target, parked, never = thread.ident, threading.Event(), threading.Event()

        def hold(frame: Any, event: str, arg: Any) -> None:
            if threading.get_ident() != target or parked.is_set():
                return
            if frame.f_globals.get("__name__", "").startswith(modules):
                threading.setprofile_all_threads(None)
                with self._changed:
                    parked.set()
                    self._changed.notify_all()
                never.wait()

        threading.setprofile_all_threads(hold)
        with self._changed:
            stopped = self._changed.wait_for(
                lambda: parked.is_set() or self._unfinished == 0, timeout)
            idle = self._unfinished == 0
        if idle and not parked.is_set():
            threading.setprofile_all_threads(None)
        return stopped

    def wait_then_park(self, wait: float, modules: Callable[[], tuple[str, ...]],
                       park_wait: float) -> int:
        """At exit: wait at most `wait` seconds for the tasks, then park the thread in the
        code of `modules()` (asked only then: a task may load that code while exit waits),
        for at most `park_wait` more seconds; return how many tasks are unfinished."""
        if not self.wait(wait):
            return 0
        if not self.park(modules(), park_wait):
            log.warning("byllm-distill: the background task did not stop within %g s of "
                        "exit giving up on it (it is not in student code); exiting without "
                        "it.", park_wait)
        return self.unfinished()
