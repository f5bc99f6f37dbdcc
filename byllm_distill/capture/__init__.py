"""Transparent capture of `by llm()` calls.

Contract: `Capture.call` / `Capture.acall` return exactly what `model.invoke` /
`model.ainvoke` return and raise exactly what they raise. Building and storing the record
happens beside the call: the record is queued to a background writer thread that commits
batches to the store, and is flushed when the process exits. Any failure in capture is
logged once per cause and counted (see drops.py); it never reaches the caller. When a
database server (PostgreSQL) is unreachable, records are held in memory (up to
`HOLD_BACK_MAX`) and written, oldest first and never twice, once it answers again; what
is still held back when the program exits is counted as dropped.

What is recorded: the call site and contract fingerprint, the exact messages sent and the
response schema (taken from the request byLLM hands to its provider when the call goes
through `byllm.llm.Model`, else from the prompt byLLM built), the raw text answered, the
parsed output, the arguments, latency, token usage, cost where litellm knows it, status
and error. API keys are never stored: the request's `api_key` is not read, and any
occurrence of the model's key in the record text is replaced before writing.
Streaming calls (`stream=True`) pass through uncaptured.

On the caller's thread capture only keeps what the call already has, as it is at the call
(mutable arguments, `self` and outputs are serialised there, immutable ones are not; see
build.py); building the record, scrubbing, validation and writing happen on the writer
thread. The one exception is `run(hand_back=True)`: the router builds the student's record
on its own thread, scores it itself (scoring.py) to decide a fallback, then hands it to
`store`. The writer starts with the process's first captured call and loads the
validators; that call, when synchronous, then waits for the loading to end (once, at most
`READY_WAIT_S`; usually it ended while the call waited on its model): loaded beside a
program that keeps the CPU busy, it interrupted the program thousands of times (see
writer.py).

The package, in the order a call goes through it: recorder.py (what the provider saw and
answered, in a context variable), build.py (what the caller's thread keeps, and the record
built from it, secrets scrubbed), this module (the call boundary) and writer.py (the
background writer, which builds, scores and commits).
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from byllm_distill.capture.build import Pending, args_json, build_record, finished
from byllm_distill.capture.recorder import (
    CallRecorder,
    active,
    install_provider_taps,
    note_response,
)
from byllm_distill.capture.writer import READY_WAIT_S, Writer, classify_store_error
from byllm_distill.config import DistillConfig, load_config
from byllm_distill.drops import DropLog
from byllm_distill.errors import DistillError, SerializationError
from byllm_distill.store import Record

__all__ = ["CallRecorder", "Capture", "Outcome", "args_json", "build_record",
           "classify_store_error", "current_capture", "get_capture", "install_provider_taps",
           "note_response", "reset_capture"]

log = logging.getLogger("byllm_distill")


class Capture:
    """Records calls for one process. Get the shared one with `get_capture()`."""

    def __init__(self, config: DistillConfig) -> None:
        self.config = config
        self.drops = DropLog(config.data_dir)
        self._writer: Writer | None = None
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.config.capture

    def _writer_thread(self) -> Writer:
        if self._writer is None:
            with self._lock:
                if self._writer is None:
                    on_written = None
                    if self.config.auto_train:
                        from byllm_distill.autotrain import AutoTrain

                        on_written = AutoTrain(self.config).check
                    writer = Writer(self.config, self.drops, on_written)
                    writer.start()
                    atexit.register(writer.close)
                    self._writer = writer
        return self._writer

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything captured so far is written (or dropped)."""
        return self._writer.flush(timeout) if self._writer is not None else True

    # -- the call boundary ------------------------------------------------------------

    def call(self, model: Any, mt_run: Any, source: str = "teacher",
             route: str | None = None) -> Any:
        """`model.invoke(mt_run=mt_run)`, recorded (`route`: why the router sent it here)."""
        if not self.enabled or mt_run.stream:
            return model.invoke(mt_run=mt_run)
        pending = self._begin(model, mt_run)
        if pending is None:
            return model.invoke(mt_run=mt_run)
        token = active.set(pending.recorder)
        start = time.perf_counter()
        try:
            result = model.invoke(mt_run=mt_run)
        except BaseException as exc:
            active.reset(token)
            self._finish(pending, model, start, None, exc, source, route=route, wait=True)
            raise
        active.reset(token)
        self._finish(pending, model, start, result, None, source, route=route, wait=True)
        return result

    async def acall(self, model: Any, mt_run: Any, source: str = "teacher") -> Any:
        """`await model.ainvoke(mt_run=mt_run)`, recorded."""
        if not self.enabled or mt_run.stream:
            return await model.ainvoke(mt_run=mt_run)
        pending = self._begin(model, mt_run)
        if pending is None:
            return await model.ainvoke(mt_run=mt_run)
        token = active.set(pending.recorder)
        start = time.perf_counter()
        try:
            result = await model.ainvoke(mt_run=mt_run)
        except BaseException as exc:
            active.reset(token)
            self._finish(pending, model, start, None, exc, source)
            raise
        active.reset(token)
        self._finish(pending, model, start, result, None, source)
        return result

    def run(self, model: Any, mt_run: Any, source: str = "teacher", version: int | None = None,
            route: str | None = None, hand_back: bool = False) -> Outcome:
        """Invoke and record, returning the result or the error instead of raising it.

        The record is built, scored and stored on the writer thread, and `outcome.record`
        is None. With `hand_back` it is built on this thread instead and returned in
        `outcome.record`, unscored and not stored: the caller scores it (scoring.py; the
        router decides a fallback on the student's verdicts) and hands it to `store`. It
        is None then only when capture failed (counted in drops).
        """
        pending = self._begin(model, mt_run)
        token = active.set(pending.recorder) if pending is not None else None
        start = time.perf_counter()
        try:
            outcome = Outcome(result=model.invoke(mt_run=mt_run))
        except BaseException as exc:
            outcome = Outcome(error=exc)
        finally:
            if token is not None:
                active.reset(token)
        outcome.record = self._finish(pending, model, start, outcome.result, outcome.error,
                                      source, version, route, hand_back, wait=not hand_back)
        return outcome

    def store(self, record: Record) -> None:
        """Queue a record from `run(hand_back=True)` (scored or not) for the writer."""
        try:
            self._writer_thread().submit(record)
        except Exception as exc:  # noqa: BLE001 - capture boundary
            self.drops.add("cannot queue record", 1, f"{type(exc).__name__}: {exc}")

    def _begin(self, model: Any, mt_run: Any) -> Pending | None:
        try:
            install_provider_taps()
            pending = Pending(CallRecorder(), list(mt_run.messages), mt_run)
        except Exception as exc:  # noqa: BLE001 - capture boundary
            self.drops.add("cannot read the prompt", 1, f"{type(exc).__name__}: {exc}")
            return None
        if self._writer is None:
            # Started with the first call, so that its start-up (writer.py) runs while
            # this call waits on its model.
            try:
                self._writer_thread()
            except Exception as exc:  # noqa: BLE001 - capture boundary
                self.drops.add("cannot queue record", 1, f"{type(exc).__name__}: {exc}")
                return None
        return pending

    def _finish(self, pending: Pending | None, model: Any, start: float, result: Any,
                error: BaseException | None, source: str, version: int | None = None,
                route: str | None = None, hand_back: bool = False,
                wait: bool = False) -> Record | None:
        """Keep what the call has, as it is now (build.finished); the rest is the writer's,
        or this thread's with `hand_back`. With `wait`, until the writer's start-up is
        over (once; at most READY_WAIT_S): see writer.py. Async calls do not wait (that
        would block their event loop)."""
        if pending is None:
            return None
        latency_ms = (time.perf_counter() - start) * 1000.0
        try:
            call = finished(pending, model, result, error, latency_ms, time.time_ns(), source,
                            version, route)
            record = build_record(call) if hand_back else None
        except SerializationError as exc:
            self.drops.add("value does not serialize", 1, str(exc))
            return None
        except Exception as exc:  # noqa: BLE001 - capture boundary
            self.drops.add("cannot build record", 1, f"{type(exc).__name__}: {exc}")
            return None
        if record is not None:
            return record
        try:
            writer = self._writer or self._writer_thread()
            if wait and not writer.ready.is_set():
                writer.ready.wait(READY_WAIT_S)
            writer.submit(call)
        except Exception as exc:  # noqa: BLE001 - capture boundary
            self.drops.add("cannot queue record", 1, f"{type(exc).__name__}: {exc}")
        return None


@dataclass
class Outcome:
    """What one recorded call produced: a result or an error, and (from
    `run(hand_back=True)`) its record."""

    result: Any = None
    error: BaseException | None = None
    record: Record | None = None


_capture: Capture | None = None
_capture_lock = threading.Lock()
_disabled_reason_logged = False


def get_capture() -> Capture | None:
    """The process-wide `Capture`, or None when the configuration is invalid (logged)."""
    global _capture, _disabled_reason_logged
    if _capture is None:
        with _capture_lock:
            if _capture is None:
                try:
                    _capture = Capture(load_config())
                except DistillError as exc:
                    if not _disabled_reason_logged:
                        _disabled_reason_logged = True
                        log.warning("byllm-distill: capture is off for this run: %s", exc)
                    return None
    return _capture


def current_capture() -> Capture | None:
    """The process-wide `Capture` if one was made; never makes one."""
    return _capture


def reset_capture() -> None:
    """Forget the process-wide `Capture` (after flushing it): config is re-read next call."""
    global _capture
    with _capture_lock:
        if _capture is not None:
            _capture.flush()
        _capture = None
