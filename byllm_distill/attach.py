"""How calls reach byllm-distill: the wrapping model, and the entry it shares with the hook.

Contract. `by llm()` compiles to a call of `model.invoke(mt_run=...)` (or `await
model.ainvoke(mt_run=...)` in an async ability) on whatever model object it is given, on
every Jac version, with or without plugins. `distill(model)` returns a `DistilledModel`
whose `invoke` / `ainvoke` run `handle_call` / `ahandle_call`: capture and routing with
the wrapped model as the teacher, exactly as the jaclang hook does (plugin.py calls the
same two functions), so call-site keys (from `mt_run`), records and routing are the
hook's. Tool calls and streaming pass through as they do there; `by llm(...)` calls the
model with the call's parameters, and what that returns is wrapped too.

When both are active (jaclang 0.16.7 loads the hook, and the program wraps its model) the
hook unwraps the model first (`unwrap`), so each call is captured and routed once. Every
attribute other than `invoke` / `ainvoke` (`model_name`, `call_params`, `config`, ...) is
the wrapped model's.

`attachment()` says, for `status`, how this process attaches: "hook", "wrapper", both or
neither (the wrapper is counted once a `DistilledModel` has been made).
"""

from __future__ import annotations

from typing import Any

PLUGIN_NAME = "byllm_distill"  # the name plugin.py registers its hooks under
_wrapped = 0  # DistilledModels made in this process
# (get_capture, get_router), imported at the first call: jaclang loads this module at
# start-up, and capture brings SQLAlchemy.
_entry: tuple[Any, Any] | None = None


def _import_entry() -> None:
    global _entry
    from byllm_distill.capture import get_capture
    from byllm_distill.router import get_router

    _entry = (get_capture, get_router)


def handle_call(model: Any, mt_run: Any) -> Any:
    """One `by llm()` call: captured and routed, `model` (unwrapped) as the teacher."""
    if _entry is None:
        _import_entry()
    get_capture, get_router = _entry
    model = unwrap(model)
    capture = get_capture()
    if capture is None:
        return model.invoke(mt_run=mt_run)
    router = get_router(capture)
    if router is None:
        return capture.call(model, mt_run)
    return router.call(model, mt_run)


async def ahandle_call(model: Any, mt_run: Any) -> Any:
    if _entry is None:
        _import_entry()
    get_capture, get_router = _entry
    model = unwrap(model)
    capture = get_capture()
    if capture is None:
        return await model.ainvoke(mt_run=mt_run)
    router = get_router(capture)
    if router is None:
        return await capture.acall(model, mt_run)
    return await router.acall(model, mt_run)


class DistilledModel:
    """A byLLM model that captures and routes every call, answering with `model`."""

    def __init__(self, model: Any) -> None:
        if not callable(getattr(model, "invoke", None)):
            raise TypeError(f"distill() needs a byLLM model (with invoke), got "
                            f"{type(model).__name__}")
        object.__setattr__(self, "model", model)

    def __call__(self, **params: Any) -> DistilledModel:
        """`by llm(temperature=...)`: byLLM calls the model with the call's parameters and
        uses what comes back; that stays wrapped."""
        result = self.model(**params)
        return self if result is self.model else DistilledModel(result)

    def invoke(self, mt_run: Any) -> Any:
        return handle_call(self.model, mt_run)

    async def ainvoke(self, mt_run: Any) -> Any:
        return await ahandle_call(self.model, mt_run)

    def __getattr__(self, name: str) -> Any:  # only for names this class does not have
        return getattr(object.__getattribute__(self, "model"), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.model, name, value)

    def __repr__(self) -> str:
        return f"distill({self.model!r})"


def distill(model: Any) -> DistilledModel:
    """`model` wrapped so that every `by llm()` call it answers is captured and routed:
    `glob llm = distill(Model(model_name="gpt-4o"));`. Wrapping twice is wrapping once."""
    global _wrapped
    if isinstance(model, DistilledModel):
        return model
    _wrapped += 1
    return DistilledModel(model)


def unwrap(model: Any) -> Any:
    return model.model if isinstance(model, DistilledModel) else model


def hook_active() -> bool:
    """Whether jaclang in this process calls byllm-distill's hook (imports jaclang)."""
    try:
        import jaclang  # noqa: F401 - loads the plugins
        from jaclang.jac0core.runtime import plugin_manager
    except ImportError:
        return False
    return any(name == PLUGIN_NAME for name, _ in plugin_manager.list_name_plugin())


def attachment() -> dict[str, Any]:
    """How this process attaches: the hook, the wrapper, both or neither, with the fix."""
    hook = hook_active()
    wrapper = _wrapped > 0
    how = ("hook and wrapper (each call captured once)" if hook and wrapper
           else "hook" if hook else "wrapper" if wrapper else "none")
    fix = None
    if not hook:
        fix = ("this jaclang does not call byllm-distill's plugin hook; wrap the program's "
               "model: `import from byllm_distill { distill }` and "
               "`glob llm = distill(Model(model_name=...));`")
    return {"how": how, "hook": hook, "wrapper": wrapper, "fix": fix}
