"""Teachers for the RPG showcase.

`offline_designer(seed)` is the task's offline teacher (registered by plugin.py, so
`byllm_distill.teacher("rpg")` returns it unless `BYLLM_DISTILL_TEACHER` names a hosted
model, e.g. `gpt-4o`); `make_teacher()` is that call, for programs written before it.
The offline designer is an honest stand-in for a hosted model, not a language model: a
procedural level designer (generator.py) that reads the call's typed
inputs and answers with JSON text, which then goes through byLLM's normal output path
(`mt_run.parse_response`) exactly as a provider's answer would. It lets the whole loop run
with no API key. Imported from Jac programs, so jaclang is already loaded.
"""

from __future__ import annotations

import json
import logging
import random
import threading
from collections import Counter
from typing import Any

from byllm.llm import BaseLLM

from byllm_distill.capture import args_json
from byllm_distill.code_model import CodeModel
from byllm_distill.errors import DistillError
from byllm_distill.rpg.generator import design_level, design_map
from byllm_distill.rpg.mistakes import inject
from byllm_distill.serialize import dumps_canonical

OFFLINE_MODEL_NAME = "offline-designer"


class OfflineDesigner(CodeModel):
    """A byLLM model that designs `Level`s and `Map`s procedurally, seeded."""

    seed: int = 0
    errors: float = 0.0  # the fraction of answers given a mistake (rpg/mistakes.py)
    _asked: dict | None = None
    _lock: threading.Lock = threading.Lock()
    # How many mistakes of each mode (rpg/mistakes.py) this designer has made.
    mistakes: Counter | None = None

    def reseed(self, seed: int) -> None:
        """Start a new, reproducible sequence of designs (one per corpus run)."""
        with self._lock:
            self.seed = seed
            self._asked = {}

    def _seed(self, args: dict[str, Any]) -> str:
        """Seeded by the input and how often it was asked: asking one input again (the
        router's teacher repeats) gives another design and leaves every other answer as
        it would have been."""
        key = dumps_canonical(args)
        with self._lock:
            if self._asked is None:
                self._asked = {}
            self._asked[key] = asked = self._asked.get(key, 0) + 1
        return f"{self.seed}:{asked}:{key}"

    def _err(self, kind: str, data: dict, args: dict[str, Any], seed: str) -> dict:
        """`data`, or a copy with a mistake for the `errors` fraction of answers; drawn
        from a separate rng so the designs themselves do not change."""
        if self.errors <= 0.0:
            return data
        rng = random.Random(f"mistake:{seed}")
        if rng.random() >= self.errors:
            return data
        broken, mode = inject(kind, data, args, rng)
        if mode is not None:
            with self._lock:
                if self.mistakes is None:
                    self.mistakes = Counter()
                self.mistakes[mode] += 1
        return broken

    def answer(self, mt_run: Any) -> str:
        args = args_json(mt_run)
        kind = getattr(mt_run.resp_type, "__name__", "")
        seed = self._seed(args)
        rng = random.Random(seed)
        if kind == "Level":
            data = design_level(args.get("last_levels") or [], int(args["difficulty"]),
                                int(args["level_width"]), int(args["level_height"]), rng)
        elif kind == "Map":
            data = design_map(args["level"], rng)
        else:
            raise DistillError(
                f"the offline designer only answers Level and Map calls, not {kind or 'str'}; "
                "set BYLLM_DISTILL_TEACHER to a litellm model name for other call sites."
            )
        return json.dumps(self._err(kind, data, args, seed))


def offline_designer(seed: int = 0) -> BaseLLM:
    """The offline designer, with the configured simulated mistake rate (settings.py)."""
    from byllm_distill.rpg.settings import rpg_settings

    try:
        errors = rpg_settings().teacher_errors
    except DistillError as exc:  # the program still runs, without simulated mistakes
        logging.getLogger("byllm_distill").warning(
            "byllm-distill: no simulated teacher mistakes: %s", exc)
        errors = 0.0
    designer = OfflineDesigner(model_name=OFFLINE_MODEL_NAME, errors=errors)
    designer.reseed(seed)
    return designer


def make_teacher(seed: int = 0) -> BaseLLM:
    """`byllm_distill.teacher("rpg", seed)`: the hosted teacher if one is configured, else
    the offline designer."""
    from byllm_distill.teachers import teacher

    return teacher("rpg", seed)
