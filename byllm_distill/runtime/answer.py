"""A trained version as an answer function: what the worker's held-out evaluation and
`eval` ask (scoring.answer_with_student), through the runtime engine (grammar-bound, at
the version's serving settings). Importing this module loads no llama.cpp."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from byllm_distill.errors import DistillError, NotFoundError

if TYPE_CHECKING:
    from byllm_distill.registry import Version


def student_label(site: str, version: Version) -> str:
    """The model name evaluation records carry, as the worker's held-out evaluation does."""
    return f"student:{site}@v{version.number}"


def engine_loader(site: str, version: Version) -> Callable[[dict[str, Any]], tuple[str, float]]:
    """Answer with the version's GGUF through the runtime engine (grammar-bound, greedy)."""
    try:
        from byllm_distill.runtime.engine import engine_for

        engine = engine_for(site, folder=version.path, version=version.number)
    except ModuleNotFoundError as exc:
        if (exc.name or "").startswith("byllm_distill"):
            raise NotFoundError(f"no trained student for {site}; run `byllm-distill train "
                                f"{site}` (the student runtime is not installed).") from exc
        raise DistillError(f"the student runtime needs {exc.name}; install it with "
                           "`pip install 'byllm-distill[serve]'`.") from exc

    def answer(args: dict[str, Any]) -> tuple[str, float]:
        generation = engine.generate(args)
        return generation.text, 1000 * generation.seconds

    return answer
