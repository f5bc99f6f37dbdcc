"""The RPG showcase as a task plug-in (tasks.py): its validators, its report metrics and
fidelity distances, the text picture of a map that `version try` prints, and its
`byllm-distill rpg` commands (cli.py).

Built in (`tasks.BUILTIN`) and published as the `rpg` entry point of `byllm_distill.tasks`;
`disabled_validators = ["rpg"]` switches its validators off for a project.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from byllm_distill.rpg import report_metrics, validators

if TYPE_CHECKING:
    from byllm_distill.tasks import Task


def map_text(output: Any) -> str | None:
    from byllm_distill.rpg.render import to_ascii

    return to_ascii(output) if isinstance(output, dict) and "player_pos" in output else None


def register(task: Task) -> None:
    from byllm_distill.rpg.cli import rpg

    validators.register(task.validators)
    report_metrics.register(task.metrics)
    task.text_renderer(validators.MAP_SITES, map_text)
    task.command(rpg)
