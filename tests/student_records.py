"""RPG map records as the offline teacher would have them captured, built without Jac.

The messages copy the prompt byLLM builds for `create_next_map` (system persona, docstring,
the level's repr), so "before compaction" token counts are those of a real capture; the
response format is the one byLLM sends for `Map` (saved in fixtures/).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from byllm_distill.codec.site import SiteCodec
from byllm_distill.rpg.checks import check_map
from byllm_distill.rpg.generator import design_level, design_map
from byllm_distill.store import Record

SITE = "rpg.create_next_map"
FINGERPRINT = "test-map-contract"
RESPONSE_FORMAT = json.loads(
    (Path(__file__).parent / "fixtures" / "map_response_format.json").read_text())
SYSTEM = ("    This is a task you must complete by returning only the output.\n    Do not "
          "include explanations, code, or extra text\u2014only the result.\n    ")
DOC = ("Lay out the level's map: exactly num_enemies enemies and num_wall wall segments, "
       "every\ntile inside the level's bounds, no two things on one tile, every floor tile "
       "and enemy\nreachable from the player, no enemy next to the player.")
SIZES = [(12, 10), (16, 12), (20, 14)]


def _level_repr(level: dict) -> str:
    fields = ", ".join(f"{k}={v!r}" for k, v in level.items())
    return f"Level({fields})"


def map_record(level: dict, output: dict, model: str = "offline-designer") -> Record:
    return Record(
        site=SITE, fingerprint=FINGERPRINT, model=model,
        messages=[{"role": "system", "content": SYSTEM},
                  {"role": "user", "content": [
                      {"type": "text", "text": f"{DOC}\n\nlevel = ({_level_repr(level)}, '')"}]}],
        args={"level": level}, latency_ms=5.0, schema=RESPONSE_FORMAT,
        output_raw=json.dumps(output), output=output, verdicts=check_map(output))


def map_records(n: int, seed: int = 0) -> list[Record]:
    """`n` valid map records from seeded runs of rising difficulty."""
    rng = random.Random(seed)
    out: list[Record] = []
    last: list[dict] = []
    width, height = SIZES[0]
    while len(out) < n:
        if len(out) % 5 == 0:
            last = []
            width, height = rng.choice(SIZES)
        level = design_level(last[-3:], len(last) + 1, width, height, rng)
        out.append(map_record(level, design_map(level, rng)))
        last.append(level)
    return out


def map_codec(records: list[Record]) -> SiteCodec:
    """The codec training would mine from these map records."""
    return SiteCodec.mine([r.args for r in records], [r.output for r in records],
                          RESPONSE_FORMAT)
