"""Registers the RPG checks (checks.py) for the showcase's two call sites.

Loaded through the `byllm_distill.validators` entry point. The patterns are globs on the
function name, so any Jaseci-compatible RPG program (whatever its module) is checked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from byllm_distill.rpg.checks import check_level, check_map
from byllm_distill.validators.base import Verdict

if TYPE_CHECKING:
    from byllm_distill.store.record import Record
    from byllm_distill.validators.registry import ValidatorRegistry

MAP_SITES = "*create_next_map"
LEVEL_SITES = "*create_next_level"


def rpg_map(record: Record) -> list[Verdict]:
    return check_map(record.output)


def rpg_level(record: Record) -> list[Verdict]:
    return check_level(record.output, record.args)


def register(registry: ValidatorRegistry) -> None:
    registry.register(MAP_SITES, rpg_map)
    registry.register(LEVEL_SITES, rpg_level)
