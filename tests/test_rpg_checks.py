"""The RPG validators on hand-made maps and levels: each broken case fails its own check."""

from __future__ import annotations

import copy

import pytest

from byllm_distill.rpg.checks import (
    SPAWN_SAFE_RADIUS,
    check_level,
    check_map,
    map_cells,
    wall_tolerance,
)
from byllm_distill.validators.base import Verdict

MAP_CHECKS = ["map_parses", "walls_straight", "in_bounds", "one_player_on_floor",
              "enemy_count", "wall_count", "no_overlap", "reachable",
              "enemy_not_adjacent_to_spawn"]
LEVEL_CHECKS = ["level_parses", "level_size_matches", "level_difficulty_matches",
                "difficulty_rises", "name_is_new", "level_counts_sane"]


def pos(x: int, y: int) -> dict:
    return {"x": x, "y": y}


def wall(x0: int, y0: int, x1: int, y1: int) -> dict:
    return {"start_pos": pos(x0, y0), "end_pos": pos(x1, y1)}


LEVEL = {"name": "Level 2: Sunken Vault", "difficulty": 2, "width": 8, "height": 6,
         "num_wall": 2, "num_enemies": 2, "time_countdown": 120, "n_retries_allowed": 3}

# 8 x 6, player in the top-left corner:
#   P..B....
#   ...B..E.
#   ...B....
#   ........
#   .B...BBB
#   ....E...
GOOD_MAP = {
    "level": LEVEL,
    "walls": [wall(4, 1, 4, 3), wall(6, 5, 8, 5)],
    "small_obstacles": [pos(2, 5)],
    "enemies": [pos(7, 2), pos(5, 6)],
    "player_pos": pos(1, 1),
}


def make_map(**changes: object) -> dict:
    """GOOD_MAP with top-level keys replaced; `level` changes are merged into the level."""
    result = copy.deepcopy(GOOD_MAP)
    level_changes = changes.pop("level", {})
    result["level"].update(level_changes)
    result.update(copy.deepcopy(changes))
    return result


def failed(verdicts: list[Verdict]) -> set[str]:
    return {v.name for v in verdicts if not v.passed}


def detail(verdicts: list[Verdict], name: str) -> str:
    return next(v.detail for v in verdicts if v.name == name)


def test_good_map_passes_every_check() -> None:
    verdicts = check_map(GOOD_MAP)
    assert [v.name for v in verdicts] == MAP_CHECKS
    assert failed(verdicts) == set()


def test_map_cells_says_what_each_tile_holds() -> None:
    cells = map_cells(GOOD_MAP)
    assert cells[(4, 2)] == "wall" and cells[(8, 5)] == "wall"
    assert cells[(2, 5)] == "obstacle"
    assert cells[(7, 2)] == "enemy" and cells[(1, 1)] == "player"
    assert (2, 2) not in cells  # floor is left out
    assert len(cells) == 3 + 3 + 1 + 2 + 1


def test_player_wins_a_shared_tile_in_map_cells() -> None:
    assert map_cells(make_map(player_pos=pos(4, 2)))[(4, 2)] == "player"


@pytest.mark.parametrize("bad", [
    None,
    [],
    {"level": LEVEL},
    make_map(player_pos={"x": 1}),
    make_map(enemies=[pos(2, True)]),
    make_map(walls=[{"start_pos": pos(1, 1)}]),
    make_map(level={"width": "8"}),
    make_map(level={"height": 10_000}),
    make_map(level={"name": ""}),
])
def test_unparseable_map_gets_only_map_parses(bad: object) -> None:
    verdicts = check_map(bad)
    assert len(verdicts) == 1
    assert verdicts[0].name == "map_parses" and not verdicts[0].passed
    assert verdicts[0].detail


def test_enemy_walled_off_is_unreachable() -> None:
    # (8,1) is cut off by walls at (7,1)-(7,2) and (8,2).
    broken = make_map(walls=[wall(4, 1, 4, 3), wall(7, 1, 7, 2), wall(8, 2, 8, 2)],
                      enemies=[pos(8, 1), pos(5, 6)], level={"num_wall": 3})
    verdicts = check_map(broken)
    assert failed(verdicts) == {"reachable"}
    assert "enemy at (8,1) not reachable from player at (1,1)" in detail(verdicts, "reachable")


def test_floor_pocket_is_unreachable() -> None:
    # An obstacle at (7,6) closes the corner (8,6) under the wall along y=5.
    verdicts = check_map(make_map(small_obstacles=[pos(2, 5), pos(7, 6)]))
    assert failed(verdicts) == {"reachable"}
    assert "1 floor tile(s) not reachable" in detail(verdicts, "reachable")
    assert "(8,6)" in detail(verdicts, "reachable")


def test_player_on_a_wall() -> None:
    verdicts = check_map(make_map(player_pos=pos(4, 2)))
    assert failed(verdicts) == {"one_player_on_floor", "no_overlap"}
    assert detail(verdicts, "one_player_on_floor") == "player at (4,2) is on a wall"


def test_player_on_an_obstacle() -> None:
    verdicts = check_map(make_map(player_pos=pos(2, 5)))
    assert failed(verdicts) == {"one_player_on_floor", "no_overlap"}
    assert "obstacle" in detail(verdicts, "one_player_on_floor")


@pytest.mark.parametrize("changes, where", [
    ({"enemies": [pos(7, 2), pos(9, 3)]}, "enemy at (9,3)"),
    ({"small_obstacles": [pos(2, 0)]}, "obstacle at (2,0)"),
    ({"walls": [wall(4, 1, 4, 3), wall(6, 5, 9, 5)]}, "wall 1 end at (9,5)"),
])
def test_something_out_of_bounds(changes: dict, where: str) -> None:
    verdicts = check_map(make_map(**changes))
    assert failed(verdicts) == {"in_bounds"}
    assert detail(verdicts, "in_bounds") == f"{where} outside 1..8 x 1..6"


def test_player_out_of_bounds_is_not_on_the_floor() -> None:
    verdicts = check_map(make_map(player_pos=pos(0, 1)))
    assert {"in_bounds", "one_player_on_floor", "reachable"} <= failed(verdicts)


def test_two_enemies_on_one_tile() -> None:
    verdicts = check_map(make_map(enemies=[pos(7, 2), pos(7, 2)]))
    assert failed(verdicts) == {"no_overlap"}
    assert detail(verdicts, "no_overlap") == "enemy and enemy share (7,2)"


def test_enemy_on_an_obstacle_overlaps_and_is_stuck() -> None:
    verdicts = check_map(make_map(enemies=[pos(7, 2), pos(2, 5)]))
    assert failed(verdicts) == {"no_overlap", "reachable"}
    assert detail(verdicts, "no_overlap") == "enemy and obstacle share (2,5)"


def test_wrong_enemy_count() -> None:
    verdicts = check_map(make_map(level={"num_enemies": 3}))
    assert failed(verdicts) == {"enemy_count"}
    assert detail(verdicts, "enemy_count") == "2 enemies, level says 3"


@pytest.mark.parametrize("enemy", [(2, 1), (1, 2), (2, 2), (3, 1), (1, 3)])
def test_enemy_next_to_spawn(enemy: tuple[int, int]) -> None:
    verdicts = check_map(make_map(enemies=[pos(*enemy), pos(5, 6)]))
    assert failed(verdicts) == {"enemy_not_adjacent_to_spawn"}
    assert f"enemy at ({enemy[0]},{enemy[1]})" in detail(verdicts, "enemy_not_adjacent_to_spawn")


def test_enemy_just_outside_the_safe_radius_is_fine() -> None:
    assert SPAWN_SAFE_RADIUS == 2
    assert failed(check_map(make_map(enemies=[pos(3, 2), pos(5, 6)]))) == set()


def test_wall_count_tolerance() -> None:
    assert [wall_tolerance(n) for n in (0, 4, 5, 10, 14, 25)] == [1, 1, 1, 2, 2, 5]
    assert failed(check_map(make_map(level={"num_wall": 3}))) == set()  # 2 walls, ±1
    verdicts = check_map(make_map(level={"num_wall": 4}))
    assert failed(verdicts) == {"wall_count"}
    assert detail(verdicts, "wall_count") == "2 walls, level says 4 (±1)"


@pytest.mark.parametrize("walls, message", [
    ([wall(4, 3, 4, 1), wall(6, 5, 8, 5)], "wall 0 from (4,3) to (4,1) runs backwards"),
    ([wall(4, 1, 4, 3), wall(6, 5, 8, 6)], "wall 1 from (6,5) to (8,6) is diagonal"),
])
def test_walls_must_be_straight_and_in_order(walls: list[dict], message: str) -> None:
    verdicts = check_map(make_map(walls=walls))
    assert failed(verdicts) == {"walls_straight"}
    assert message in detail(verdicts, "walls_straight")


REQUEST = {"last_levels": [dict(LEVEL, name="Level 1: Mossy Keep", difficulty=1)],
           "difficulty": 2, "level_width": 8, "level_height": 6}


def test_good_level_passes_every_check() -> None:
    verdicts = check_level(LEVEL, REQUEST)
    assert [v.name for v in verdicts] == LEVEL_CHECKS
    assert failed(verdicts) == set()


def test_first_level_has_nothing_to_rise_from() -> None:
    assert failed(check_level(LEVEL, dict(REQUEST, last_levels=[]))) == set()


@pytest.mark.parametrize("bad", [None, {}, dict(LEVEL, num_wall=True),
                                 dict(LEVEL, name=None), dict(LEVEL, width=0)])
def test_unparseable_level_gets_only_level_parses(bad: object) -> None:
    verdicts = check_level(bad, REQUEST)
    assert [v.name for v in verdicts] == ["level_parses"] and not verdicts[0].passed


def test_level_of_the_wrong_size() -> None:
    verdicts = check_level(dict(LEVEL, width=10), REQUEST)
    assert failed(verdicts) == {"level_size_matches"}
    assert detail(verdicts, "level_size_matches") == "width is 10, the request asked for 8"


def test_level_of_the_wrong_difficulty() -> None:
    verdicts = check_level(dict(LEVEL, difficulty=3), REQUEST)
    assert failed(verdicts) == {"level_difficulty_matches"}


def test_falling_difficulty() -> None:
    request = dict(REQUEST, last_levels=[dict(LEVEL, name="Level 1: Ashen Crypt",
                                              difficulty=4)])
    verdicts = check_level(LEVEL, request)
    assert failed(verdicts) == {"difficulty_rises"}
    assert detail(verdicts, "difficulty_rises") == "difficulty 2 is below the last level's 4"


def test_reused_name() -> None:
    request = dict(REQUEST, last_levels=[dict(LEVEL, difficulty=1)])
    assert failed(check_level(LEVEL, request)) == {"name_is_new"}


@pytest.mark.parametrize("changes, message", [
    ({"num_enemies": 0}, "num_enemies is 0"),
    ({"num_wall": -1}, "num_wall is -1"),
    ({"num_enemies": 12, "num_wall": 4}, "do not fit a 8x6 map (at most 16)"),
    ({"time_countdown": 0}, "time_countdown is 0"),
    ({"n_retries_allowed": -2}, "n_retries_allowed is -2"),
])
def test_insane_counts(changes: dict, message: str) -> None:
    verdicts = check_level(dict(LEVEL, **changes), REQUEST)
    assert failed(verdicts) == {"level_counts_sane"}
    assert message in detail(verdicts, "level_counts_sane")


def test_request_without_arguments_fails_the_checks_that_need_them() -> None:
    verdicts = check_level(LEVEL, {})
    assert failed(verdicts) == {"level_size_matches", "level_difficulty_matches"}
    assert "no integer level_width to compare width with" in detail(verdicts,
                                                                    "level_size_matches")
