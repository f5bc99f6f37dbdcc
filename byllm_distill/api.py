"""The Python API: byLLM's `by(model)` decorator, with capture.

byLLM's Python `by` calls the model directly, bypassing jaclang's `call_llm` hook, so
Python functions use this decorator instead to be captured the same way Jac ones are.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any


def by(model: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Like `byllm.lib.by(model)`: the decorated function's body is answered by `model`."""

    def decorator(caller: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(caller)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            import jaclang  # noqa: F401 - loads byLLM's .jac modules and our plugin
            from byllm.mtir import MTIR
            from byllm.plugin import fetch_mtir

            from byllm_distill.attach import handle_call

            invoke_args: dict[int | str, Any] = dict(enumerate(args))
            invoke_args.update(kwargs)
            mt_run = MTIR(caller=caller, args=invoke_args, call_params=model.call_params,
                          ir_info=fetch_mtir(caller)).runtime
            return handle_call(model, mt_run)

        return wrapped

    return decorator


def flush(timeout: float = 30.0) -> bool:
    """Block until background shadow work and every record captured so far in this process
    are written."""
    from byllm_distill import router
    from byllm_distill.capture import current_capture

    if router._router is not None:
        router._router.drain(timeout)
    capture = current_capture()
    return capture.flush(timeout) if capture is not None else True
