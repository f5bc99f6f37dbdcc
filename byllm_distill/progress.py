"""Progress of long library work (training steps, held-out answers, corpus levels),
reported through a callback; the command line draws it (cli_common.progress_bars).

Library functions take `progress: Progress | None` and call `report(progress, Step(...))`
as work advances; None (or False, for older callers) reports nothing. A callback that
raises is logged once and then ignored: showing progress must never stop the work.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("byllm_distill")


@dataclass(frozen=True)
class Step:
    """`done` of `total` units of one task (e.g. "train rpg.create_next_map", "step");
    `note` holds figures worth showing beside it (loss, tokens/s)."""

    task: str
    done: int
    total: int
    unit: str = ""
    note: dict[str, Any] = field(default_factory=dict)


Progress = Callable[[Step], None]
_failed: set[int] = set()


def report(progress: Progress | None | bool, step: Step) -> None:
    """Hand `step` to `progress`, if it is a callback (see the module docstring)."""
    if not callable(progress) or id(progress) in _failed:
        return
    try:
        progress(step)
    except Exception as exc:  # noqa: BLE001 - progress display must not stop the work
        _failed.add(id(progress))
        log.warning("byllm-distill: progress display failed and is off: %s", exc)
