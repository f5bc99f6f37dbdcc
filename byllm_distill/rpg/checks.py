"""Validators for the RPG showcase: is a `Map` playable, is a `Level` what was asked for?

Pure functions over the plain-JSON forms described in `byllm_distill.rpg` (1-based,
inclusive coordinates). Each returns `list[Verdict]` with stable names:

- `check_map`: `map_parses` (alone, when it fails), `walls_straight`, `in_bounds`,
  `one_player_on_floor`, `enemy_count`, `wall_count`, `no_overlap`, `reachable`,
  `enemy_not_adjacent_to_spawn`.
- `check_level`: `level_parses` (alone, when it fails), `level_size_matches`,
  `level_difficulty_matches`, `difficulty_rises`, `name_is_new`, `level_counts_sane`.

The checks are kept orthogonal where the rules allow, so a failure names its cause: an
out-of-bounds enemy fails `in_bounds` only. `map_cells` is the one place that decides
which tile is what; the renderer draws from it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from byllm_distill.validators.base import Verdict

Cell = tuple[int, int]

LEVEL_INT_FIELDS = ("difficulty", "width", "height", "num_wall", "num_enemies",
                    "time_countdown", "n_retries_allowed")
# Bigger grids are refused as unparseable, so a runaway answer cannot make a BFS or a
# render allocate millions of tiles.
MAX_SIDE = 200
# An enemy this many steps (Manhattan) or fewer from the spawn fails
# `enemy_not_adjacent_to_spawn`. Two covers all eight neighbours (diagonals are two steps)
# and the tiles two straight steps away, from which an enemy reaches the player on its
# first move.
SPAWN_SAFE_RADIUS = 2
# How many offending places a detail names before it summarises.
EXAMPLES = 3


def wall_tolerance(num_wall: int) -> int:
    """How far `len(walls)` may be from `num_wall`: ±20 %, at least ±1.

    Exact counts are hard for a language model and a wall or two either way does not
    change how a level plays; a count far off does.
    """
    return max(1, num_wall // 5)


def fmt(cell: Cell) -> str:
    return f"({cell[0]},{cell[1]})"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _position_problem(value: Any, where: str) -> str | None:
    if not isinstance(value, dict):
        return f"{where} is not a Position object"
    if not (_is_int(value.get("x")) and _is_int(value.get("y"))):
        return f"{where} needs integer x and y"
    return None


def level_problems(level: Any) -> list[str]:
    """What keeps `level` from being a Level; empty when it is one."""
    if not isinstance(level, dict):
        return ["level is not an object"]
    problems = []
    name = level.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.append("level.name must be a non-empty string")
    problems += [f"level.{key} must be an integer" for key in LEVEL_INT_FIELDS
                 if not _is_int(level.get(key))]
    for key in ("width", "height"):
        value = level.get(key)
        if _is_int(value) and not 1 <= value <= MAX_SIDE:
            problems.append(f"level.{key} is {value}, must be 1..{MAX_SIDE}")
    return problems


def map_problems(map: Any) -> list[str]:
    """What keeps `map` from being a Map; empty when it is one."""
    if not isinstance(map, dict):
        return ["map is not an object"]
    problems = level_problems(map.get("level"))
    for key in ("walls", "small_obstacles", "enemies"):
        if not isinstance(map.get(key), list):
            problems.append(f"{key} must be a list")
    for i, wall in enumerate(map.get("walls") or []):
        if not isinstance(wall, dict):
            problems.append(f"walls[{i}] is not a Wall object")
            continue
        problems += [p for end in ("start_pos", "end_pos")
                     if (p := _position_problem(wall.get(end), f"walls[{i}].{end}"))]
    for key in ("small_obstacles", "enemies"):
        problems += [p for i, pos in enumerate(map.get(key) or [])
                     if (p := _position_problem(pos, f"{key}[{i}]"))]
    if problem := _position_problem(map.get("player_pos"), "player_pos"):
        problems.append(problem)
    return problems


def _cell(pos: dict) -> Cell:
    return (pos["x"], pos["y"])


def wall_cells(start: Cell, end: Cell, width: int, height: int) -> list[Cell]:
    """Tiles a wall covers inside the grid: the box between its ends, as Jaseci draws it.

    Endpoint order is ignored here (`walls_straight` reports it) and parts outside the grid
    are left out (`in_bounds` reports them), so a bad wall never costs more than the grid.
    """
    x0, x1 = sorted((start[0], end[0]))
    y0, y1 = sorted((start[1], end[1]))
    return [(x, y) for x in range(max(x0, 1), min(x1, width) + 1)
            for y in range(max(y0, 1), min(y1, height) + 1)]


@dataclass(frozen=True)
class MapView:
    """A parsed Map: coordinates as tuples, so checks do not repeat dict lookups."""

    width: int
    height: int
    num_wall: int
    num_enemies: int
    walls: list[tuple[Cell, Cell]]
    obstacles: list[Cell]
    enemies: list[Cell]
    player: Cell

    @classmethod
    def parse(cls, map: Any) -> MapView:
        """Raises ValueError naming what is wrong when `map` is not a Map."""
        if problems := map_problems(map):
            raise ValueError("not a Map: " + "; ".join(problems[:EXAMPLES]))
        level = map["level"]
        return cls(level["width"], level["height"], level["num_wall"], level["num_enemies"],
                   [(_cell(w["start_pos"]), _cell(w["end_pos"])) for w in map["walls"]],
                   [_cell(p) for p in map["small_obstacles"]],
                   [_cell(p) for p in map["enemies"]], _cell(map["player_pos"]))

    def inside(self, cell: Cell) -> bool:
        return 1 <= cell[0] <= self.width and 1 <= cell[1] <= self.height

    def wall_set(self) -> set[Cell]:
        return {c for start, end in self.walls
                for c in wall_cells(start, end, self.width, self.height)}

    def blocked(self) -> set[Cell]:
        """Tiles nobody can stand on: walls and small obstacles, inside the grid."""
        return self.wall_set() | {c for c in self.obstacles if self.inside(c)}


def map_cells(map: Any) -> dict[Cell, str]:
    """What each non-floor tile inside the grid holds: "wall", "obstacle", "enemy", "player".

    Where things overlap (an error `no_overlap` reports) the player wins, then an enemy,
    then an obstacle, so a render shows what a player would meet.
    """
    view = map if isinstance(map, MapView) else MapView.parse(map)
    cells = dict.fromkeys(sorted(view.wall_set()), "wall")
    for kind, positions in (("obstacle", view.obstacles), ("enemy", view.enemies),
                            ("player", [view.player])):
        cells.update((c, kind) for c in positions if view.inside(c))
    return cells


def distances_from(start: Cell, width: int, height: int, blocked: set[Cell]) -> dict[Cell, int]:
    """4-neighbour BFS steps from `start` to every tile reachable over unblocked tiles.

    The start itself counts as reachable even when blocked, so reachability can still be
    judged (and reported once, elsewhere) for a player standing on a wall.
    """
    dist = {start: 0}
    queue = deque([start])
    while queue:
        x, y = queue.popleft()
        for nxt in ((x + 1, y), (x - 1, y), (x, y + 1), (x, y - 1)):
            if (nxt not in dist and nxt not in blocked
                    and 1 <= nxt[0] <= width and 1 <= nxt[1] <= height):
                dist[nxt] = dist[(x, y)] + 1
                queue.append(nxt)
    return dist


def _summary(found: list[str], what: str) -> str:
    shown = "; ".join(found[:EXAMPLES])
    more = f" (and {len(found) - EXAMPLES} more {what})" if len(found) > EXAMPLES else ""
    return shown + more


def _verdict(name: str, failures: list[str], what: str = "") -> Verdict:
    return Verdict(name, not failures, _summary(failures, what or "problems"))


def _walls_straight(view: MapView) -> Verdict:
    bad = []
    for i, (start, end) in enumerate(view.walls):
        span = f"wall {i} from {fmt(start)} to {fmt(end)}"
        if start[0] != end[0] and start[1] != end[1]:
            bad.append(f"{span} is diagonal")
        elif start > end:
            bad.append(f"{span} runs backwards (start must be <= end)")
    return _verdict("walls_straight", bad, "walls")


def _in_bounds(view: MapView) -> Verdict:
    things = [(f"wall {i} end", c) for i, w in enumerate(view.walls) for c in w]
    things += [("obstacle", c) for c in view.obstacles]
    things += [("enemy", c) for c in view.enemies] + [("player", view.player)]
    grid = f"1..{view.width} x 1..{view.height}"
    bad = [f"{what} at {fmt(c)} outside {grid}" for what, c in things if not view.inside(c)]
    return _verdict("in_bounds", bad, "outside")


def _one_player_on_floor(view: MapView, walls: set[Cell]) -> Verdict:
    player = view.player
    if not view.inside(player):
        return Verdict("one_player_on_floor", False, f"player at {fmt(player)} is off the map")
    if player in walls:
        return Verdict("one_player_on_floor", False, f"player at {fmt(player)} is on a wall")
    if player in view.obstacles:
        return Verdict("one_player_on_floor", False,
                       f"player at {fmt(player)} is on an obstacle")
    return Verdict("one_player_on_floor", True)


def _enemy_count(view: MapView) -> Verdict:
    n = len(view.enemies)
    return Verdict("enemy_count", n == view.num_enemies,
                   "" if n == view.num_enemies else f"{n} enemies, level says {view.num_enemies}")


def _wall_count(view: MapView) -> Verdict:
    n, want = len(view.walls), view.num_wall
    tol = wall_tolerance(want)
    ok = abs(n - want) <= tol
    return Verdict("wall_count", ok, "" if ok else f"{n} walls, level says {want} (±{tol})")


def _no_overlap(view: MapView, walls: set[Cell]) -> Verdict:
    things = [("enemy", c) for c in view.enemies] + [("obstacle", c) for c in view.obstacles]
    things.append(("player", view.player))
    at: dict[Cell, list[str]] = {}
    for what, cell in things:
        at.setdefault(cell, []).append(what)
    bad = [f"{' and '.join(sorted(whats))} share {fmt(cell)}"
           for cell, whats in at.items() if len(whats) > 1]
    bad += [f"{what} at {fmt(cell)} is on a wall" for what, cell in things
            if what != "obstacle" and cell in walls]
    return _verdict("no_overlap", bad, "overlaps")


def _reachable(view: MapView, blocked: set[Cell]) -> Verdict:
    player = view.player
    if not view.inside(player):
        return Verdict("reachable", False, f"player at {fmt(player)} is off the map")
    reached = distances_from(player, view.width, view.height, blocked)
    bad = [f"enemy at {fmt(c)} not reachable from player at {fmt(player)}"
           for c in view.enemies if view.inside(c) and c not in reached]
    stranded = [(x, y) for y in range(1, view.height + 1) for x in range(1, view.width + 1)
                if (x, y) not in blocked and (x, y) not in reached]
    if stranded:
        examples = ", ".join(fmt(c) for c in stranded[:EXAMPLES])
        bad.append(f"{len(stranded)} floor tile(s) not reachable from player at "
                   f"{fmt(player)}, e.g. {examples}")
    return _verdict("reachable", bad, "unreachable")


def _enemy_not_adjacent_to_spawn(view: MapView) -> Verdict:
    px, py = view.player
    bad = []
    for ex, ey in view.enemies:
        steps = abs(ex - px) + abs(ey - py)
        if steps <= SPAWN_SAFE_RADIUS:
            bad.append(f"enemy at {fmt((ex, ey))} is {steps} step(s) from player at "
                       f"{fmt(view.player)} (must be > {SPAWN_SAFE_RADIUS})")
    return _verdict("enemy_not_adjacent_to_spawn", bad, "enemies")


def check_map(map: Any) -> list[Verdict]:
    """Every map check; just `map_parses` when the value is not a Map."""
    if problems := map_problems(map):
        return [Verdict("map_parses", False, _summary(problems, "problems"))]
    view = MapView.parse(map)
    walls = view.wall_set()
    blocked = view.blocked()
    return [
        Verdict("map_parses", True),
        _walls_straight(view),
        _in_bounds(view),
        _one_player_on_floor(view, walls),
        _enemy_count(view),
        _wall_count(view),
        _no_overlap(view, walls),
        _reachable(view, blocked),
        _enemy_not_adjacent_to_spawn(view),
    ]


def level_capacity(width: int, height: int) -> int:
    """Most enemies plus walls (plus the player) a level may ask for: a third of the tiles.

    Walls are segments of several tiles and maps also need room to move, so a level asking
    for more cannot be laid out as a playable map.
    """
    return width * height // 3


def _matches(name: str, level: dict, request: dict, pairs: list[tuple[str, str]]) -> Verdict:
    """Each (level field, request argument) pair must hold the same integer."""
    bad = []
    for key, arg in pairs:
        want = request.get(arg)
        if not _is_int(want):
            bad.append(f"the request has no integer {arg} to compare {key} with")
        elif level[key] != want:
            bad.append(f"{key} is {level[key]}, the request asked for {want}")
    return _verdict(name, bad)


def _previous(request: dict) -> list[dict]:
    last = request.get("last_levels")
    return [lv for lv in last if isinstance(lv, dict)] if isinstance(last, list) else []


def check_level(level: Any, request: dict | None) -> list[Verdict]:
    """Every level check against the call's arguments; just `level_parses` when the value
    is not a Level. A request missing an argument fails the check that needs it."""
    if problems := level_problems(level):
        return [Verdict("level_parses", False, _summary(problems, "problems"))]
    request = request if isinstance(request, dict) else {}
    verdicts = [
        Verdict("level_parses", True),
        _matches("level_size_matches", level, request,
                 [("width", "level_width"), ("height", "level_height")]),
        _matches("level_difficulty_matches", level, request, [("difficulty", "difficulty")]),
    ]
    previous = _previous(request)
    last_difficulty = previous[-1].get("difficulty") if previous else None
    if _is_int(last_difficulty) and level["difficulty"] < last_difficulty:
        verdicts.append(Verdict("difficulty_rises", False,
                                f"difficulty {level['difficulty']} is below the last "
                                f"level's {last_difficulty}"))
    else:
        verdicts.append(Verdict("difficulty_rises", True))
    reused = [lv["name"] for lv in previous
              if isinstance(lv.get("name"), str)
              and lv["name"].strip().casefold() == level["name"].strip().casefold()]
    verdicts.append(Verdict("name_is_new", not reused,
                            f"name {reused[0]!r} was used by a previous level" if reused else ""))
    verdicts.append(_counts_sane(level))
    return verdicts


def _counts_sane(level: dict) -> Verdict:
    bad = []
    if level["num_enemies"] < 1:
        bad.append(f"num_enemies is {level['num_enemies']}, needs at least 1")
    if level["num_wall"] < 0:
        bad.append(f"num_wall is {level['num_wall']}, cannot be negative")
    cap = level_capacity(level["width"], level["height"])
    if level["num_enemies"] + level["num_wall"] + 1 > cap:
        bad.append(f"{level['num_enemies']} enemies + {level['num_wall']} walls + the player "
                   f"do not fit a {level['width']}x{level['height']} map (at most {cap})")
    if level["time_countdown"] <= 0:
        bad.append(f"time_countdown is {level['time_countdown']}, must be positive")
    if level["n_retries_allowed"] < 0:
        bad.append(f"n_retries_allowed is {level['n_retries_allowed']}, cannot be negative")
    return _verdict("level_counts_sane", bad)
