"""The RPG showcase's own settings (`[plugins.distill.tasks.rpg]` in jac.toml, or the
environment; read through task_settings.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from byllm_distill.errors import ConfigError


@dataclass(frozen=True)
class RpgSettings:
    teacher_errors: float = field(default=0.0, metadata={
        "help": "Simulation: this seeded fraction of the offline designer's answers carries "
                "a mistake hosted models make (wrong counts, overlaps, out of bounds, "
                "unreachable tiles, malformed fields; see mistakes.py).",
        "env": "BYLLM_DISTILL_TEACHER_ERRORS"})

    def __post_init__(self) -> None:
        if not 0.0 <= self.teacher_errors <= 1.0:
            raise ConfigError("'teacher_errors' must be a fraction between 0 and 1, got "
                              f"{self.teacher_errors!r}.")


def rpg_settings() -> RpgSettings:
    from byllm_distill.task_settings import task_settings

    return task_settings("rpg", RpgSettings)
