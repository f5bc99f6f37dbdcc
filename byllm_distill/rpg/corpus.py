"""Corpus runs: play the RPG program many times to fill the store, then summarise.

`generate_corpus` imports the showcase program (program/rpg.jac) in this process, so its
`by llm()` calls go through jaclang and are captured like any user's program, plays
`runs` runs of `levels_per_run` levels (sizes drawn per run from `SIZES`, seeded), flushes
capture, and summarises the records written: records per site, % passing every
validator, failures per validator, unique-map fraction, and mean pairwise Hamming
distance between same-size maps.
"""

from __future__ import annotations

import importlib
import os
import random
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from byllm_distill.errors import DistillError
from byllm_distill.progress import Progress, Step, report
from byllm_distill.store import RecordFilter, Store
from byllm_distill.store.record import utc_now

PROGRAM_DIR = Path(__file__).resolve().parent / "program"
MODULE = "rpg"
MAP_SITE = f"{MODULE}.create_next_map"
LEVEL_SITE = f"{MODULE}.create_next_level"
SIZES = [(12, 10), (16, 12), (20, 14), (24, 16)]


def load_program(teacher: str | None = None, teacher_errors: float | None = None) -> Any:
    """Import the showcase program as module `rpg` (so site keys match `jac run rpg.jac`).

    `teacher_errors` sets the offline designer's simulated mistake rate (rpg/mistakes.py),
    also on a program imported earlier."""
    if teacher:
        os.environ["BYLLM_DISTILL_TEACHER"] = teacher
    if teacher_errors is not None:
        os.environ["BYLLM_DISTILL_TEACHER_ERRORS"] = str(teacher_errors)
    import jaclang  # noqa: F401 - registers the .jac importer and the capture plugin

    if str(PROGRAM_DIR) not in sys.path:
        sys.path.insert(0, str(PROGRAM_DIR))
    program = importlib.import_module(MODULE)
    if teacher_errors is not None and hasattr(program.llm, "errors"):
        program.llm.errors = teacher_errors
    return program


@dataclass
class CorpusSummary:
    records_per_site: dict[str, int]
    all_valid_fraction: float
    failures_per_validator: dict[str, int]
    unique_map_fraction: float
    mean_pairwise_hamming: float | None
    maps: int
    errors: int = 0
    record_ids: list[str] = field(default_factory=list)
    # Simulated teacher mistakes by mode (rpg/mistakes.py), when the designer made any.
    mistakes: dict[str, int] = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = ["records per site:"]
        out += [f"  {site:<32} {n:>6}" for site, n in sorted(self.records_per_site.items())]
        out.append(f"pass every validator:            {self.all_valid_fraction:7.1%}")
        out.append(f"failed calls:                    {self.errors:>7}")
        out.append("failures per validator:" + ("" if self.failures_per_validator else " none"))
        out += [f"  {name:<32} {n:>6}" for name, n in
                sorted(self.failures_per_validator.items(), key=lambda kv: -kv[1])]
        out.append(f"unique maps:                     {self.unique_map_fraction:7.1%} "
                   f"of {self.maps}")
        hamming = ("n/a" if self.mean_pairwise_hamming is None
                   else f"{self.mean_pairwise_hamming:.1f} tiles")
        out.append(f"mean pairwise Hamming distance:  {hamming} (same-size maps)")
        if self.mistakes:
            out.append(f"simulated teacher mistakes:      {sum(self.mistakes.values()):>7} "
                       "(--teacher-errors; each should fail a validator above)")
            out += [f"  {mode:<32} {n:>6}" for mode, n in sorted(self.mistakes.items())]
        return out


def play_runs(program: Any, runs: int, levels_per_run: int, seed: int,
              on_run: Any = None) -> None:
    """Play `runs` seeded runs (size drawn per run; the offline teacher reseeded per run)."""
    rng = random.Random(seed)
    for run in range(runs):
        if hasattr(program.llm, "reseed"):
            program.llm.reseed(seed * 1_000_003 + run)
        width, height = rng.choice(SIZES)
        program.play_run(levels_per_run, width, height)
        if on_run is not None:
            on_run()


def generate_corpus(runs: int, levels_per_run: int, seed: int = 0, teacher: str | None = None,
                    progress: Progress | None = None,
                    teacher_errors: float | None = None) -> CorpusSummary:
    """Play the runs (captured into the configured store) and summarise what was written;
    each run's levels are reported to `progress` (progress.py)."""
    import byllm_distill
    from byllm_distill.capture import get_capture
    from byllm_distill.rpg.settings import rpg_settings

    program = load_program(teacher, teacher_errors)
    rpg_settings()  # a bad teacher_errors setting stops here, with its message
    capture = get_capture()
    if capture is None or not capture.enabled:
        raise DistillError("capture is off (BYLLM_DISTILL_CAPTURE=0 or [plugins.distill] "
                           "capture = false); turn it on to build a corpus.")
    started = utc_now()
    made_before = Counter(getattr(program.llm, "mistakes", None) or {})
    total, played = runs * levels_per_run, [0]

    def on_run() -> None:
        played[0] += levels_per_run
        report(progress, Step("corpus", played[0], total, "level"))

    play_runs(program, runs, levels_per_run, seed, on_run=on_run)
    byllm_distill.flush(120)
    summary = summarize(Store(capture.config.database_url), since=started)
    summary.mistakes = dict(Counter(getattr(program.llm, "mistakes", None) or {}) - made_before)
    return summary


def summarize(store: Store, since: str | None = None) -> CorpusSummary:
    from byllm_distill.rpg.metrics import diversity

    records = [r for site in (LEVEL_SITE, MAP_SITE)
               for r in store.iter_records(RecordFilter(site=site))
               if since is None or r.created_at >= since]
    per_site = Counter(r.site for r in records)
    failures: Counter[str] = Counter()
    for record in records:
        failures.update(v.name for v in record.verdicts or [] if not v.passed)
    valid = sum(1 for r in records if r.valid)
    maps = [r.output for r in records if r.site == MAP_SITE and r.status == "ok"]
    stats = diversity(maps)
    return CorpusSummary(
        records_per_site=dict(per_site),
        all_valid_fraction=valid / len(records) if records else 0.0,
        failures_per_validator=dict(failures),
        unique_map_fraction=stats["unique_fraction"],
        mean_pairwise_hamming=stats["mean_pairwise_hamming"],
        maps=len(maps),
        errors=sum(1 for r in records if r.status == "error"),
        record_ids=[r.id for r in records],
    )
