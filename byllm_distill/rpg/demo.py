"""`byllm-distill demo` (a command of the RPG task, cli.py): the whole loop on embedded
defaults, no API key.

1. Capture: play RPG runs with the offline teacher (optionally with simulated mistakes,
   `--teacher-errors`); every call is recorded and validated.
2. Train: the worker trains a student for each of the program's two sites,
   `rpg.create_next_level` and `rpg.create_next_map` (LoRA on the embedded SmolLM2-135M),
   exports a GGUF, scores it on held-out inputs, activates it in shadow.
3. Shadow: more runs; the students answer alongside the teacher and the gate decides,
   per site.
4. Serve: more runs; a site whose gate passed is served by its student (with teacher
   fallback on any invalid answer). Where the gate refused, the demo says so and pins the
   version for this step only (what `byllm-distill pin` does), so the serving path and its
   fallback still run and are measured; the pin is removed afterwards, leaving the gate's
   decision in force.
5. Before/after, per site: latency, validity, cost (and what the same calls would cost on
   a hosted model, estimated from their size and litellm's price table).

Everything goes to its own data dir (default `.byllm-distill-demo`), recreated each run.
"""

from __future__ import annotations

import os
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from byllm_distill.errors import DistillError
from byllm_distill.lifecycle import JobReport, Worker, promote_if_ready, set_pin
from byllm_distill.progress import Progress, Step, report
from byllm_distill.registry import SiteRegistry
from byllm_distill.rpg.corpus import LEVEL_SITE, MAP_SITE
from byllm_distill.store import Record, RecordFilter, Store
from byllm_distill.training.trainer import budget_help

MARKER = ".byllm-distill-demo"
HOSTED_REFERENCE = "gpt-4o-mini"
SITES = (LEVEL_SITE, MAP_SITE)


@dataclass
class DemoOptions:
    """The demo's settings; `byllm-distill demo`'s options are made from these fields."""

    home: Path = field(default=Path(".byllm-distill-demo"), metadata={
        "help": "The demo's own data folder (recreated on every run)."})
    runs: int = field(default=40, metadata={"help": "Corpus runs (5 levels each)."})
    levels_per_run: int = 5
    steps: int | None = field(default=None, metadata={
        "help": "LoRA training steps per site (default: the trainer's budget)."})
    # The gate is asked after each shadow answer: n grows with the runs.
    shadow_runs: int = field(default=6, metadata={
        "help": "Runs in shadow mode before the gate decides."})
    serve_runs: int = field(default=2, metadata={"help": "Runs served afterwards."})
    seed: int = field(default=0, metadata={"help": "Seed of the runs and the teacher."})
    teacher_errors: float = field(default=0.0, metadata={
        "help": "Simulation: this fraction of the offline teacher's answers carries a "
                "mistake hosted models make; training keeps only valid records."})

    def __post_init__(self) -> None:
        self.home = Path(self.home)
        if min(self.runs, self.levels_per_run, self.shadow_runs) < 1 or self.serve_runs < 0:
            raise DistillError("the demo needs at least 1 corpus run, 1 level per run and 1 "
                               "shadow run (and 0 or more serve runs).")
        if self.steps is not None and self.steps < 1:
            raise DistillError(f"--steps must be at least 1, got {self.steps}.")
        if not 0.0 <= self.teacher_errors <= 1.0:
            raise DistillError("--teacher-errors must be a fraction between 0 and 1, got "
                               f"{self.teacher_errors}.")


def _fresh_home(home: Path) -> None:
    if home.exists():
        if not (home / MARKER).exists():
            raise SystemExit(f"{home} exists and is not a demo folder; pick another --home.")
        shutil.rmtree(home)
    home.mkdir(parents=True)
    (home / MARKER).write_text("created by byllm-distill demo; deleted on the next demo run\n")


def _p(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _hosted_cost_per_1k(records: list[Record]) -> float | None:
    """≈ cost of these calls on a hosted model: tokens estimated as characters / 4."""
    try:
        import litellm

        prices = litellm.model_cost[HOSTED_REFERENCE]
    except (ImportError, KeyError):
        return None
    if not records:
        return None
    total = 0.0
    for r in records:
        prompt_chars = sum(len(str(m.get("content", ""))) for m in r.messages)
        total += prompt_chars / 4 * prices["input_cost_per_token"]
        total += len(r.output_raw or "") / 4 * prices["output_cost_per_token"]
    return total / len(records) * 1000


def summarize(records: list[Record]) -> dict[str, Any]:
    latencies = [r.latency_ms for r in records]
    costs = [r.cost or 0.0 for r in records]
    return {
        "calls": len(records),
        "p50_ms": round(_p(latencies, 0.5), 1),
        "p95_ms": round(_p(latencies, 0.95), 1),
        "valid": (sum(1 for r in records if r.valid) / len(records)) if records else None,
        "cost_per_1k": round(statistics.fmean(costs) * 1000, 4) if costs else None,
    }


def run_demo(options: DemoOptions, say: Callable[[str], None] = print,
             progress: Progress | None = None) -> dict[str, Any]:
    """The five steps above; lines go to `say`, the long steps' progress to `progress`."""
    _fresh_home(options.home)
    os.environ["BYLLM_DISTILL_HOME"] = str(options.home.resolve())
    if options.steps is not None:
        os.environ["BYLLM_DISTILL_TRAIN_STEPS"] = str(options.steps)
    # The demo trains right after its corpus, however small a corpus it was asked for.
    os.environ["BYLLM_DISTILL_RETRAIN_AFTER"] = "1"
    os.environ.pop("BYLLM_DISTILL_TEACHER", None)  # the demo is offline by definition
    os.environ["BYLLM_DISTILL_TEACHER_ERRORS"] = str(options.teacher_errors)
    from byllm_distill import capture, router
    from byllm_distill.config import load_config
    from byllm_distill.rpg.corpus import generate_corpus, load_program

    router.reset_router()
    capture.reset_capture()
    config = load_config()
    store = Store(config.database_url)

    mistakes = (f", {options.teacher_errors:.0%} of its answers with a simulated mistake"
                if options.teacher_errors else "")
    say(f"[1/5] Capture: {options.runs} runs x {options.levels_per_run} levels with the "
        f"offline teacher{mistakes} (every by llm() call is recorded and validated)")
    corpus = generate_corpus(options.runs, options.levels_per_run, seed=options.seed,
                             teacher_errors=options.teacher_errors, progress=progress)
    for line in corpus.lines():
        say("      " + line)

    reports = _train(config, store, say, progress)
    program = load_program()
    say(f"[3/5] Shadow: {options.shadow_runs} runs; the students answer each call alongside "
        "the teacher, off the caller's path, and the gate scores them")
    modes = _shadow(store, config, program, options, reports, say, progress)

    say(f"[4/5] Serve: {options.serve_runs} runs")
    pinned = [site for site in SITES if modes[site] != "student"]
    registries = {site: SiteRegistry(config, site, store) for site in SITES}
    for site in pinned:
        say(f"      the gate kept the teacher for {site}; to show the serving path anyway, "
            f"the demo pins version {reports[site].version} for this step (`byllm-distill "
            f"pin {site} {reports[site].version}`): invalid answers fall back to the "
            "teacher in the same call")
        set_pin(store, registries[site], str(reports[site].version), by="demo")
    try:
        served = _play_and_collect(store, program, options)
    finally:
        for site in pinned:
            set_pin(store, registries[site], None, by="demo")
    out: dict[str, Any] = {"trained": True, "sites": {}}
    for site in SITES:
        mine = [r for r in served if r.site == site]
        by_student = [r for r in mine if r.source == "student"]
        fallbacks = [r for r in by_student if r.valid is False]
        say(f"      {_short(site)}: {len(by_student) - len(fallbacks)} calls answered by the "
            f"student, {len(fallbacks)} fell back to the teacher, "
            f"{sum(1 for r in mine if r.source == 'teacher')} teacher answers in all")
        out["sites"][site] = {"version": reports[site].version, "mode": modes[site],
                              "served": len(by_student) - len(fallbacks),
                              "fallbacks": len(fallbacks), "pinned_for_serving": site in pinned}

    say("[5/5] Before / after, per site")
    for site in SITES:
        out["sites"][site].update(_before_after(store, site, say))
    for site in pinned:
        say(f"      the pin is removed again: {site} stays in "
            f"{registries[site].state().mode} mode until a version passes the gate")
    say(f"      data: {options.home}  (try `BYLLM_DISTILL_HOME={options.home} byllm-distill "
        f"status`, `history {MAP_SITE}`)")
    return out


def _short(site: str) -> str:
    return site.rsplit(".", 1)[-1]


def _train(config: Any, store: Store, say: Callable[[str], None],
           progress: Progress | None) -> dict[str, JobReport]:
    """Train every site through the worker (the level site first: its answers are short)."""
    budget = (f"{config.train_steps} LoRA steps" if config.train_steps
              else f"LoRA, default budget ({budget_help()})")
    say(f"[2/5] Train: the worker trains {' and '.join(SITES)} ({budget} on the embedded "
        "SmolLM2-135M), exports GGUFs and scores each on held-out inputs")
    reports = {}
    for site in SITES:
        result = Worker(config, store, progress=progress).step(site=site)
        report = result if isinstance(result, JobReport) else None
        if report is None or report.error:
            raise DistillError(f"training {site} did not complete: "
                               f"{report.error if report else result}")
        held = report.heldout
        what = "levels" if site == LEVEL_SITE else "maps"
        say(f"      {_short(site)} version {report.version}: held-out {held.passes}/{held.n} "
            f"{what} pass every validator (Wilson lower bound {held.lower_bound:.2f}); "
            "now in shadow mode")
        reports[site] = report
    return reports


def _shadow(store: Store, config: Any, program: Any, options: DemoOptions,
            reports: dict[str, JobReport], say: Callable[[str], None],
            progress: Progress | None) -> dict[str, str]:
    """Play the shadow runs, then let the gate decide each site; returns the modes."""
    import byllm_distill
    from byllm_distill import capture, router
    from byllm_distill.cli_common import criteria_lines
    from byllm_distill.rpg.corpus import play_runs

    play_runs(program, options.shadow_runs, options.levels_per_run, options.seed + 1000)
    active = router.get_router(capture.get_capture())
    if active is not None:
        _wait_for_background(active, progress)
    byllm_distill.flush(600)
    modes = {}
    for site in SITES:
        gate = promote_if_ready(store, config, site)
        state = SiteRegistry(config, site, store).state()
        decided = (gate.to_dict() if gate is not None
                   else _promotion(store, site, reports[site].version))
        if decided is not None:
            failed = decided["reasons"]
            say(f"      {_short(site)}: gate over {decided['n']} scored answers: "
                + (f"refused ({len(failed)} of {len(decided['criteria'])} criteria failed)"
                   if failed else "passed, promoted"))
            for line in criteria_lines(decided["criteria"]):
                say(f"        {line}")
            for reason in failed:
                say(f"      why: {reason}")
        say(f"      {site} is now in {state.mode} mode"
            + ("" if state.mode == "student" else " (the teacher keeps answering its calls)"))
        modes[site] = state.mode
    return modes


def _before_after(store: Store, site: str, say: Callable[[str], None]) -> dict[str, Any]:
    teacher = list(store.iter_records(RecordFilter(site=site, source="teacher")))
    student = [r for r in store.iter_records(RecordFilter(site=site))
               if r.source in ("student", "shadow", "eval")]
    t, s = summarize(teacher), summarize(student)
    hosted = _hosted_cost_per_1k(teacher)
    say(f"      {site:<28}{'teacher (offline)':>20}{'student (local)':>20}")
    say(f"      {'  answers':<28}{t['calls']:>20}{s['calls']:>20}")
    say(f"      {'  latency p50 / p95 (ms)':<28}{t['p50_ms']:>11} / {t['p95_ms']:<6}"
        f"{s['p50_ms']:>11} / {s['p95_ms']:<6}")
    say(f"      {'  pass every validator':<28}{_pct(t['valid']):>20}{_pct(s['valid']):>20}")
    say(f"      {'  cost per 1,000 calls':<28}{'$0 (offline)':>20}{'$0 + CPU':>20}")
    if hosted is not None:
        say(f"        the same calls on {HOSTED_REFERENCE} would cost ≈ ${hosted:.2f} per "
            "1,000 (size-based estimate)")
    return {"teacher": t, "student": s}


def _promotion(store: Store, site: str, version: int) -> dict[str, Any] | None:
    """The numbers of the gate that promoted `version` during the shadow runs, if it did."""
    from byllm_distill.store.events import site_events

    event = next((e for e in site_events(store, site, kinds=("promoted",))
                  if e.version == version), None)
    return event.details if event is not None and "criteria" in event.details else None


def _wait_for_background(active: Any, progress: Progress | None,
                         timeout: float = 900.0) -> None:
    """Wait for the student's off-path answers (the program itself has returned), reporting
    them to `progress` as they finish."""
    total = left = active.pending()
    deadline = time.monotonic() + timeout
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = active.pending()
        report(progress, Step("shadow answers", total - left, total, "call"))


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _play_and_collect(store: Store, program: Any, options: DemoOptions) -> list[Record]:
    import byllm_distill
    from byllm_distill.rpg.corpus import play_runs
    from byllm_distill.store.record import utc_now

    started = utc_now()
    play_runs(program, options.serve_runs, options.levels_per_run, options.seed + 2000)
    byllm_distill.flush(600)
    return [r for r in store.iter_records(RecordFilter(since=started)) if r.site in SITES]
