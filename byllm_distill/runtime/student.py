"""The student as a byLLM model: `StudentLLM` answers one call site from its local GGUF.

It reads the live call's arguments with `capture.args_json` (the shape stored in
`Record.args`, so the prompt is the one training used), generates with the site's engine
(grammar-bound, greedy; see engine.py), reports the raw text through
`capture.note_response` so capture records it, and returns
`CompletionResult(output=mt_run.parse_response(text))`, so byLLM's own parsing, typing and
retry rules apply exactly as for a hosted model. A student refuses calls from another site,
calls with tools and streaming calls; those belong to the teacher.

Build one with `student_model(site)` (the registry's active version, else the newest) or
`StudentLLM(model_name=..., config={"site": ..., "folder": ...})`. Importing this module
imports jaclang and byLLM.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

# litellm (loaded by byLLM) otherwise fetches its price list from the internet at import.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import jaclang  # noqa: E402, F401 - registers the .jac importer byLLM's modules need
from byllm.llm import BaseLLM  # noqa: E402
from byllm.types import CompletionResult  # noqa: E402

from byllm_distill.capture import args_json, note_response  # noqa: E402
from byllm_distill.errors import DistillError  # noqa: E402
from byllm_distill.runtime.engine import Engine, engine_for  # noqa: E402
from byllm_distill.sites import describe  # noqa: E402


class StudentLLM(BaseLLM):
    """A byLLM model serving one call site; `config` holds `site` and optionally `folder`
    (a version folder), `version` and `data_dir`."""

    def engine(self) -> Engine:
        config = self.config or {}
        site = config.get("site")
        if not site:
            raise DistillError("StudentLLM needs config={'site': 'module.function', ...}; "
                               "build it with byllm_distill.runtime.student.student_model().")
        folder, data_dir = config.get("folder"), config.get("data_dir")
        return engine_for(site, data_dir=Path(data_dir) if data_dir else None,
                          version=config.get("version"),
                          folder=Path(folder) if folder else None)

    def expected_wait_ms(self) -> float:
        """How long a call arriving now would queue for this student (the router's wait
        budget, `max_wait_ms`)."""
        return self.engine().expected_wait_ms()

    def dispatch_no_streaming(self, mt_run: Any) -> CompletionResult:
        engine = self.engine()
        key = describe(mt_run).key
        if key != engine.spec.site:
            raise DistillError(f"this student serves {engine.spec.site}, not {key}; route "
                               f"{key} to its own student or to the teacher.")
        if mt_run.tools:
            raise DistillError(f"{key} passes tools; students answer tool-free calls only.")
        generation = engine.generate(args_json(mt_run))
        mt_run.add_message({"role": "assistant", "content": generation.text})
        note_response(generation.text, usage=generation.usage, model=self.model_name, cost=0.0)
        return CompletionResult(output=mt_run.parse_response(generation.text), tool_calls=[],
                                usage=generation.usage)

    async def adispatch_no_streaming(self, mt_run: Any) -> CompletionResult:
        return await asyncio.to_thread(self.dispatch_no_streaming, mt_run)

    def dispatch_streaming(self, mt_run: Any) -> Any:
        raise DistillError("students do not stream; call the site without stream=True or "
                           "route it to the teacher.")

    def _get_ctx_window(self, call_params: dict) -> int:
        # No context window to manage; also keeps byLLM from asking litellm about a model
        # name it has never heard of.
        return 0


def student_model(site: str, version: int | None = None, data_dir: Path | None = None,
                  folder: Path | None = None) -> StudentLLM:
    """A `StudentLLM` for `site`; loading happens on the first call."""
    config: dict[str, Any] = {"site": site}
    if version is not None:
        config["version"] = version
    if data_dir is not None:
        config["data_dir"] = str(data_dir)
    if folder is not None:
        config["folder"] = str(folder)
    label = f"v{version}" if version is not None else (Path(folder).name if folder else "active")
    return StudentLLM(model_name=f"student:{site}@{label}", config=config)

