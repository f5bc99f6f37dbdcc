"""Records for evaluation tests, made with the offline designer directly (no Jac run).

`map_records` gives teacher answers to `create_next_map`; the students below answer the
same `args` the way a trained student would be called: `answer(args) -> (output, ms)`.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable
from typing import Any

from byllm_distill.rpg.generator import design_level, design_map
from byllm_distill.store import Record
from byllm_distill.validators import registry

MAP_SITE = "rpg.create_next_map"
LEVEL_SITE = "rpg.create_next_level"
SIZES = [(12, 10), (16, 12)]


def map_records(n: int, seed: int, site: str = MAP_SITE) -> list[Record]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        width, height = rng.choice(SIZES)
        level = design_level([], rng.randint(1, 6), width, height, rng)
        record = Record(site=site, fingerprint="fp-map", model="offline-designer", messages=[],
                        args={"level": level}, latency_ms=rng.uniform(800, 2400),
                        output=design_map(level, rng), cost=0.002)
        record.verdicts = registry.validate(record)
        out.append(record)
    return out


def level_records(n: int, seed: int, site: str = LEVEL_SITE) -> list[Record]:
    """Level calls with two previous levels of difficulty d-2, d-1 as context."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        width, height = rng.choice(SIZES)
        d = rng.randint(3, 8)
        last = [design_level([], d - 2, width, height, rng)]
        last.append(design_level(last, d - 1, width, height, rng))
        args = {"last_levels": last, "difficulty": d, "level_width": width,
                "level_height": height}
        record = Record(site=site, fingerprint="fp-level", model="offline-designer",
                        messages=[], args=args, latency_ms=rng.uniform(500, 900),
                        output=design_level(last, d, width, height, rng), cost=0.001)
        record.verdicts = registry.validate(record)
        out.append(record)
    return out


def procedural_student(seed: int, drop_enemies: bool = False,
                       copies: dict[str, Any] | None = None) -> Callable[[dict], tuple]:
    """The offline designer with another seed; `drop_enemies` removes every enemy (a
    degraded student); `copies` maps canonical args to a map returned verbatim."""

    def answer(args: dict[str, Any]) -> tuple[str, float]:
        key = json.dumps(args, sort_keys=True)
        if copies and key in copies:
            return json.dumps(copies[key]), 9.0
        out = design_map(args["level"], random.Random(f"{seed}:{key}"))
        if drop_enemies:
            out["enemies"] = []
        return json.dumps(out), 12.0

    return answer


def echo_student(teacher: list[Record]) -> Callable[[dict], tuple]:
    """A perfect student: the teacher's own answer to each input."""
    answers = {json.dumps(r.args, sort_keys=True): r.output for r in teacher}
    return lambda args: (copy.deepcopy(answers[json.dumps(args, sort_keys=True)]), 10.0)


def easier_level_student(args: dict[str, Any]) -> tuple[dict, float]:
    """Answers with a level one difficulty below the last one: progression broken."""
    last = args["last_levels"]
    level = dict(last[-1], difficulty=last[-1]["difficulty"] - 1, name="Level 9: Same Old")
    return level, 8.0
