"""Registers the RPG checks (checks.py) for the showcase's two call sites.

Registered by the RPG task plug-in (plugin.py). The patterns are globs on the
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
# Verdicts a map cut short cannot recover from (see validators/registry.py). `reachable`
# nearly is: a later obstacle could fill a stranded floor tile, so an early check may
# redraw a wall that would have been fine; it never lets a bad map through.
MAP_PREFIX_CLOSED = ("walls_straight", "in_bounds", "one_player_on_floor", "no_overlap",
                     "reachable", "enemy_not_adjacent_to_spawn")
LEVEL_SITES = "*create_next_level"


def rpg_map(record: Record) -> list[Verdict]:
    return check_map(record.output)


def rpg_level(record: Record) -> list[Verdict]:
    return check_level(record.output, record.args)


def register(registry: ValidatorRegistry) -> None:
    registry.register(MAP_SITES, rpg_map, prefix_closed=MAP_PREFIX_CLOSED)
    registry.register(LEVEL_SITES, rpg_level)
