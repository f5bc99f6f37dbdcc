"""What the provider saw and answered during one `by llm()` call.

Capture sets a `CallRecorder` in a context variable for the duration of a call; the
provider taps (`install_provider_taps`) and `note_response` (for byLLM models that do not go
through a provider: offline teachers, students) add to it. Outside a capture both only read
the context variable.
"""

from __future__ import annotations

import contextvars
import logging
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("byllm_distill")

active: contextvars.ContextVar[CallRecorder | None] = contextvars.ContextVar(
    "byllm_distill_recorder", default=None
)


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


@dataclass(slots=True)
class CallRecorder:
    """What the provider saw and answered during one `by llm()` call (all attempts)."""

    params: dict[str, Any] | None = None
    texts: list[str] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)
    cost: float | None = None  # what the responses came priced with
    served_by: str | None = None
    unpriced: list[Any] = field(default_factory=list)  # responses litellm may price later

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
        hidden = getattr(response, "_hidden_params", None)
        cost = hidden.get("response_cost") if isinstance(hidden, dict) else None
        if isinstance(cost, int | float):
            self.cost = (self.cost or 0.0) + float(cost)
        elif hasattr(response, "_hidden_params"):  # a litellm response without a price
            self.unpriced.append(response)  # priced by `total_cost`, off the caller's thread

    def total_cost(self) -> float | None:
        """The call's cost: the prices the responses came with, plus litellm's price table
        for those that came without one (~50-70 µs per response, so `build_record` asks
        this on the writer thread, not the caller's). None when nothing had a price."""
        total = self.cost
        for response in self.unpriced:
            cost = _litellm_price(response)
            if cost is not None:
                total = (total or 0.0) + cost
        return total


def _litellm_price(response: Any) -> float | None:
    import litellm  # already imported by byLLM; here only for its price table

    try:
        cost = litellm.completion_cost(completion_response=response)
    except Exception:  # noqa: BLE001 - unknown price is normal, not an error
        return None
    return float(cost) if isinstance(cost, int | float) else None


def note_response(text: str, usage: dict[str, int] | None = None, model: str | None = None,
                  cost: float | None = None) -> None:
    """For byLLM models that do not go through a provider (offline teachers, students):
    report the raw text answered so capture records it."""
    recorder = active.get()
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
    recorder = active.get()
    if recorder is None:
        return
    try:
        recorder.observe(params, response)
    except Exception as exc:  # noqa: BLE001 - capture boundary: never break the call
        log.debug("byllm-distill: could not read provider response: %r", exc)
