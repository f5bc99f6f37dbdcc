"""The offline designer's levels and maps pass the checks, vary, and render correctly."""

from __future__ import annotations

import itertools
import json
import random
from dataclasses import dataclass

import pytest
from PIL import Image

from byllm_distill.rpg.checks import check_level, check_map
from byllm_distill.rpg.generator import design_level, design_map
from byllm_distill.rpg.metrics import diversity, hamming
from byllm_distill.rpg.render import COLOURS, TILE_PX, to_ascii, to_png

RUNS, LEVELS = 20, 5


@dataclass
class Step:
    request: dict
    level: dict
    map: dict


def play(seed: int) -> list[Step]:
    """One run as the showcase program plays it: rising difficulty, last 3 levels passed."""
    rng = random.Random(seed)
    width, height = rng.randint(12, 30), rng.randint(12, 30)
    steps: list[Step] = []
    for difficulty in range(1, LEVELS + 1):
        last = [s.level for s in steps][-3:]
        request = {"last_levels": last, "difficulty": difficulty, "level_width": width,
                   "level_height": height}
        level = design_level(last, difficulty, width, height, rng)
        steps.append(Step(request, level, design_map(level, rng)))
    return steps


@pytest.fixture(scope="module")
def runs() -> list[list[Step]]:
    return [play(seed) for seed in range(RUNS)]


@pytest.fixture(scope="module")
def steps(runs: list[list[Step]]) -> list[Step]:
    return [step for run in runs for step in run]


def test_maps_pass_every_check(steps: list[Step]) -> None:
    failures = {i: [v for v in check_map(s.map) if not v.passed] for i, s in enumerate(steps)}
    failures = {i: f for i, f in failures.items() if f}
    assert len(steps) == RUNS * LEVELS
    assert len(failures) <= 0.02 * len(steps), failures


def test_levels_pass_every_check(steps: list[Step]) -> None:
    for step in steps:
        assert [v for v in check_level(step.level, step.request) if not v.passed] == []
        assert set(step.level) == {"name", "difficulty", "width", "height", "num_wall",
                                   "num_enemies", "time_countdown", "n_retries_allowed"}
        assert step.map["level"] is step.level


def test_no_two_maps_are_identical(steps: list[Step]) -> None:
    assert len({json.dumps(s.map, sort_keys=True) for s in steps}) == len(steps)


def test_maps_have_exactly_the_levels_counts(steps: list[Step]) -> None:
    for step in steps:
        assert len(step.map["walls"]) == step.level["num_wall"]
        assert len(step.map["enemies"]) == step.level["num_enemies"]


def test_difficulty_shapes_each_run(runs: list[list[Step]]) -> None:
    for run in runs:
        levels = [s.level for s in run]
        for before, after in itertools.pairwise(levels):
            assert after["num_enemies"] >= before["num_enemies"]
            assert after["num_wall"] >= before["num_wall"]
            assert after["time_countdown"] < before["time_countdown"]
            assert after["n_retries_allowed"] <= before["n_retries_allowed"]
        assert levels[-1]["num_enemies"] > levels[0]["num_enemies"]
        assert levels[-1]["n_retries_allowed"] < levels[0]["n_retries_allowed"]
        assert len({lv["name"].split(":")[1] for lv in levels}) == LEVELS
        assert [lv["name"].split(":")[0] for lv in levels] == [
            f"Level {n}" for n in range(1, LEVELS + 1)]


def test_hardest_small_level_still_lays_out() -> None:
    rng = random.Random(7)
    level = design_level([], 10, 10, 10, rng)
    request = {"last_levels": [], "difficulty": 10, "level_width": 10, "level_height": 10}
    assert [v for v in check_level(level, request) if not v.passed] == []
    for _ in range(5):
        assert [v for v in check_map(design_map(level, rng)) if not v.passed] == []


def test_same_seed_same_design_and_other_seeds_differ() -> None:
    assert play(3) == play(3)
    assert play(3)[0].map != play(4)[0].map
    level = play(3)[0].level
    assert design_map(level, random.Random(1)) == design_map(level, random.Random(1))
    assert design_map(level, random.Random(1)) != design_map(level, random.Random(2))


def test_design_map_refuses_a_non_level() -> None:
    with pytest.raises(ValueError, match="level.width must be an integer"):
        design_map({"name": "x", "difficulty": 1}, random.Random(0))


def test_ascii_render(steps: list[Step]) -> None:
    for step in steps[:10]:
        grid = to_ascii(step.map)
        rows = grid.split("\n")
        width, height = step.level["width"], step.level["height"]
        assert len(rows) == height + 2 and {len(r) for r in rows} == {width + 2}
        assert set(grid) <= set(".BEP\n")
        assert grid.count("P") == 1 and grid.count("E") == step.level["num_enemies"]
        assert rows[0] == rows[-1] == "B" * (width + 2)
        player = step.map["player_pos"]
        assert rows[player["y"]][player["x"]] == "P"  # 1-based coordinates, border at 0


def test_png_render(tmp_path, steps: list[Step]) -> None:
    step = steps[0]
    path = to_png(step.map, tmp_path / "maps" / "level.png")
    assert path.exists()
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == ((step.level["width"] + 2) * TILE_PX,
                              (step.level["height"] + 2) * TILE_PX)
        player = step.map["player_pos"]
        centre = (player["x"] * TILE_PX + TILE_PX // 2, player["y"] * TILE_PX + TILE_PX // 2)
        assert image.getpixel(centre) == COLOURS["player"]
        assert image.getpixel((1, 1)) == COLOURS["border"]


def test_hamming() -> None:
    a, b = play(0)[0].map, play(0)[1].map  # same run, same size
    assert hamming(a, a) == 0
    naive = sum(x != y for x, y in zip(to_ascii(a), to_ascii(b), strict=True))
    assert hamming(a, b) == naive > 0
    other = dict(a, level=dict(a["level"], width=a["level"]["width"] + 1))
    assert hamming(a, other) is None


def test_diversity(steps: list[Step]) -> None:
    maps = [s.map for s in steps]
    stats = diversity(maps)
    assert stats["unique_fraction"] == 1.0
    same_size = [(a, b) for a, b in itertools.combinations(maps, 2)
                 if hamming(a, b) is not None]
    assert stats["pairs"] == len(same_size) > 0
    naive = sum(hamming(a, b) for a, b in same_size) / len(same_size)
    assert stats["mean_pairwise_hamming"] == pytest.approx(naive)
    assert stats["mean_pairwise_hamming"] > 10


def test_diversity_edge_cases() -> None:
    m = play(0)[0].map
    assert diversity([]) == {"unique_fraction": 0.0, "mean_pairwise_hamming": None, "pairs": 0}
    assert diversity([m, m]) == {"unique_fraction": 0.5, "mean_pairwise_hamming": 0.0,
                                 "pairs": 1}
    assert diversity([m, {"not": "a map"}])["unique_fraction"] == 1.0
