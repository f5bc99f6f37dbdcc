"""The erring offline teacher (rpg/mistakes.py): every simulated mistake fails the validator
that names it, and filtering removes them.

Unit part: each failure mode, injected into many designed levels and maps (sizes and
difficulties of a real corpus), fails its `CAUGHT_BY` validator, while the clean answer
passes every check. Program part: `rpg generate --teacher-errors 0.3` through the CLI; the
records that fail a validator are exactly as many as the mistakes the designer reports,
each mode's validator shows up among the failures, and `records export --valid-only`
leaves every one of them out.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from conftest import run_cli

from byllm_distill.rpg.checks import check_level, check_map
from byllm_distill.rpg.corpus import SIZES
from byllm_distill.rpg.generator import design_level, design_map
from byllm_distill.rpg.mistakes import CAUGHT_BY, LEVEL_MISTAKES, MAP_MISTAKES, inject


def _runs() -> list[tuple[dict, dict, dict]]:
    """(level request, level, map) for 3 runs of 5 levels per size."""
    out = []
    rng = random.Random(3)
    for width, height in SIZES:
        for _ in range(3):
            last: list[dict] = []
            for difficulty in range(1, 6):
                request = {"last_levels": last[-3:], "difficulty": difficulty,
                           "level_width": width, "level_height": height}
                level = design_level(last[-3:], difficulty, width, height, rng)
                out.append((request, level, design_map(level, rng)))
                last.append(level)
    return out


RUNS = _runs()


def _failed(verdicts: list) -> set[str]:
    return {v.name for v in verdicts if not v.passed}


def test_clean_designs_pass_every_check() -> None:
    for request, level, map in RUNS:
        assert not _failed(check_level(level, request)), level
        assert not _failed(check_map(map)), map


@pytest.mark.parametrize("mode", sorted(MAP_MISTAKES))
def test_every_map_mistake_fails_its_validator(mode: str) -> None:
    rng = random.Random(mode)
    applied = 0
    for _, level, map in RUNS:
        broken, name = inject("Map", map, {"level": level}, rng, mode=mode)
        if name is None:
            continue  # e.g. two-on-one-tile needs two enemies
        applied += 1
        assert broken != map
        assert CAUGHT_BY[mode] in _failed(check_map(broken)), (mode, broken)
    assert applied >= len(RUNS) // 2, f"{mode} applied to only {applied} of {len(RUNS)} maps"


@pytest.mark.parametrize("mode", sorted(LEVEL_MISTAKES))
def test_every_level_mistake_fails_its_validator(mode: str) -> None:
    rng = random.Random(mode)
    applied = 0
    for request, level, _ in RUNS:
        broken, name = inject("Level", level, request, rng, mode=mode)
        if name is None:
            continue  # a reused name needs a previous level
        applied += 1
        assert CAUGHT_BY[mode] in _failed(check_level(broken, request)), (mode, broken)
    assert applied >= len(RUNS) // 2, f"{mode} applied to only {applied} of {len(RUNS)} levels"


def test_inject_leaves_the_answer_alone_and_picks_a_mode_that_applies() -> None:
    request, level, map = RUNS[0]  # first level of a run: no name to reuse
    before = json.dumps(map)
    broken, name = inject("Map", map, {"level": level}, random.Random(0))
    assert name in MAP_MISTAKES and json.dumps(map) == before and broken != map
    for seed in range(20):
        _, name = inject("Level", level, request, random.Random(seed))
        assert name in LEVEL_MISTAKES and name != "reused_name"


def test_generate_with_teacher_errors_every_mistake_is_caught_and_filtered(
        distill_home: Path) -> None:
    result = run_cli("rpg", "generate", "--runs", "12", "--teacher-errors", "0.3")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    injected = int(re.search(r"simulated teacher mistakes:\s+(\d+)", out).group(1))
    assert 0.15 * 120 <= injected <= 0.45 * 120, out  # 12 runs x 5 levels x 2 sites, 30%
    modes = dict(re.findall(r"^\s+(\w+)\s+(\d+)$", out.split("simulated teacher mistakes")[1],
                            re.M))
    failures = out.split("failures per validator:")[1].split("unique maps")[0]
    for mode in modes:
        assert CAUGHT_BY[mode] in failures, (mode, out)

    every = [json.loads(line) for line in run_cli("records", "export").stdout.splitlines()]
    valid = [json.loads(line) for line in
             run_cli("records", "export", "--valid-only").stdout.splitlines()]
    assert len(every) == 120
    invalid = [r for r in every if not all(v["passed"] for v in r["verdicts"])]
    assert len(invalid) == injected  # the clean answers all pass; each mistake fails
    assert {r["id"] for r in valid} == {r["id"] for r in every} - {r["id"] for r in invalid}

    clean = run_cli("rpg", "generate", "--runs", "2")
    assert "simulated teacher mistakes" not in clean.stdout
    assert re.search(r"pass every validator:\s+100.0%", clean.stdout), clean.stdout


def test_teacher_errors_out_of_range_is_a_clear_error(distill_home: Path) -> None:
    result = run_cli("rpg", "generate", "--runs", "1", "--teacher-errors", "1.5")
    assert result.returncode != 0
    assert "1.5" in result.stderr and "0" in result.stderr
    env_bad = run_cli("rpg", "generate", "--runs", "1",
                      env={"BYLLM_DISTILL_TEACHER_ERRORS": "lots"})
    assert env_bad.returncode != 0
    assert "teacher_errors" in env_bad.stderr + env_bad.stdout
