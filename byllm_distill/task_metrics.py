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

Other packages add theirs as task plug-ins (tasks.py), loaded the first time the
registry is used; the RPG showcase's are in rpg/report_metrics.py, registered by
rpg/plugin.py. Registering the same (pattern, name) twice keeps the first.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from byllm_distill import tasks

# Typed loosely on purpose: this module sits below both the report (EvalData,
# evaluation/pairing.py) and the gate (SetDistance, gate/fidelity.py), which read it.
EvalData = Any
SetDistance = Any
log = logging.getLogger("byllm_distill")


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
        """The task plug-ins, at first use (tasks.py); a registry made apart (tests) gets
        none."""
        if not self._loaded:
            if self is registry:
                tasks.load("metrics", self)
            self._loaded = True


registry = MetricRegistry()
