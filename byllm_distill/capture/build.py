"""One call's record, built from what the recorder saw, with the model's API key scrubbed.

The messages and response schema are the request byLLM handed its provider when there was
one (else the prompt byLLM built and the site's schema); the raw text is the last attempt's.
Any occurrence of the model's key in the record text is replaced by `[REDACTED]`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from byllm_distill.capture.recorder import CallRecorder
from byllm_distill.serialize import to_jsonable
from byllm_distill.sites import describe
from byllm_distill.store import Record

_REDACTED = "[REDACTED]"


@dataclass
class Pending:
    """A call in progress: its recorder, the prompt byLLM built and the run."""

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


def build_record(pending: Pending, model: Any, result: Any, error: BaseException | None,
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
