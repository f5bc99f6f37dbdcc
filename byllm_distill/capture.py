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
"""

from __future__ import annotations

import atexit
import contextvars
import json
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from byllm_distill.agreement import agreement
from byllm_distill.config import DistillConfig, load_config
from byllm_distill.drops import DropLog
from byllm_distill.errors import DistillError, SerializationError, StoreError
from byllm_distill.serialize import to_jsonable
from byllm_distill.sites import describe
from byllm_distill.store import Record, RecordFilter, Store

log = logging.getLogger("byllm_distill")

_active: contextvars.ContextVar[CallRecorder | None] = contextvars.ContextVar(
    "byllm_distill_recorder", default=None
)
_REDACTED = "[REDACTED]"
# While the store is unreachable the writer holds back at most this many records and
# retries this often; what is still held back at exit is counted as dropped.
HOLD_BACK_MAX = 10_000
RETRY_S = 2.0


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


@dataclass
class CallRecorder:
    """What the provider saw and answered during one `by llm()` call (all attempts)."""

    params: dict[str, Any] | None = None
    texts: list[str] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)
    cost: float | None = None
    served_by: str | None = None

    def observe(self, params: dict[str, Any], response: Any) -> None:
        if self.params is None:
            self.params = {"messages": params.get("messages"),
                           "response_format": params.get("response_format")}
        choices = _get(response, "choices") or []
        message = _get(choices[0], "message") if choices else None
        self.texts.append(str(_get(message, "content") or ""))
        self.served_by = _get(response, "model") or self.served_by
        usage = _get(response, "usage")
        for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
            value = _get(usage, key)
            if isinstance(value, int):
                self.usage[key] = self.usage.get(key, 0) + value
        cost = _response_cost(response)
        if cost is not None:
            self.cost = (self.cost or 0.0) + cost


def _response_cost(response: Any) -> float | None:
    hidden = getattr(response, "_hidden_params", None) or {}
    cost = hidden.get("response_cost") if isinstance(hidden, dict) else None
    if cost is None and hasattr(response, "_hidden_params"):
        import litellm  # already imported by byLLM; here only for its price table

        try:
            cost = litellm.completion_cost(completion_response=response)
        except Exception:  # noqa: BLE001 - unknown price is normal, not an error
            cost = None
    return float(cost) if isinstance(cost, int | float) else None


def note_response(text: str, usage: dict[str, int] | None = None, model: str | None = None,
                  cost: float | None = None) -> None:
    """For byLLM models that do not go through a provider (offline teachers, students):
    report the raw text answered so capture records it."""
    recorder = _active.get()
    if recorder is None:
        return
    recorder.texts.append(text)
    for key, value in (usage or {}).items():
        recorder.usage[key] = recorder.usage.get(key, 0) + int(value)
    recorder.served_by = model or recorder.served_by
    if cost is not None:
        recorder.cost = (recorder.cost or 0.0) + cost


_taps_installed = False


def install_provider_taps() -> None:
    """Observe each provider request/response of `byllm.llm.Model` for the active recorder.

    byLLM keeps neither the exact request nor the token usage after `invoke` returns, so
    capture wraps the two provider entry points (`model_call_no_stream` and its async
    twin, the methods byLLM documents for subclasses to implement). Outside a capture the
    wrappers only read a context variable.
    """
    global _taps_installed
    if _taps_installed:
        return
    from byllm.llm import Model

    sync_call = Model.model_call_no_stream
    async_call = Model.model_call_no_stream_async

    def model_call_no_stream(self: Any, params: dict) -> Any:
        response = sync_call(self, params)
        _observe(params, response)
        return response

    async def model_call_no_stream_async(self: Any, params: dict) -> Any:
        response = await async_call(self, params)
        _observe(params, response)
        return response

    Model.model_call_no_stream = model_call_no_stream
    Model.model_call_no_stream_async = model_call_no_stream_async
    _taps_installed = True


def _observe(params: dict, response: Any) -> None:
    recorder = _active.get()
    if recorder is None:
        return
    try:
        recorder.observe(params, response)
    except Exception as exc:  # noqa: BLE001 - capture boundary: never break the call
        log.debug("byllm-distill: could not read provider response: %r", exc)


class _Writer(threading.Thread):
    """Commits queued records in batches; opens the store lazily, in this thread."""

    def __init__(self, config: DistillConfig, drops: DropLog) -> None:
        super().__init__(name="byllm-distill-writer", daemon=True)
        self.config = config
        self.drops = drops
        self.queue: queue.Queue[Record | threading.Event] = queue.Queue(maxsize=10_000)
        self._store: Store | None = None
        self._open_error: StoreError | None = None
        self._validation_warned = False
        self._next_open = 0.0
        # Records whose write failed because the store was unreachable, oldest first,
        # written before anything newer once it answers again (see `_write`).
        self.pending: list[Record] = []
        self._outage_warned = False
        # A database server can restart and come back; a SQLite file that cannot be
        # opened is a local problem that waiting does not fix, so its records are dropped.
        self._networked = not config.database_url.startswith("sqlite")

    def submit(self, record: Record) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.drops.add("capture queue full", 1, "the store is slower than the calls")

    def flush(self, timeout: float = 30.0) -> bool:
        """Write everything queued so far; False if that timed out or records are still
        held back because the store is unreachable."""
        done = threading.Event()
        self.queue.put(done)
        return done.wait(timeout) and not self.pending

    def close(self, timeout: float = 30.0) -> None:
        """At exit: a last write; records the store never took are counted as dropped."""
        self.flush(timeout)
        if self.pending:
            held, self.pending = self.pending, []
            self.drops.add("store unavailable", len(held),
                           "the store was still unreachable when the program exited")

    def run(self) -> None:
        while True:
            try:
                item = self.queue.get(timeout=RETRY_S if self.pending else None)
            except queue.Empty:
                self._write([])  # retry what the store refused while it was down
                continue
            batch: list[Record] = []
            events: list[threading.Event] = []
            while True:
                if isinstance(item, threading.Event):
                    events.append(item)
                else:
                    batch.append(item)
                if len(batch) >= 256:
                    break
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
            try:
                self._write(batch)
            except Exception as exc:  # noqa: BLE001 - the writer thread must survive anything
                self.drops.add("unexpected error", len(batch), f"{type(exc).__name__}: {exc}")
            for event in events:
                event.set()

    def _write(self, batch: list[Record]) -> None:
        self._validate(batch)
        if self.pending:
            batch = self._not_yet_stored(self.pending) + batch
            self.pending = []
        if not batch:
            return
        for attempt in range(3):
            try:
                self._open().add_records(batch)
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

    def _validate(self, batch: list[Record]) -> None:
        """Attach verdicts here, off the caller's thread; a record is stored either way."""
        from byllm_distill.validators import registry

        for record in batch:
            if record.verdicts is not None:
                continue  # validated on the caller's thread already (router decisions)
            try:
                record.verdicts = registry.validate(record)
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


class Capture:
    """Records calls for one process. Get the shared one with `get_capture()`."""

    def __init__(self, config: DistillConfig) -> None:
        self.config = config
        self.drops = DropLog(config.data_dir)
        self._writer: _Writer | None = None
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.config.capture

    def _writer_thread(self) -> _Writer:
        if self._writer is None:
            with self._lock:
                if self._writer is None:
                    writer = _Writer(self.config, self.drops)
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
        outcome = self.run(model, mt_run, source, route=route)
        if outcome.error is not None:
            raise outcome.error
        return outcome.result

    async def acall(self, model: Any, mt_run: Any, source: str = "teacher") -> Any:
        """`await model.ainvoke(mt_run=mt_run)`, recorded."""
        if not self.enabled or mt_run.stream:
            return await model.ainvoke(mt_run=mt_run)
        pending = self._begin(model, mt_run)
        if pending is None:
            return await model.ainvoke(mt_run=mt_run)
        token = _active.set(pending.recorder)
        start = time.perf_counter()
        try:
            result = await model.ainvoke(mt_run=mt_run)
        except BaseException as exc:
            self._finish(pending, model, start, Outcome(error=exc), source)
            raise
        finally:
            _active.reset(token)
        self._finish(pending, model, start, Outcome(result=result), source)
        return result

    def run(self, model: Any, mt_run: Any, source: str = "teacher", version: int | None = None,
            validate_now: bool = False, reference: Any = None,
            route: str | None = None) -> Outcome:
        """Invoke and record, returning the result or the error instead of raising it.

        `validate_now` attaches verdicts before returning (the router needs them to decide
        on a fallback); `reference` is the teacher's answer to the same input, for the
        record's agreement score. The outcome's `record` is None when capture failed.
        """
        pending = self._begin(model, mt_run)
        token = _active.set(pending.recorder) if pending is not None else None
        start = time.perf_counter()
        try:
            outcome = Outcome(result=model.invoke(mt_run=mt_run))
        except BaseException as exc:
            outcome = Outcome(error=exc)
        finally:
            if token is not None:
                _active.reset(token)
        outcome.record = self._finish(pending, model, start, outcome, source, version,
                                      validate_now, reference, route)
        return outcome

    def _begin(self, model: Any, mt_run: Any) -> _Pending | None:
        try:
            install_provider_taps()
            return _Pending(CallRecorder(), to_jsonable(mt_run.get_msg_list()), mt_run)
        except Exception as exc:  # noqa: BLE001 - capture boundary
            self.drops.add("cannot read the prompt", 1, f"{type(exc).__name__}: {exc}")
            return None

    def _finish(self, pending: _Pending | None, model: Any, start: float, outcome: Outcome,
                source: str, version: int | None = None, validate_now: bool = False,
                reference: Any = None, route: str | None = None) -> Record | None:
        if pending is None:
            return None
        latency_ms = (time.perf_counter() - start) * 1000.0
        try:
            record = build_record(pending, model, outcome.result, outcome.error, latency_ms,
                                  source)
            record.version, record.route = version, route
            if reference is not None and record.status == "ok":
                record.agreement = round(agreement(record.output, to_jsonable(reference)), 4)
            if validate_now:
                from byllm_distill.validators import registry

                record.verdicts = registry.validate(record)
        except SerializationError as exc:
            self.drops.add("value does not serialize", 1, str(exc))
            return None
        except Exception as exc:  # noqa: BLE001 - capture boundary
            self.drops.add("cannot build record", 1, f"{type(exc).__name__}: {exc}")
            return None
        try:
            self._writer_thread().submit(record)
        except Exception as exc:  # noqa: BLE001 - capture boundary
            self.drops.add("cannot queue record", 1, f"{type(exc).__name__}: {exc}")
        return record


@dataclass
class Outcome:
    """What one recorded call produced: a result or an error, and its record."""

    result: Any = None
    error: BaseException | None = None
    record: Record | None = None


@dataclass
class _Pending:
    recorder: CallRecorder
    prompt: list[Any]
    mt_run: Any


def args_json(mt_run: Any) -> dict[str, Any]:
    """Arguments by parameter name (byLLM keys positional ones by index)."""
    import inspect

    mtir = mt_run.mtir
    func = getattr(mtir.caller, "__func__", mtir.caller)
    try:
        names = [n for n in inspect.signature(func).parameters if n != "self"]
    except (TypeError, ValueError):
        names = []
    out: dict[str, Any] = {}
    for key, value in mtir.args.items():
        name = names[key] if isinstance(key, int) and key < len(names) else str(key)
        out[name] = to_jsonable(value)
    caller_self = getattr(mtir.caller, "__self__", None)
    if caller_self is not None:
        out = {"self": to_jsonable(caller_self), **out}
    return out


def _secrets(model: Any) -> list[str]:
    found = []
    for value in (getattr(model, "api_key", None), (getattr(model, "config", None) or {}).get(
            "api_key") if isinstance(getattr(model, "config", None), dict) else None):
        if isinstance(value, str) and len(value) >= 4:
            found.append(value)
    return found


def _scrub(value: Any, secrets: list[str]) -> Any:
    if not secrets:
        return value
    text = json.dumps(value, ensure_ascii=False)
    if not any(s in text for s in secrets):
        return value
    for secret in secrets:
        text = text.replace(secret, _REDACTED)
    return json.loads(text)


def build_record(pending: _Pending, model: Any, result: Any, error: BaseException | None,
                 latency_ms: float, source: str) -> Record:
    recorder, mt_run = pending.recorder, pending.mt_run
    site = describe(mt_run)
    params = recorder.params or {}
    messages = to_jsonable(params.get("messages")) if params.get("messages") else pending.prompt
    schema = to_jsonable(params.get("response_format")) if params else site.schema
    output = None if error is not None else to_jsonable(result)
    if recorder.texts:
        raw = recorder.texts[-1]
    elif error is None:
        raw = result if isinstance(result, str) else json.dumps(output, ensure_ascii=False)
    else:
        raw = None
    usage = dict(recorder.usage)
    if len(recorder.texts) > 1:
        usage["attempts"] = len(recorder.texts)
    secrets = _secrets(model)
    return Record(
        site=site.key,
        fingerprint=site.fingerprint,
        model=str(recorder.served_by or getattr(model, "model_name", type(model).__name__)),
        source=source,
        messages=_scrub(messages, secrets),
        schema=schema,
        args=_scrub(args_json(mt_run), secrets),
        output_raw=_scrub(raw, secrets),
        output=_scrub(output, secrets),
        latency_ms=round(latency_ms, 3),
        usage=usage,
        cost=recorder.cost,
        status="error" if error is not None else "ok",
        error=_scrub(f"{type(error).__name__}: {error}", secrets) if error is not None else None,
    )


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


def reset_capture() -> None:
    """Forget the process-wide `Capture` (after flushing it): config is re-read next call."""
    global _capture
    with _capture_lock:
        if _capture is not None:
            _capture.flush()
        _capture = None
