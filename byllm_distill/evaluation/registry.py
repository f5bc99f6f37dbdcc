"""Which task metrics evaluate which call site.

A task metric is a `TaskMetric`: a name, `compute(data: EvalData) -> dict` (JSON-able
numbers, lists and dicts; see pairing.py for `EvalData`), and optional hooks for the
report and the rating tool: `plot(result, out_dir) -> list[Path]` draws PNGs of that
result; `render(output, path) -> Path | None` draws one output of the site (a map, say)
as a PNG, or returns None when it cannot; `legend` says how to read such a picture;
`criteria` are the task's fidelity distances (`gate.SetDistance`), which the promotion
gate and the rollback check judge against the teacher's split-half baseline.
Metrics are registered against a call-site pattern, an exact key or a glob, exactly like
validators (validators/registry.py).

Other packages add theirs through the `byllm_distill.metrics` entry-point group: each entry
point names a function `register(registry: MetricRegistry) -> None`, called once when the
registry is first used. The RPG metrics of this package are registered the same way, from
`BUILTIN_PLUGINS`, so they work without reinstalling the package; registering the same
(pattern, name) twice keeps the first.
"""

from __future__ import annotations

import fnmatch
import importlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from byllm_distill.evaluation.pairing import EvalData
    from byllm_distill.gate.fidelity import SetDistance

log = logging.getLogger("byllm_distill")

ENTRY_POINT_GROUP = "byllm_distill.metrics"
BUILTIN_PLUGINS = ("byllm_distill.evaluation.rpg_metrics:register",)


@dataclass(frozen=True)
class TaskMetric:
    name: str
    compute: Callable[[EvalData], dict[str, Any]]
    plot: Callable[[dict[str, Any], Path], list[Path]] | None = None
    render: Callable[[Any, Path], Path | None] | None = None
    legend: str = ""
    criteria: tuple[SetDistance, ...] = ()


class MetricRegistry:
    def __init__(self) -> None:
        self._by_pattern: list[tuple[str, TaskMetric]] = []
        self._loaded = False
        self._lock = threading.Lock()

    def register(self, pattern: str, metric: TaskMetric) -> None:
        """Evaluate every site matching `pattern` with `metric` too."""
        if any(p == pattern and m.name == metric.name for p, m in self._by_pattern):
            return
        self._by_pattern.append((pattern, metric))

    def for_site(self, site: str) -> list[TaskMetric]:
        self._load_plugins()
        return [m for pattern, m in self._by_pattern if fnmatch.fnmatchcase(site, pattern)]

    def renderer(self, site: str) -> Callable[[Any, Path], Path | None] | None:
        """The first registered `render` hook for the site, if any."""
        return next((m.render for m in self.for_site(site) if m.render is not None), None)

    def legend(self, site: str) -> str:
        """The legend of the site's first `render` hook, "" if none."""
        return next((m.legend for m in self.for_site(site) if m.render is not None), "")

    def compute(self, data: EvalData) -> dict[str, dict[str, Any]]:
        """Every task metric of the site, by name.

        A metric that raises yields `{"error": ...}` under its name instead of stopping
        the report: one broken plugin must not hide every other number.
        """
        out: dict[str, dict[str, Any]] = {}
        for metric in self.for_site(data.site):
            try:
                out[metric.name] = metric.compute(data)
            except Exception as exc:  # noqa: BLE001 - reported in the result, see docstring
                log.warning("byllm-distill: metric %r failed: %s", metric.name, exc)
                out[metric.name] = {"error": f"{type(exc).__name__}: {exc}"}
        return out

    def _load_plugins(self) -> None:
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            loaders: list[tuple[str, Callable[[], Any]]] = [
                (spec, lambda spec=spec: _import(spec)) for spec in BUILTIN_PLUGINS
            ]
            loaders += [(ep.name, ep.load) for ep in entry_points(group=ENTRY_POINT_GROUP)]
            for name, load in loaders:
                try:
                    load()(self)
                except Exception as exc:  # noqa: BLE001 - one bad plugin must not stop others
                    log.warning("byllm-distill: metric plugin %r failed to load: %s", name, exc)
            self._loaded = True


def _import(spec: str) -> Callable[[MetricRegistry], None]:
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


registry = MetricRegistry()
