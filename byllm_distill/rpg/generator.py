"""The offline level designer: procedural `Level`s and `Map`s, deterministic given an rng.

`design_level` turns (last levels, difficulty, size) into a Level: enemies and walls grow
with difficulty and with the square root of the area (so big maps get more, small maps stay
solvable), time and retries shrink, and the previous level bounds it (never fewer enemies
or walls, never more time or retries on a same-size map; names not reused).

`design_map` lays the Level out rooms-and-corridors style: it splits the grid into rooms
with partition walls that keep a doorway, spends the rest of `num_wall` on free-standing
wall segments and adds a few single-tile obstacles, refusing any placement that would cut
the floor in two. The player spawns on a random floor tile and enemies are drawn among the
tiles more than `SPAWN_SAFE_RADIUS` steps away, favouring far ones. Each draw is verified
with `check_map`; a failing draw is redrawn from the same rng up to `MAX_DRAWS` times.
All randomness comes from the `random.Random` passed in, so a seed fixes the result.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field

from byllm_distill.rpg.checks import (
    SPAWN_SAFE_RADIUS,
    Cell,
    check_map,
    distances_from,
    level_capacity,
    map_problems,
)

MAX_DRAWS = 8
# Placement attempts per wall segment before settling for a one-tile wall, then giving up.
WALL_TRIES = 40
# A room is never split into parts narrower than this, so rooms stay walkable.
MIN_ROOM = 3

# Name parts, tiered by difficulty so a level's name hints at how hard it is.
ADJECTIVES = (
    ("Quiet", "Sunlit", "Mossy", "Windswept", "Verdant", "Misty", "Gentle", "Amber"),
    ("Sunken", "Forgotten", "Hollow", "Crumbling", "Shadowed", "Frozen", "Silent", "Ashen"),
    ("Cursed", "Burning", "Dread", "Infernal", "Blighted", "Bleeding", "Howling", "Venomous"),
)
PLACES = ("Crypt", "Halls", "Catacombs", "Keep", "Mines", "Caverns", "Sanctum", "Vault",
          "Bastion", "Warrens", "Labyrinth", "Ruins", "Grotto", "Citadel", "Barrows", "Depths")
LEVEL_NUMBER = re.compile(r"level\s+(\d+)", re.IGNORECASE)


def _tier(difficulty: int) -> tuple[str, ...]:
    return ADJECTIVES[min(max(difficulty - 1, 0) // 3, len(ADJECTIVES) - 1)]


def _level_number(last_levels: list[dict], difficulty: int) -> int:
    """Continue the numbering of the last level's name; only the last 3 levels are passed,
    so their count cannot say how far the run has gone."""
    name = last_levels[-1].get("name") if last_levels else None
    if isinstance(name, str) and (match := LEVEL_NUMBER.search(name)):
        return int(match.group(1)) + 1
    return max(difficulty, 1)


def _name(number: int, difficulty: int, last_levels: list[dict], rng: random.Random) -> str:
    used = {str(lv.get("name", "")).split(":")[-1].strip().casefold() for lv in last_levels}
    theme = ""
    for _ in range(20):
        theme = f"{rng.choice(_tier(difficulty))} {rng.choice(PLACES)}"
        if theme.casefold() not in used:
            break
    return f"Level {number}: {theme}"


def _same_size(a: dict, width: int, height: int) -> bool:
    return a.get("width") == width and a.get("height") == height


def _int_field(level: dict, key: str) -> int | None:
    value = level.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def design_level(last_levels: list[dict], difficulty: int, level_width: int, level_height: int,
                 rng: random.Random) -> dict:
    """A Level of exactly the requested difficulty and size, harder than the last one."""
    last_levels = [lv for lv in last_levels if isinstance(lv, dict)][-3:]
    area = level_width * level_height
    scale = math.sqrt(area) / 10  # 1.0 on a 10x10 map, 4.0 on 40x40
    d = max(difficulty, 1)
    enemies = round((1 + 0.6 * d) * scale * 1.2) + rng.choice((-1, 0, 0, 1))
    walls = round((1.5 + 0.5 * d) * scale) + rng.choice((-1, 0, 0, 1))
    # Seconds to explore: grows with the area, down to about half at difficulty 10.
    time = 5 * round((60 + area * 0.5) * max(1.05 - 0.06 * d, 0.4) / 5)
    retries = max(0, 5 - (d + 1) // 2)

    prev = last_levels[-1] if last_levels else {}
    prev_difficulty = _int_field(prev, "difficulty") or 0
    if prev and prev_difficulty <= difficulty:
        enemies = max(enemies, _int_field(prev, "num_enemies") or 0)
        if _same_size(prev, level_width, level_height):
            walls = max(walls, _int_field(prev, "num_wall") or 0)
            if (prev_time := _int_field(prev, "time_countdown")) is not None:
                time = min(time, prev_time - 5 if difficulty > prev_difficulty else prev_time)
            if (prev_retries := _int_field(prev, "n_retries_allowed")) is not None:
                retries = min(retries, prev_retries)

    # Fit the area (one tile for the player), taking from walls first: enemies are the
    # difficulty a player feels, walls only shape the map.
    cap = max(level_capacity(level_width, level_height) - 1, 2)
    enemies = min(max(enemies, 1), cap - 1)
    walls = min(max(walls, 1), cap - enemies)
    return {
        "name": _name(_level_number(last_levels, difficulty), difficulty, last_levels, rng),
        "difficulty": difficulty,
        "width": level_width,
        "height": level_height,
        "num_wall": walls,
        "num_enemies": enemies,
        "time_countdown": max(time, 15),
        "n_retries_allowed": max(retries, 0),
    }


@dataclass
class _Layout:
    """A grid being furnished: blocked tiles plus the wall segments placed so far."""

    width: int
    height: int
    blocked: set[Cell] = field(default_factory=set)
    walls: list[tuple[Cell, Cell]] = field(default_factory=list)
    obstacles: list[Cell] = field(default_factory=list)

    def floor(self) -> list[Cell]:
        return [(x, y) for y in range(1, self.height + 1) for x in range(1, self.width + 1)
                if (x, y) not in self.blocked]

    def connected_without(self, cells: list[Cell]) -> bool:
        """Would the floor still be one piece (and non-empty) with `cells` blocked too?"""
        blocked = self.blocked | set(cells)
        free = self.width * self.height - len(blocked)
        start = next((c for c in self.floor() if c not in blocked), None)
        if start is None:
            return False
        return len(distances_from(start, self.width, self.height, blocked)) == free

    def try_wall(self, start: Cell, end: Cell) -> bool:
        cells = segment(start, end)
        if any(not self._inside(c) or c in self.blocked for c in cells):
            return False
        if not self.connected_without(cells):
            return False
        self.blocked.update(cells)
        self.walls.append((start, end))
        return True

    def try_obstacle(self, cell: Cell) -> bool:
        if cell in self.blocked or not self.connected_without([cell]):
            return False
        self.blocked.add(cell)
        self.obstacles.append(cell)
        return True

    def _inside(self, cell: Cell) -> bool:
        return 1 <= cell[0] <= self.width and 1 <= cell[1] <= self.height


def segment(start: Cell, end: Cell) -> list[Cell]:
    """The tiles of a straight wall, start <= end."""
    return [(x, y) for x in range(start[0], end[0] + 1) for y in range(start[1], end[1] + 1)]


Room = tuple[int, int, int, int]  # x0, y0, x1, y1, inclusive


def _split_rooms(layout: _Layout, budget: int, rng: random.Random) -> None:
    """Partition walls across rooms, each with a doorway: one segment when the door is at
    an end, two when it is in the middle. Stops when the budget or the splittable rooms
    run out."""
    rooms: list[Room] = [(1, 1, layout.width, layout.height)]
    while budget > 0 and rooms:
        rooms.sort(key=lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1))
        x0, y0, x1, y1 = rooms.pop()
        w, h = x1 - x0 + 1, y1 - y0 + 1
        can_v, can_h = w >= 2 * MIN_ROOM + 1, h >= 2 * MIN_ROOM + 1
        if not (can_v or can_h):
            continue
        vertical = can_v and (not can_h or rng.random() < w / (w + h))
        lo, hi = (x0, x1) if vertical else (y0, y1)
        a, b = (y0, y1) if vertical else (x0, x1)  # the span the wall runs along
        for _ in range(6):
            at = rng.randint(lo + MIN_ROOM, hi - MIN_ROOM)
            pieces = _door_pieces(a, b, budget, rng)
            cells = [(at, s, at, e) if vertical else (s, at, e, at) for s, e in pieces]
            placed = [c for c in cells if layout.try_wall((c[0], c[1]), (c[2], c[3]))]
            if placed:
                budget -= len(placed)
                halves = ([(x0, y0, at - 1, y1), (at + 1, y0, x1, y1)] if vertical
                          else [(x0, y0, x1, at - 1), (x0, at + 1, x1, y1)])
                rooms.extend(halves)
                break


def _door_pieces(a: int, b: int, budget: int, rng: random.Random) -> list[tuple[int, int]]:
    """The wall pieces of a partition over a..b leaving a doorway of 1-2 tiles."""
    door = 1 if b - a < 8 else rng.choice((1, 2))
    if budget >= 2 and b - a >= door + 3:
        start = rng.randint(a + 1, b - door)
        return [(a, start - 1), (start + door, b)]
    return [(a, b - door)] if rng.random() < 0.5 else [(a + door, b)]


def _free_walls(layout: _Layout, count: int, rng: random.Random) -> None:
    """Free-standing segments, 2 to a third of the side long; one tile when nothing
    longer fits."""
    for _ in range(count):
        for attempt in range(WALL_TRIES + 10):
            vertical = rng.random() < 0.5
            side = layout.height if vertical else layout.width
            longest = 1 if attempt >= WALL_TRIES else min(side, max(2, side // 3))
            length = rng.randint(min(2, longest), longest)
            x = rng.randint(1, layout.width - (0 if vertical else length - 1))
            y = rng.randint(1, layout.height - (length - 1 if vertical else 0))
            end = (x, y + length - 1) if vertical else (x + length - 1, y)
            if layout.try_wall((x, y), end):
                break


def _scatter_obstacles(layout: _Layout, count: int, rng: random.Random) -> None:
    for _ in range(count):
        for _ in range(10):
            cell = (rng.randint(1, layout.width), rng.randint(1, layout.height))
            if layout.try_obstacle(cell):
                break


def _pick_enemies(player: Cell, count: int, reach: dict[Cell, int],
                  rng: random.Random) -> list[Cell]:
    """Weighted draw without replacement (Efraimidis-Spirakis), weight = path distance, so
    enemies spread out and lean away from the spawn without all hugging the far corner."""
    px, py = player
    eligible = sorted(c for c, steps in reach.items()
                      if abs(c[0] - px) + abs(c[1] - py) > SPAWN_SAFE_RADIUS)
    keyed = sorted(eligible, key=lambda c: rng.random() ** (1 / reach[c]), reverse=True)
    return sorted(keyed[:count])


def _draw(level: dict, rng: random.Random) -> dict:
    width, height = level["width"], level["height"]
    num_wall, num_enemies = max(level["num_wall"], 0), max(level["num_enemies"], 0)
    layout = _Layout(width, height)
    _split_rooms(layout, round(num_wall * rng.uniform(0.3, 0.7)), rng)
    _free_walls(layout, num_wall - len(layout.walls), rng)
    # Keep enough floor for the enemies, the player and the spawn's safe zone.
    spare = len(layout.floor()) - num_enemies - 2 * SPAWN_SAFE_RADIUS * (SPAWN_SAFE_RADIUS + 1)
    area = width * height
    _scatter_obstacles(layout, min(rng.randint(area // 100, area // 30), max(spare // 2, 0)),
                       rng)
    player = rng.choice(layout.floor())
    reach = distances_from(player, width, height, layout.blocked)
    enemies = _pick_enemies(player, num_enemies, reach, rng)
    return {
        "level": level,
        "walls": [{"start_pos": _pos(s), "end_pos": _pos(e)} for s, e in layout.walls],
        "small_obstacles": [_pos(c) for c in layout.obstacles],
        "enemies": [_pos(c) for c in enemies],
        "player_pos": _pos(player),
    }


def _pos(cell: Cell) -> dict:
    return {"x": cell[0], "y": cell[1]}


def design_map(level: dict, rng: random.Random) -> dict:
    """A Map for `level` that passes `check_map`, or the draw that fails the fewest checks
    after `MAX_DRAWS` tries (possible only for levels too crowded to lay out)."""
    if problems := map_problems({"level": level, "walls": [], "small_obstacles": [],
                                 "enemies": [], "player_pos": {"x": 1, "y": 1}}):
        raise ValueError("cannot design a map for this level: " + "; ".join(problems))
    best, best_failed = None, math.inf
    for _ in range(MAX_DRAWS):
        candidate = _draw(level, rng)
        failed = sum(not v.passed for v in check_map(candidate))
        if failed == 0:
            return candidate
        if failed < best_failed:
            best, best_failed = candidate, failed
    return best
