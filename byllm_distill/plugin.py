"""The jaclang plugin: every `by llm()` call passes through byllm-distill.

jaclang's plugin manager calls the implementation registered *last* first, and loads
entry points in no fixed order. So this module makes sure byLLM's own plugin is
registered before ours (the loader then skips byLLM's entry point), then registers
`DistillPlugin`; our `call_llm` / `acall_llm` run first and delegate to the model.
jaclang loads this module through the `jac` entry point; do not import it before jaclang.
"""

from __future__ import annotations

from typing import Any

import byllm.plugin as byllm_plugin
from jaclang.jac0core.runtime import hookimpl, plugin_manager

from byllm_distill.capture import get_capture
from byllm_distill.router import get_router


def handle_call(model: Any, mt_run: Any) -> Any:
    capture = get_capture()
    if capture is None:
        return model.invoke(mt_run=mt_run)
    router = get_router(capture)
    if router is None:
        return capture.call(model, mt_run)
    return router.call(model, mt_run)


async def ahandle_call(model: Any, mt_run: Any) -> Any:
    capture = get_capture()
    if capture is None:
        return await model.ainvoke(mt_run=mt_run)
    router = get_router(capture)
    if router is None:
        return await capture.acall(model, mt_run)
    return await router.acall(model, mt_run)


class DistillPlugin:
    """Hook implementations registered with jaclang's plugin manager."""

    @staticmethod
    @hookimpl
    def call_llm(model: Any, mt_run: Any) -> Any:
        return handle_call(model, mt_run)

    @staticmethod
    @hookimpl
    async def acall_llm(model: Any, mt_run: Any) -> Any:
        return await ahandle_call(model, mt_run)


def register() -> None:
    """Register byLLM's plugin, then ours, unless already done. Idempotent."""
    if not plugin_manager.is_registered(byllm_plugin.JacRuntime):
        plugin_manager.register(byllm_plugin.JacRuntime, name="byllm")
    if not plugin_manager.is_registered(DistillPlugin):
        plugin_manager.register(DistillPlugin, name="byllm_distill")


register()
