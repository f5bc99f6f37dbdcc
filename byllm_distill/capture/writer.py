"""The background writer: builds, scores and commits queued calls to the store in batches.

It starts with the first captured call and first loads what scoring needs (the validator
plug-ins and jsonschema: `ready` is set when that is done, whether it worked or not; a
failure shows in the first batch). Loading modules reads files, and every file read hands
the GIL to the program and back: done beside a program that keeps the CPU busy, it cost
such a program thousands of interruptions, so a synchronous call waits for `ready` once
(at most `READY_WAIT_S`, see capture/__init__.py). Then it takes what the caller's thread
kept of each call (build.Call) or a record already built
(and scored, by the router), builds the records (build.py), attaches verdicts to those not
yet scored (scoring.py), opens the store lazily, in its own thread, and never loses a
record silently: a failure is counted in the drop log with
its cause. While a database server is unreachable it holds records back (at most
`HOLD_BACK_MAX`), retries every `RETRY_S` seconds and writes them, oldest first and never
twice, once the server answers; a SQLite file that cannot be opened is a local problem
that waiting does not fix, so its records are dropped with the reason. After each write
(and at exit) it calls `on_written`, which `auto_train` uses (autotrain.py).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from byllm_distill.capture.build import Call, build_record
from byllm_distill.config import DistillConfig
from byllm_distill.drops import DropLog
from byllm_distill.errors import SerializationError, StoreError
from byllm_distill.store import Record, RecordFilter, Store

log = logging.getLogger("byllm_distill")
HOLD_BACK_MAX = 10_000
QUEUE_MAX = 10_000  # calls waiting for the writer; more are dropped, counted
# How long the writer gathers calls before building a batch, and how many make a batch
# at once (a full batch, or a flush, cuts the wait short). Each batch interrupts the
# program for its Python work and once more for each database statement (sqlite3 releases
# the GIL to run it); fewer, larger batches interrupt it less: with 0.1 s windows and 256
# calls, +46 us on benchmarks/capture_overhead.py's median call, with 0.5 s and 2,048 +5.
# The price: a process killed outright (no exit handlers) loses up to 0.5 s of calls.
BATCH_WINDOW_S = 0.5
BATCH_MAX = 2048
RETRY_S = 2.0
READY_WAIT_S = 1.0  # the most the first synchronous call waits for the writer's start-up


class Writer(threading.Thread):
    """Commits queued records in batches; opens the store lazily, in this thread."""

    def __init__(self, config: DistillConfig, drops: DropLog,
                 on_written: Callable[[Store, bool], object] | None = None) -> None:
        super().__init__(name="byllm-distill-writer", daemon=True)
        self.config = config
        self.drops = drops
        # Called with the store after records are written (False) and at exit (True):
        # `auto_train` (autotrain.py) looks for due sites there, off the caller's thread.
        self.on_written = on_written
        # A SimpleQueue (C, no condition variable): the caller's side of capture is one
        # `put`; `QUEUE_MAX` is checked with `qsize()`, so it is a bound, not an exact one.
        self.queue: queue.SimpleQueue[Call | Record | threading.Event] = queue.SimpleQueue()
        self._store: Store | None = None
        self._open_error: StoreError | None = None
        self._validation_warned = False
        self._next_open = 0.0
        # Records whose write failed because the store was unreachable, oldest first,
        # written before anything newer once it answers again (see `_write`).
        self.pending: list[Record] = []
        self._outage_warned = False
        # Cuts the batch window short: set by a flush and as the queue crosses a full
        # batch; the writer re-checks why it woke (`_gather`), so a stale wake is harmless.
        self._wake = threading.Event()
        self._flush_lock = threading.Lock()
        self._flushes = 0  # flushes asked for whose marker the writer has not taken yet
        self.ready = threading.Event()  # set once the writer's start-up is over
        # A database server can restart and come back; a SQLite file that cannot be
        # opened is a local problem that waiting does not fix, so its records are dropped.
        self._networked = not config.database_url.startswith("sqlite")

    def submit(self, item: Call | Record) -> None:
        waiting = self.queue.qsize()
        if waiting >= QUEUE_MAX:
            self.drops.add("capture queue full", 1, "the store is slower than the calls")
            return
        self.queue.put(item)
        if waiting + 2 == BATCH_MAX:
            # A full batch (the writer, waiting out its window, holds the first call of
            # it): no need to wait any longer. Set once, as the queue crosses the mark.
            self._wake.set()

    def flush(self, timeout: float = 30.0) -> bool:
        """Write everything queued so far; False if that timed out or records are still
        held back because the store is unreachable."""
        done = threading.Event()
        with self._flush_lock:
            self._flushes += 1
        self.queue.put(done)
        self._wake.set()
        return done.wait(timeout) and not self.pending

    def close(self, timeout: float = 30.0) -> None:
        """At exit: a last write; records the store never took are counted as dropped."""
        self.flush(timeout)
        if self.on_written is not None and self._store is not None:
            self.on_written(self._store, True)
        if self.pending:
            held, self.pending = self.pending, []
            self.drops.add("store unavailable", len(held),
                           "the store was still unreachable when the program exited")

    def run(self) -> None:
        self._load_scoring()
        while True:
            try:
                item = self.queue.get(timeout=RETRY_S if self.pending else None)
            except queue.Empty:
                self._write([])  # retry what the store refused while it was down
                continue
            if not isinstance(item, threading.Event):
                self._gather()
            batch: list[Call | Record] = []
            events: list[threading.Event] = []
            while True:
                if isinstance(item, threading.Event):
                    with self._flush_lock:
                        self._flushes -= 1
                    events.append(item)
                else:
                    batch.append(item)
                if len(batch) >= BATCH_MAX:
                    break
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
            try:
                self._write(self._built(batch))
            except Exception as exc:  # noqa: BLE001 - the writer thread must survive anything
                self.drops.add("unexpected error", len(batch), f"{type(exc).__name__}: {exc}")
            for event in events:
                event.set()

    def _gather(self) -> None:
        """Holding one call, wait for more (see BATCH_WINDOW_S) until a full batch is
        queued or a flush is asked for. The wake may be stale (set while the previous
        batch was gathered), so each wake-up re-checks; clearing before the check means a
        wake set after it is never missed."""
        deadline = time.monotonic() + BATCH_WINDOW_S
        while True:
            self._wake.clear()
            if self._flushes > 0 or self.queue.qsize() + 1 >= BATCH_MAX:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wake.wait(remaining)

    def _built(self, batch: list[Call | Record]) -> list[Record]:
        """The batch's records; a call whose record cannot be built is counted and left out."""
        records = []
        for item in batch:
            if isinstance(item, Record):
                records.append(item)
                continue
            try:
                records.append(build_record(item))
            except SerializationError as exc:
                self.drops.add("value does not serialize", 1, str(exc))
            except Exception as exc:  # noqa: BLE001 - one bad call must not lose the batch
                self.drops.add("cannot build record", 1, f"{type(exc).__name__}: {exc}")
        return records

    def _write(self, batch: list[Record]) -> None:
        self._validate(batch)
        if self.pending:
            batch = self._not_yet_stored(self.pending) + batch
            self.pending = []
        if not batch:
            return
        for attempt in range(3):
            try:
                store = self._open()
                store.add_records(batch)
                if self.on_written is not None:
                    self.on_written(store, False)
                if self._outage_warned:
                    self._outage_warned = False
                    log.warning("byllm-distill: the store answers again; %d held-back "
                                "records were written.", len(batch))
                return
            except StoreError as exc:
                cause = classify_store_error(str(exc))
                if cause == "store locked" and attempt < 2:
                    time.sleep(0.5)
                    continue
                if cause == "store unavailable" and self._networked:
                    self._hold_back(batch, exc)
                    return
                self.drops.add(cause, len(batch), str(exc))
                return
            except Exception as exc:  # noqa: BLE001 - writer thread must survive anything
                self.drops.add("unexpected error", len(batch), f"{type(exc).__name__}: {exc}")
                return

    def _hold_back(self, batch: list[Record], exc: StoreError) -> None:
        """Keep records the unreachable store refused, up to `HOLD_BACK_MAX`; older ones
        beyond that are counted as dropped."""
        overflow = len(batch) - HOLD_BACK_MAX
        if overflow > 0:
            self.drops.add("store unavailable", overflow,
                           f"more than {HOLD_BACK_MAX} records held back: {exc}")
            batch = batch[overflow:]
        self.pending = batch
        if not self._outage_warned:
            self._outage_warned = True
            log.warning("byllm-distill: the store is unreachable (%s); captured records are "
                        "held in memory (at most %d) and written when it answers again, "
                        "retrying every %.0f s.", exc, HOLD_BACK_MAX, RETRY_S)

    def _not_yet_stored(self, held: list[Record]) -> list[Record]:
        """Held-back records minus any the store did commit (a commit whose answer was
        lost with the connection), so a retry never writes a record twice."""
        try:
            store = self._open()
            stored: set[str] = set()
            for start in range(0, len(held), 500):
                ids = [r.id for r in held[start:start + 500]]
                stored.update(r.id for r in store.iter_records(RecordFilter(ids=ids),
                                                                with_verdicts=False))
        except Exception:  # noqa: BLE001 - still down: the write below holds them back again
            return held
        return [r for r in held if r.id not in stored]

    def _load_scoring(self) -> None:
        """Import what `_validate` needs and load the validator plug-ins, then set `ready`.
        A failure here meets `_validate` again and is reported there, per batch."""
        try:
            from byllm_distill.validators.registry import registry

            registry.load()
        except Exception as exc:  # noqa: BLE001 - reported by the first batch's validation
            log.debug("byllm-distill: loading the validators failed: %r", exc)
        finally:
            self.ready.set()

    def _validate(self, batch: list[Record]) -> None:
        """Score records here, off the caller's thread; a record is stored either way."""
        from byllm_distill.scoring import score

        for record in batch:
            if record.verdicts is not None:
                continue  # scored already, by the router (its decisions) or comparisons
            try:
                score(record)
            except Exception as exc:  # noqa: BLE001 - validation must not lose the record
                if not self._validation_warned:
                    self._validation_warned = True
                    log.warning("byllm-distill: validators could not run (%s: %s); records are "
                                "stored unvalidated, re-check with `byllm-distill validate`.",
                                type(exc).__name__, exc)

    def _open(self) -> Store:
        if self._store is None:
            if self._open_error is not None and time.monotonic() < self._next_open:
                raise self._open_error
            try:
                self._store = Store(self.config.database_url)
            except StoreError as exc:
                # Retry opening at most every few seconds, not once per record.
                self._open_error = exc
                self._next_open = time.monotonic() + 5.0
                raise
        return self._store


def classify_store_error(message: str) -> str:
    """A short, stable cause for a store failure (the full message goes in the detail)."""
    lowered = message.lower()
    for marker, cause in (("readonly", "store read-only"), ("read-only", "store read-only"),
                          ("locked", "store locked"), ("disk is full", "store full"),
                          ("database or disk is full", "store full"),
                          ("not a database", "store corrupt"), ("malformed", "store corrupt")):
        if marker in lowered:
            return cause
    return "store unavailable"
