"""A task plug-in's own settings, read like the core's: defaults, then jac.toml, then the
environment.

A task describes its settings as a frozen dataclass whose fields carry `help` and `env`
metadata (as config.py's do). `task_settings(name, cls)` reads `[plugins.distill.tasks.NAME]`
from the nearest jac.toml, then each field's environment variable, coerces each value to
the field's type and returns `cls(...)`; an unknown key or a bad value raises `ConfigError`
naming the key and where it came from, and the dataclass's own `__post_init__` checks
ranges. The RPG showcase's settings are `rpg.settings.RpgSettings`.
"""

from __future__ import annotations

import os
import typing
from dataclasses import fields
from typing import Any

from byllm_distill.config import coerce_value, load_config
from byllm_distill.errors import ConfigError


def task_settings[T](name: str, cls: type[T], environ: dict[str, str] | None = None) -> T:
    """The settings of task `name` as `cls` (see the module docstring)."""
    env = os.environ if environ is None else environ
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    table = load_config(environ=env).tasks.get(name, {})
    origin = f"jac.toml [plugins.distill.tasks.{name}]"
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in known:
            raise ConfigError(f"{origin}: unknown key '{key}'; known keys: "
                              f"{', '.join(sorted(known))}.")
        values[key] = coerce_value(key, value, origin, hints[key])
    for key, f in known.items():
        var = f.metadata.get("env")
        if var and env.get(var, "") != "":
            values[key] = coerce_value(key, env[var], f"environment variable {var}", hints[key])
    return cls(**values)
