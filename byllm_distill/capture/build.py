"""One call's record: what the caller's thread keeps of a call, and the record built from it
(on the writer thread) with the model's API key scrubbed.

On the caller's thread capture only takes what the call already has, as it is at the
call (`Pending` before it, `Call` after): the message list byLLM built (a shallow copy:
byLLM only appends to it, and the router restores it in place), the arguments, `self`
and the output through `serialize.snapshot` (immutable values as they are, anything
mutable serialised at once, so a program that changes a list or `self` right after the
call does not change its record), latency, the error's text and the time. Everything else,
building the messages' JSON, naming arguments, serialising the immutable rest, the site's
fingerprint, pricing a response litellm did not price and scrubbing the key, is
`build_record`, which capture runs on its writer thread (or on the caller's, for the
router, which scores the record before answering).

The messages and response schema are the request byLLM handed its provider when there was
one (else the prompt byLLM built and the site's schema); the raw text is the last attempt's.
Any occurrence of the model's key in the record text is replaced by `[REDACTED]`.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import types
import weakref
from dataclasses import dataclass
from typing import Any

from byllm_distill.capture.recorder import CallRecorder
from byllm_distill.records import new_record_id, utc_now
from byllm_distill.serialize import snapshot, to_jsonable
from byllm_distill.sites import describe
from byllm_distill.store import Record

_REDACTED = "[REDACTED]"
_NAMES: weakref.WeakKeyDictionary[Any, list[str]] = weakref.WeakKeyDictionary()


@dataclass(slots=True)
class Pending:
    """A call in progress: its recorder, byLLM's message list before the call, the run."""

    recorder: CallRecorder
    messages: list[Any]
    mt_run: Any


@dataclass(slots=True)
class Call:
    """A finished call as the caller's thread leaves it: nothing here changes later."""

    pending: Pending
    model: Any
    args: dict[Any, Any]  # byLLM's keys (index or name) -> `snapshot` of the value
    self_value: Any  # `snapshot` of a method site's `self`; `_NO_SELF` for a function
    result: Any  # `snapshot` of the output (None on error)
    error: str | None  # "Type: message" of what the call raised
    latency_ms: float
    time_ns: int  # when the call returned: the record's id and `created_at`
    source: str
    version: int | None = None
    route: str | None = None


_NO_SELF = object()


def finished(pending: Pending, model: Any, result: Any, error: BaseException | None,
             latency_ms: float, time_ns: int, source: str, version: int | None = None,
             route: str | None = None) -> Call:
    """What the caller's thread keeps of a finished call (may raise SerializationError)."""
    mtir = pending.mt_run.mtir
    caller_self = getattr(mtir.caller, "__self__", None)
    return Call(pending, model, {key: snapshot(value) for key, value in mtir.args.items()},
                _NO_SELF if caller_self is None else snapshot(caller_self),
                None if error is not None else snapshot(result),
                f"{type(error).__name__}: {error}" if error is not None else None,
                latency_ms, time_ns, source, version, route)


def _param_names(caller: Any) -> list[str]:
    func = getattr(caller, "__func__", caller)
    try:
        return _NAMES[func]
    except (KeyError, TypeError):
        pass
    try:
        names = [n for n in inspect.signature(func).parameters if n != "self"]
    except (TypeError, ValueError):
        names = []
    with contextlib.suppress(TypeError):  # not weak-referenceable: named again next time
        _NAMES[func] = names
    return names


def _named(caller: Any, args: dict[Any, Any], self_value: Any) -> dict[str, Any]:
    """Arguments by parameter name (byLLM keys positional ones by index), `self` first."""
    names = _param_names(caller)
    out: dict[str, Any] = {}
    for key, value in args.items():
        name = names[key] if isinstance(key, int) and key < len(names) else str(key)
        out[name] = to_jsonable(value)
    if self_value is not _NO_SELF:
        out = {"self": to_jsonable(self_value), **out}
    return out


def args_json(mt_run: Any) -> dict[str, Any]:
    """The live call's arguments by parameter name, as `Record.args` stores them."""
    mtir = mt_run.mtir
    caller_self = getattr(mtir.caller, "__self__", None)
    return _named(mtir.caller, dict(mtir.args),
                  _NO_SELF if caller_self is None else caller_self)


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


def _prompt(pending: Pending) -> Any:
    # byLLM's own `get_msg_list`, over the copy of the message list taken before the call.
    view = types.SimpleNamespace(messages=pending.messages)
    return to_jsonable(type(pending.mt_run).get_msg_list(view))


def build_record(call: Call) -> Record:
    pending, model, error = call.pending, call.model, call.error
    recorder, mt_run = pending.recorder, pending.mt_run
    site = describe(mt_run)
    params = recorder.params or {}
    messages = to_jsonable(params.get("messages")) if params.get("messages") else _prompt(
        pending)
    schema = to_jsonable(params.get("response_format")) if params else site.schema
    output = None if error is not None else to_jsonable(call.result)
    if recorder.texts:
        raw = recorder.texts[-1]
    elif error is None:
        raw = call.result if isinstance(call.result, str) else json.dumps(
            output, ensure_ascii=False)
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
        source=call.source,
        messages=_scrub(messages, secrets),
        schema=schema,
        args=_scrub(_named(mt_run.mtir.caller, call.args, call.self_value), secrets),
        output_raw=_scrub(raw, secrets),
        output=_scrub(output, secrets),
        latency_ms=round(call.latency_ms, 3),
        usage=usage,
        cost=recorder.total_cost(),
        status="error" if error is not None else "ok",
        error=_scrub(error, secrets),
        id=new_record_id(call.time_ns),
        created_at=utc_now(call.time_ns),
        version=call.version,
        route=call.route,
    )

