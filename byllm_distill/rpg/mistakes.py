"""Mistakes a hosted model makes on the RPG task, injected into the offline designer's answers.

A simulation, not a measurement of any provider: with `teacher_errors` > 0 (`rpg generate
--teacher-errors 0.15`, `demo --teacher-errors`, `BYLLM_DISTILL_TEACHER_ERRORS`), that
seeded fraction of the offline designer's answers carries one of the failure modes hosted
models show on this task, so that filtering (`records export --valid-only`, the dataset's
`valid_only`) has something to remove. Each mode names the validator that flags it
(`CAUGHT_BY`); tests check that it always does.

Maps: a wrong enemy or wall count, two things on one tile, a tile out of bounds, an
unreachable pocket, an enemy next to the spawn, a malformed field. Levels: the wrong size
or difficulty, a reused name, a countdown of zero. A mode that cannot apply to an answer
(e.g. a reused name on the first level) is skipped for one that can. The mistake is drawn
from its own seeded rng, so the rest of the corpus is the same with and without mistakes.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable

from byllm_distill.rpg.checks import SPAWN_SAFE_RADIUS, MapView, wall_tolerance

Mistake = Callable[[dict, dict, random.Random], "dict | None"]


def _pos(cell: tuple[int, int]) -> dict:
    return {"x": cell[0], "y": cell[1]}


def _fewer_enemies(map: dict, request: dict, rng: random.Random) -> dict | None:
    if not map["enemies"]:
        return None
    map["enemies"].pop(rng.randrange(len(map["enemies"])))
    return map


def _more_walls(map: dict, request: dict, rng: random.Random) -> dict | None:
    if not map["walls"]:
        return None
    extra = wall_tolerance(map["level"]["num_wall"]) + 1
    map["walls"] += [copy.deepcopy(rng.choice(map["walls"])) for _ in range(extra)]
    return map


def _stacked_enemies(map: dict, request: dict, rng: random.Random) -> dict | None:
    if len(map["enemies"]) < 2:
        return None
    i, j = rng.sample(range(len(map["enemies"])), 2)
    map["enemies"][j] = dict(map["enemies"][i])
    return map


def _out_of_bounds(map: dict, request: dict, rng: random.Random) -> dict | None:
    if not map["enemies"]:
        return None
    level = map["level"]
    enemy = rng.choice(map["enemies"])
    if rng.random() < 0.5:
        enemy["x"] = level["width"] + rng.randint(1, 2)
    else:
        enemy["y"] = level["height"] + rng.randint(1, 2)
    return map


def _unreachable_pocket(map: dict, request: dict, rng: random.Random) -> dict | None:
    """Obstacles around one floor tile, so nothing can walk to it."""
    view = MapView.parse(map)
    blocked = view.blocked()
    occupied = set(view.enemies) | {view.player}
    floor = [(x, y) for y in range(1, view.height + 1) for x in range(1, view.width + 1)
             if (x, y) not in blocked and (x, y) not in occupied]
    rng.shuffle(floor)
    for x, y in floor:
        around = [c for c in ((x + 1, y), (x - 1, y), (x, y + 1), (x, y - 1)) if view.inside(c)]
        if any(c in occupied for c in around):
            continue
        map["small_obstacles"] += [_pos(c) for c in around if c not in blocked]
        return map
    return None


def _enemy_near_spawn(map: dict, request: dict, rng: random.Random) -> dict | None:
    view = MapView.parse(map)
    if not view.enemies:
        return None
    taken = view.blocked() | set(view.enemies) | {view.player}
    px, py = view.player
    near = [(px + dx, py + dy) for dx in range(-SPAWN_SAFE_RADIUS, SPAWN_SAFE_RADIUS + 1)
            for dy in range(-SPAWN_SAFE_RADIUS, SPAWN_SAFE_RADIUS + 1)
            if 0 < abs(dx) + abs(dy) <= SPAWN_SAFE_RADIUS]
    free = [c for c in near if view.inside(c) and c not in taken]
    if not free:
        return None
    map["enemies"][rng.randrange(len(map["enemies"]))] = _pos(rng.choice(free))
    return map


def _malformed_field(map: dict, request: dict, rng: random.Random) -> dict | None:
    """A required field left empty: the level the map repeats comes back with a blank
    name. (A coordinate written as text, "7", is no mistake here: byLLM's typed parse
    turns it into 7, and text it cannot parse fails the call, not a validator.)"""
    map["level"] = {**map["level"], "name": rng.choice(("", " "))}
    return map


def _wrong_size(level: dict, request: dict, rng: random.Random) -> dict | None:
    key = rng.choice(("width", "height"))
    level[key] += rng.choice((-2, -1, 1, 2)) if level[key] > 4 else 2
    return level


def _wrong_difficulty(level: dict, request: dict, rng: random.Random) -> dict | None:
    level["difficulty"] += 1
    return level


def _reused_name(level: dict, request: dict, rng: random.Random) -> dict | None:
    names = [lv.get("name") for lv in request.get("last_levels") or []
             if isinstance(lv, dict) and isinstance(lv.get("name"), str) and lv["name"].strip()]
    if not names:
        return None
    level["name"] = rng.choice(names)
    return level


def _no_time(level: dict, request: dict, rng: random.Random) -> dict | None:
    level["time_countdown"] = 0
    return level


MAP_MISTAKES: dict[str, Mistake] = {
    "wrong_enemy_count": _fewer_enemies,
    "wrong_wall_count": _more_walls,
    "two_on_one_tile": _stacked_enemies,
    "out_of_bounds": _out_of_bounds,
    "unreachable_pocket": _unreachable_pocket,
    "enemy_next_to_spawn": _enemy_near_spawn,
    "malformed_field": _malformed_field,
}
LEVEL_MISTAKES: dict[str, Mistake] = {
    "wrong_size": _wrong_size,
    "wrong_difficulty": _wrong_difficulty,
    "reused_name": _reused_name,
    "no_time": _no_time,
}
# The validator (rpg/checks.py) that flags each mode.
CAUGHT_BY = {
    "wrong_enemy_count": "enemy_count", "wrong_wall_count": "wall_count",
    "two_on_one_tile": "no_overlap", "out_of_bounds": "in_bounds",
    "unreachable_pocket": "reachable", "enemy_next_to_spawn": "enemy_not_adjacent_to_spawn",
    "malformed_field": "map_parses", "wrong_size": "level_size_matches",
    "wrong_difficulty": "level_difficulty_matches", "reused_name": "name_is_new",
    "no_time": "level_counts_sane",
}


def inject(kind: str, answer: dict, request: dict, rng: random.Random,
           mode: str | None = None) -> tuple[dict, str | None]:
    """A copy of `answer` (a "Map" or "Level") with one mistake, and the mode's name.

    `mode` forces one; otherwise modes are tried in a seeded order until one applies. The
    answer comes back unchanged, with None, when none can."""
    mistakes = MAP_MISTAKES if kind == "Map" else LEVEL_MISTAKES
    modes = [mode] if mode else rng.sample(sorted(mistakes), len(mistakes))
    for name in modes:
        broken = mistakes[name](copy.deepcopy(answer), request, rng)
        if broken is not None:
            return broken, name
    return answer, None

