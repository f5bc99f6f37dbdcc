"""Task plug-ins: one hook shape and one loader for what a task brings to byllm-distill.

A task (the RPG showcase is one: rpg/plugin.py) is a function `register(task: Task)`,
named by an entry point in the `byllm_distill.tasks` group, or listed in `[plugins.distill]
validators = ["pkg.module:register"]` for a project that does not package it. Through
`task` it adds:

- `task.validators.register(pattern, fn, prefix_closed=...)`: checks of its sites'
  answers (validators/registry.py);
- `task.metrics.register(pattern, TaskMetric(...))`: report metrics, picture renderers and
  the gate's fidelity distances (task_metrics.py);
- `task.text_renderer(pattern, fn)`: how `version try` prints one answer of a site
  (`fn(output) -> str | None`; None: not this one, fall back to JSON);
- `task.rubric(pattern, criteria)`: what raters score its sites' answers on in `rate`
  (`(key, title, help)` triples; evaluation/ratings.py has the generic default);
- `task.offline_teacher(name, factory)`: a teacher that needs no API key, a
  `factory(seed) -> byLLM model` that programs ask for with `byllm_distill.teacher(name)`
  (teachers.py; the configured `teacher` model, when set, answers instead);
- `task.command(cmd)`: a click command or group of its own on `byllm-distill`.

Patterns are call-site keys or globs. The plug-ins are loaded once per process for each
kind of hook, the first time it is needed (`load(kind)`): the validator registry asks for
"validators", the metric registry for "metrics", `render_text` and the CLI for "extras".
Each time, `register(task)` is called with that kind live and the others discarded, so a
plug-in's `register` must only register (it runs up to three times). `task.kind` names the
live kind, so a plug-in can leave what only the others need unimported: capture's writer
thread loads the validators while the program runs, and every module it imports then
competes with the program for the GIL. This keeps the
loader below the registries: they import it, it imports neither. Order: this package's
built-in tasks (`BUILTIN`), entry points of `byllm_distill.tasks`, then of the older
one-registry groups `byllm_distill.validators` / `byllm_distill.metrics` (a function
taking that registry, for its kind only), then the configured `validators` list (the
same). A name in `disabled_validators` is not loaded for "validators" (its validators are
off; its metrics, renderers and commands stay), and a name loads once per kind (a
built-in task also published as an entry point is not loaded twice). A plug-in that
raises is logged and skipped; the others still load.
"""

from __future__ import annotations

import fnmatch
import functools
import importlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoints, entry_points
from typing import Any

log = logging.getLogger("byllm_distill")

GROUP = "byllm_distill.tasks"
LEGACY_GROUPS = {"validators": "byllm_distill.validators", "metrics": "byllm_distill.metrics"}
BUILTIN = (("rpg", "byllm_distill.rpg.plugin:register"),)
KINDS = ("validators", "metrics", "extras")
TextRenderer = Callable[[Any], "str | None"]
Rubric = tuple[tuple[str, str, str], ...]  # (key, title, help) per criterion


class _Discard:
    """Stands in for the registries not being loaded this time."""

    def register(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass
class Task:
    """What a task plug-in registers into (see the module docstring)."""

    validators: Any = field(default_factory=_Discard)  # validators/registry.py
    metrics: Any = field(default_factory=_Discard)  # task_metrics.py
    text_renderers: list[tuple[str, TextRenderer]] = field(default_factory=list)
    commands: list[Any] = field(default_factory=list)  # click commands
    rubrics: list[tuple[str, Rubric]] = field(default_factory=list)
    offline_teachers: dict[str, Callable[[int], Any]] = field(default_factory=dict)
    kind: str = "extras"  # the kind being loaded (`load_all` sets it); the others are discarded

    def text_renderer(self, pattern: str, fn: TextRenderer) -> None:
        self.text_renderers.append((pattern, fn))

    def rubric(self, pattern: str, criteria: Rubric) -> None:
        if not criteria or any(len(c) != 3 for c in criteria):
            raise ValueError("a rubric is a non-empty tuple of (key, title, help) triples")
        self.rubrics.append((pattern, tuple(tuple(c) for c in criteria)))

    def offline_teacher(self, name: str, factory: Callable[[int], Any]) -> None:
        self.offline_teachers.setdefault(name, factory)

    def command(self, command: Any) -> None:
        self.commands.append(command)


_lock = threading.RLock()
_loaded: dict[str, Task] = {}


def load(kind: str = "extras", registry: Any = None) -> Task:
    """The plug-ins' hooks of one kind, loaded once (into `registry` for "validators" and
    "metrics"). A thread that asks while another loads waits until every plug-in is in."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    with _lock:
        if kind not in _loaded:
            task = Task(**({kind: registry} if registry is not None else {}))
            _loaded[kind] = task  # set first: a plug-in using its registry finds it loading
            load_all(task, kind)
        return _loaded[kind]


def render_text(site: str, output: Any) -> str | None:
    """A task's text rendering of one answer of `site`, or None when no task has one."""
    for pattern, fn in load().text_renderers:
        if fnmatch.fnmatchcase(site, pattern):
            try:
                text = fn(output)
            except ValueError:
                continue  # not an answer this renderer can draw
            if text is not None:
                return text
    return None


def rubric_for(site: str) -> Rubric | None:
    """The first task rubric whose pattern matches `site`, or None."""
    return next((r for pattern, r in load().rubrics if fnmatch.fnmatchcase(site, pattern)),
                None)


def load_all(task: Task, kind: str) -> None:
    """Call every plug-in for `kind` with `task` (see the module docstring)."""
    task.kind = kind
    extra, disabled = _configured()
    plugins: list[tuple[str, Callable[[], Callable[[Any], None]], bool]] = [
        (name, lambda spec=spec: _import(spec), True) for name, spec in BUILTIN]
    installed = _entry_points()
    plugins += [(ep.name, ep.load, True) for ep in installed.select(group=GROUP)]
    if kind in LEGACY_GROUPS:
        plugins += [(ep.name, ep.load, False)
                    for ep in installed.select(group=LEGACY_GROUPS[kind])]
    if kind == "validators":
        plugins += [(spec, lambda spec=spec: _import(spec), False) for spec in extra]
    done: set[str] = set()
    for name, get, whole_task in plugins:
        if name in done or (kind == "validators" and name in disabled):
            continue
        done.add(name)
        try:
            get()(task if whole_task else getattr(task, kind))
        except Exception as exc:  # noqa: BLE001 - one bad plug-in must not stop the others
            log.warning("byllm-distill: plug-in %r failed to load: %s", name, exc)


@functools.cache
def _entry_points() -> EntryPoints:
    """Every installed entry point, read once per process (each read opens every
    installed distribution's metadata; each kind loads once anyway)."""
    return entry_points()


def _configured() -> tuple[tuple[str, ...], tuple[str, ...]]:
    from byllm_distill.config import load_config
    from byllm_distill.errors import ConfigError

    try:
        config = load_config()
    except ConfigError as exc:
        log.warning("byllm-distill: plug-in settings ignored: %s", exc)
        return (), ()
    return config.validators, config.disabled_validators


def _import(spec: str) -> Callable[[Any], None]:
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise ValueError(f"{spec!r} is not 'module:function'")
    return getattr(importlib.import_module(module), attr)
