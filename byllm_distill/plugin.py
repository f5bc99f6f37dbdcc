"""The jaclang plugin: every `by llm()` call passes through byllm-distill.

jaclang's plugin manager calls the implementation registered *last* first, and loads
entry points in no fixed order. So this module makes sure byLLM's own plugin is
registered before ours (the loader then skips byLLM's entry point), then registers
`DistillPlugin`; our `call_llm` / `acall_llm` run first: `attach.handle_call` captures and
routes, and delegates to the model (a `distill()`-wrapped model is unwrapped first, so a
call is captured once when both are in use).
jaclang loads this module through the `jac` entry point; do not import it before jaclang.
"""

from __future__ import annotations

from typing import Any

import byllm.plugin as byllm_plugin
from jaclang.jac0core.runtime import hookimpl, plugin_manager

from byllm_distill.attach import PLUGIN_NAME, ahandle_call, handle_call


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
        plugin_manager.register(DistillPlugin, name=PLUGIN_NAME)


register()
