"""The RPG showcase as a task plug-in (tasks.py): its validators, its report metrics and
fidelity distances, the rating rubric, the text picture of a map that `version try`
prints, its offline teacher (`teacher("rpg")`: the procedural designer, teacher.py), and
its commands: `byllm-distill rpg ...` and `byllm-distill demo` (cli.py, demo.py).

Built in (`tasks.BUILTIN`) and published as the `rpg` entry point of `byllm_distill.tasks`;
`disabled_validators = ["rpg"]` switches its validators off for a project.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from byllm_distill.rpg import validators

if TYPE_CHECKING:
    from byllm_distill.tasks import Task


def map_text(output: Any) -> str | None:
    from byllm_distill.rpg.render import to_ascii

    return to_ascii(output) if isinstance(output, dict) and "player_pos" in output else None


RUBRIC = (
    ("gameplay", "Gameplay viability and fun",
     "Can it be played from start to finish, and would it be fun to play?"),
    ("structure", "Structural correctness and consistency",
     "Is everything where it may be: inside the bounds, nothing stacked, walls straight?"),
    ("adherence", "Adherence to constraints and theme",
     "Does it match what was asked: counts, size, difficulty, name and theme?"),
)


def _offline_teacher(seed: int) -> Any:
    from byllm_distill.rpg.teacher import offline_designer

    return offline_designer(seed)


def register(task: Task) -> None:
    # The report metrics (numpy) and the commands (training, the demo) are imported only
    # when their kind is loaded: capture's writer thread loads the validators kind while
    # the program runs.
    validators.register(task.validators)
    if task.kind == "metrics":
        from byllm_distill.rpg import report_metrics

        report_metrics.register(task.metrics)
    for pattern in (validators.MAP_SITES, validators.LEVEL_SITES):
        task.rubric(pattern, RUBRIC)
    task.text_renderer(validators.MAP_SITES, map_text)
    task.offline_teacher("rpg", _offline_teacher)
    if task.kind == "extras":
        from byllm_distill.rpg.cli import demo, rpg

        task.command(rpg)
        task.command(demo)
