"""Helpers shared by the CLI modules: error display, configuration and store access."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import click

from byllm_distill.config import DistillConfig, load_config, with_overrides
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


def get_config(**overrides: object) -> DistillConfig:
    """The configuration, with any `config_options` the command was given."""
    try:
        return with_overrides(load_config(), overrides)
    except DistillError as exc:
        raise click.ClickException(str(exc)) from exc


def config_options(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Click options for these `DistillConfig` fields: `--quiet-hours` for `quiet_hours`,
    with the field's own help and environment variable, so the config stays the one
    place a setting is described. Unset options keep the configured value; pass the
    command's values on to `get_config(**...)`."""
    by_name = {f.name: f for f in fields(DistillConfig)}

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        for name in reversed(names):
            meta = by_name[name].metadata
            env = f" [env {meta['env']}]" if meta.get("env") else ""
            func = click.option(f"--{name.replace('_', '-')}", name, default=None,
                                metavar="VALUE", help=f"{meta.get('help', '')} Default: "
                                f"the configured value (jac.toml){env}.")(func)
        return func

    return decorate


def field_options(cls: type, *names: str, flags: dict[str, str] | None = None,
                  ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Click options for these fields of the dataclass `cls` (`TrainConfig`, `DemoOptions`):
    the field's default, type and `help` metadata (`choices` too, when it has them), so
    the dataclass stays the one place an option is described. `flags` gives a field
    another flag (`{"learning_rate": "--lr"}`); the command gets each value by field name."""
    import typing
    from dataclasses import MISSING

    from byllm_distill.config import base_type

    hints = typing.get_type_hints(cls)
    by_name = {f.name: f for f in fields(cls)}

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        for name in reversed(names):
            f, kind = by_name[name], base_type(hints[name])
            default = None if f.default is MISSING else f.default
            flag = (flags or {}).get(name) or f"--{name.replace('_', '-')}"
            extra: dict[str, Any] = {"is_flag": True} if kind is bool else {"type": (
                click.Choice(f.metadata["choices"]) if "choices" in f.metadata
                else click.Path(file_okay=False, path_type=Path) if kind is Path else kind)}
            func = click.option(flag, name, default=default, help=f.metadata.get("help", ""),
                                show_default=default is not None and default is not False,
                                **extra)(func)
        return func

    return decorate


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


def progress_bars() -> Callable[[Any], None]:
    """A progress callback (progress.py) that draws one tqdm bar per task on stderr, closed
    when its task is done."""
    from tqdm import tqdm

    bars: dict[str, Any] = {}

    def show(step: Any) -> None:
        bar = bars.get(step.task)
        if bar is None:
            bar = bars[step.task] = tqdm(total=step.total, desc=step.task, unit=step.unit)
        bar.update(step.done - bar.n)
        if step.note:
            bar.set_postfix(step.note, refresh=False)
        if step.done >= step.total:
            bar.close()
            del bars[step.task]

    return show
