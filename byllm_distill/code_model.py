"""A byLLM model whose answers come from Python code, for offline teachers and stand-ins.

Subclass `CodeModel` and implement `answer(mt_run) -> str` (the answer as JSON text, or
plain text for a `str` site). The text then goes through byLLM's normal output path
(`mt_run.parse_response`) exactly as a provider's answer would, and is noted for capture
like any model's. Used by the RPG offline designer (rpg/teacher.py) and the triage example's
rule teacher. Imported from Jac programs, so jaclang is already loaded.
"""

from __future__ import annotations

from typing import Any

from byllm.llm import BaseLLM
from byllm.types import CompletionResult

from byllm_distill.capture import note_response


class CodeModel(BaseLLM):
    def answer(self, mt_run: Any) -> str:
        raise NotImplementedError(f"{type(self).__name__} must implement answer(mt_run)")

    def dispatch_no_streaming(self, mt_run: Any) -> CompletionResult:
        text = self.answer(mt_run)
        mt_run.add_message({"role": "assistant", "content": text})
        note_response(text, model=self.model_name, cost=0.0)
        return CompletionResult(output=mt_run.parse_response(text), tool_calls=[], usage={})

    async def adispatch_no_streaming(self, mt_run: Any) -> CompletionResult:
        return self.dispatch_no_streaming(mt_run)

    def _get_ctx_window(self, call_params: dict) -> int:
        # No context window to manage; also keeps byLLM from asking litellm about a model
        # name it has never heard of.
        return 0
