"""Helpers shared by the CLI modules: error display, configuration and store access."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from byllm_distill.config import DistillConfig, load_config
from byllm_distill.errors import DistillError
from byllm_distill.store import Store


def friendly_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn our errors into a one-line message and exit status 1 (no traceback)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except DistillError as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper


def get_config() -> DistillConfig:
    try:
        return load_config()
    except DistillError as exc:
        raise click.ClickException(str(exc)) from exc


def open_store() -> Store:
    return Store(get_config().database_url)


def criteria_lines(criteria: list[dict[str, Any]]) -> list[str]:
    """One line per gate criterion: mark, name, value, bound vs bar, n."""
    def num(value: Any) -> str:
        return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = []
    for x in criteria:
        mark = {True: "ok ", False: "NO ", None: "n/a"}[x.get("passed")]
        lines.append(f"{mark} {x['name']:<28} value {num(x.get('value')):>7}  bound "
                     f"{num(x.get('bound')):>7}  bar {num(x.get('bar')):>6}  n {x.get('n')}")
    return lines
