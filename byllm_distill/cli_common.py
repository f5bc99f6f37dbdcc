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
