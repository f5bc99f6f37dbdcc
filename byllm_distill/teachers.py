"""`teacher(name)`: the model a program gives its `by llm()` calls when it wants to run with
or without an API key.

When the configuration's `teacher` names a litellm model (`BYLLM_DISTILL_TEACHER=gpt-4o`,
or `teacher = "gpt-4o"` in `[plugins.distill]`), that hosted model is returned; otherwise the
offline teacher the task plug-in `name` registered (`task.offline_teacher`, tasks.py),
made with `seed`. A name no task registered raises `DistillError` listing the known ones.
A bad configuration falls back to the offline teacher (capture reports the bad config), so
the program still runs. Imported from Jac programs, so byLLM is already loaded.
"""

from __future__ import annotations

from typing import Any

from byllm_distill import tasks
from byllm_distill.config import load_config
from byllm_distill.errors import DistillError


def teacher(name: str, seed: int = 0) -> Any:
    """The configured hosted teacher, else task `name`'s offline one (see above)."""
    try:
        hosted = load_config().teacher
    except DistillError:
        hosted = None
    if hosted:
        from byllm.llm import Model

        return Model(model_name=hosted)
    factories = tasks.load().offline_teachers
    if name not in factories:
        known = ", ".join(sorted(factories)) or "none"
        raise DistillError(f"no task registers an offline teacher named {name!r} (known: "
                           f"{known}); set BYLLM_DISTILL_TEACHER to a litellm model name.")
    return factories[name](seed)
