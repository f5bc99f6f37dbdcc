"""A site's student lifecycle: train → evaluate on held-out → shadow → (gate) → student.

This module owns every decision about which model serves a site, and logs each one with
its numbers in the decision log (store/events.py): promotion and refusal
(`promote_if_ready`, asked by the router after each shadow sample, by the worker after
training, by the demo), rollback on failing live checks (`rollback_if_failing`, asked by
the router), refusal of an unloadable version (`refuse_unloadable`), pins (`set_pin`) and
the manual `promote` / `rollback` commands. The gate (gate/) only measures; the router only
routes and asks.

`run_job` is what the worker does for one queued job: train and export a new version
(training/pipeline.py), answer every held-out input with it and score those answers
(`source="eval"` records: validators + agreement with the teacher's answer), activate it
in shadow mode, and log the decision with its numbers. The active version is only replaced
after the new version is complete and verified, so a crash or kill at any point leaves the
site served as before.

`Worker` runs jobs one at a time at low OS priority, with a heartbeat so a killed worker's
job is retried by the next one.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from byllm_distill.config import DistillConfig
from byllm_distill.gate import GateResult, live_check, promotion_gate, wilson_lower
from byllm_distill.progress import Progress, Step
from byllm_distill.progress import report as report_progress
from byllm_distill.registry import SiteRegistry, SiteState, Version
from byllm_distill.scheduler import quiet_now, retry_info, trainable_sites
from byllm_distill.store import Record, RecordFilter, Store
from byllm_distill.store.events import log_event, site_events
from byllm_distill.store.jobs import Job, JobQueue

log = logging.getLogger("byllm_distill")
HEARTBEAT_S = 5.0


def evaluate_heldout(store: Store, site: str, version: Version,
                     progress: Callable[[int, int], None] | None = None) -> GateResult | None:
    """Answer each held-out teacher input once with `version`; store the scored `eval`
    records (validators + agreement with the teacher) and summarise them. An input the
    teacher was asked several times is answered once: the gate's bounds count independent
    inputs, and the teacher's other answers to it are its repeats."""
    from byllm_distill.runtime.answer import engine_loader, student_label
    from byllm_distill.runtime.engine import unload
    from byllm_distill.scoring import answer_with_student

    ids = version.manifest.get("dataset", {}).get("heldout_ids") or []
    first: dict[str, Record] = {}
    for record in store.iter_records(RecordFilter(ids=ids), with_verdicts=False):
        first.setdefault(record.input_key(), record)
    teacher = list(first.values())
    if not teacher:
        return None
    answer = engine_loader(site, version)
    done = 0

    def counted(args: dict[str, Any]) -> Any:
        nonlocal done
        try:
            return answer(args)
        finally:
            done += 1
            if progress:
                progress(done, len(teacher))

    try:
        scored = answer_with_student(teacher, counted, student_label(site, version), store,
                                     version=version.number)
    finally:
        unload(site)
    passes = sum(1 for r in scored if r.valid)
    agreements = [r.agreement for r in scored if r.agreement is not None]
    return GateResult(True, len(scored), passes, wilson_lower(passes, len(scored)),
                      sum(agreements) / len(agreements) if agreements else None)


def set_pin(store: Store, registry: SiteRegistry, target: str | None,
            **details: Any) -> None:
    """Pin the site to `teacher` or a version number (verified first), or unpin it with
    None; the decision log records who did it through `details`."""
    if target is not None and target != "teacher":
        registry.verify(int(target))
    registry.update(pinned=target)
    if target is None:
        log_event(store, registry.site, "unpinned", **details)
    else:
        log_event(store, registry.site, "pinned", int(target) if target.isdigit() else None,
                  to=target, **details)


def _refusal_changed(store: Store, site: str, version: int, result: GateResult) -> bool:
    """Whether this refusal fails other criteria than the version's last logged one."""
    last = next((e for e in site_events(store, site, limit=20, kinds=("gate_refused",))
                 if e.version == version), None)
    failing = sorted(x.name for x in result.failing())
    return last is None or sorted(x.get("name") for x in last.details.get("criteria", [])
                                  if x.get("passed") is False) != failing


def promote_if_ready(store: Store, config: DistillConfig, site: str,
                     version: int | None = None) -> GateResult | None:
    """Promote the site's shadow version (`version`, if given, must be the active one) if
    the gate passes. A promotion is always logged; a refusal only if it fails other
    criteria than the version's last logged refusal (the router asks after every shadow
    sample). None when the site is not in shadow mode or is pinned."""
    registry = SiteRegistry(config, site, store)
    state = registry.state()
    if (state.mode != "shadow" or state.active is None or state.pinned is not None
            or (version is not None and state.active != version)):
        return None
    result = promotion_gate(store, site, state.active, config.site(site), state.fingerprint)
    if result.passed:
        registry.update(mode="student")
        log_event(store, site, "promoted", state.active, **result.to_dict())
        log.info("byllm-distill: %s v%s promoted: every criterion cleared its bar (%s).",
                 site, state.active, ", ".join(f"{x.name} {x.bound:.3f}" for x in
                                               result.criteria if x.bound is not None))
    elif _refusal_changed(store, site, state.active, result):
        log_event(store, site, "gate_refused", state.active, **result.to_dict())
        log.info("byllm-distill: %s v%s stays in shadow: %s", site, state.active,
                 result.reasons[0] if result.reasons else "refused")
    return result


def rollback_if_failing(store: Store, config: DistillConfig, site: str,
                        version: int) -> GateResult | None:
    """Roll the serving `version` back when a live criterion shows it is worse than the
    teacher (validity, agreement or fidelity over the rollback window). Returns the check,
    or None when `version` is not the one serving unpinned."""
    registry = SiteRegistry(config, site, store)
    state = registry.state()
    if state.active != version or state.mode != "student" or state.pinned is not None:
        return None
    result = live_check(store, site, version, config.site(site), state.fingerprint)
    if not result.passed:
        _roll_back(store, registry, version, result.to_dict())
    return result


def refuse_unloadable(store: Store, registry: SiteRegistry, version: int,
                      reason: str) -> SiteState | None:
    """A version whose files fail verification is never loaded: roll the site back from
    it if it is still the active one."""
    if registry.state().active != version:
        return None
    return _roll_back(store, registry, version, {"reasons": [reason]})


def _roll_back(store: Store, registry: SiteRegistry, version: int,
               details: dict[str, Any]) -> SiteState:
    """Roll back from `version`; `details` (with its `reasons`) goes into the event."""
    new = registry.rollback()
    log_event(store, registry.site, "rolled_back", version, to=new.active or "teacher",
              **details)
    log.warning("byllm-distill: %s v%s rolled back to %s: %s", registry.site, version,
                f"v{new.active}" if new.active else "the teacher", "; ".join(details["reasons"]))
    return new


def promote_manually(store: Store, registry: SiteRegistry, version: int | None,
                     mode: str = "student") -> SiteState:
    """`byllm-distill promote`: activate `version` (default: the newest), skipping the gate."""
    version = registry.resolve(version, default="newest").number
    state = registry.activate(version, mode=mode)
    log_event(store, registry.site, "promoted", version, manual=True, mode=mode)
    return state


def rollback_manually(store: Store, registry: SiteRegistry) -> SiteState:
    """`byllm-distill rollback`: the previous version, or the teacher."""
    before = registry.state().active
    state = registry.rollback()
    log_event(store, registry.site, "rolled_back", before, manual=True,
              to=state.active or "teacher")
    return state


@dataclass
class JobReport:
    job: Job
    version: int | None = None
    heldout: GateResult | None = None
    gate: GateResult | None = None  # the promotion gate right after shadow activation
    error: str | None = None
    messages: list[str] = field(default_factory=list)


def run_job(store: Store, config: DistillConfig, job: Job, queue: JobQueue,
            progress: Progress | None = None) -> JobReport:
    """Train, evaluate and shadow-activate one site (see the module docstring)."""
    from byllm_distill.training.pipeline import train_site
    from byllm_distill.training.trainer import TrainConfig

    report = JobReport(job)
    phase = {"phase": "training", "site": job.site}
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            queue.heartbeat(job.id, dict(phase))

    beater = threading.Thread(target=beat, name="byllm-distill-heartbeat", daemon=True)
    beater.start()
    try:
        trained = train_site(job.site, config=config, store=store,
                             train_config=TrainConfig(steps=config.train_steps,
                                                       device=config.train_device),
                             progress=progress)
        report.version = trained.number
        phase.update(phase="evaluating", version=trained.number)

        def on_eval(done: int, total: int) -> None:
            phase.update(evaluated=done, of=total)
            report_progress(progress, Step(f"held-out eval {job.site}", done, total, "call"))

        registry = SiteRegistry(config, job.site, store)
        report.heldout = evaluate_heldout(store, job.site, registry.verify(trained.number),
                                          on_eval)
        state = registry.state()
        if state.pinned is None:
            registry.activate(trained.number, mode="shadow")
        details = {"training": trained.manifest["training"],
                   "dataset": trained.manifest["dataset"]["counts"],
                   "gguf_bytes": trained.manifest["export"].get("bytes"),
                   "heldout": report.heldout.to_dict() if report.heldout else None,
                   "activated": state.pinned is None}
        log_event(store, job.site, "trained", trained.number, **details)
        report.gate = promote_if_ready(store, config, job.site)
        queue.finish(job.id, trained.number, {"phase": "done", "version": trained.number})
    except BaseException as exc:
        report.error = f"{type(exc).__name__}: {exc}"
        queue.fail(job.id, report.error)
        log_event(store, job.site, "training_failed", report.version, error=report.error)
        if not isinstance(exc, Exception):
            raise
    finally:
        stop.set()
    return report


class Worker:
    """Picks due sites, waits for quiet time, trains one job at a time at low priority."""

    def __init__(self, config: DistillConfig, store: Store | None = None,
                 progress: Progress | None = None) -> None:
        self.config = config
        self.store = store or Store(config.database_url)
        self.queue = JobQueue(self.store)
        self.progress = progress

    def enqueue_due(self) -> list[str]:
        """Queue every due site that is not backing off after a failure."""
        queued = []
        for info in trainable_sites(self.store, self.config, self.queue):
            if self.queue.enqueue(info.site) is not None:
                queued.append(info.site)
        return queued

    def step(self, site: str | None = None) -> JobReport | str:
        """One scheduling round: requeue stale jobs, queue due sites, run one job if quiet
        (only `site`'s, if given). Returns the job's report, or why nothing ran."""
        self.queue.requeue_stale(self.config.stale_after)
        self.enqueue_due()
        quiet, why = quiet_now(self.config)
        if not quiet:
            return f"waiting: {why}"
        job = self.queue.claim(os.getpid(), site)
        if job is None:
            return "nothing to do: no site is due for training"
        return run_job(self.store, self.config, job, self.queue, self.progress)

    def run(self, once: bool = False, poll_s: float = 60.0, site: str | None = None,
            on_step: Callable[[Any], None] | None = None) -> None:
        """Run jobs while there are any (a failed one does not stop the others), then wait
        `poll_s` and look again; `once`: return when nothing is left to run now."""
        lower_priority()
        while True:
            result = self.step(site)
            if on_step:
                on_step(result)
            if isinstance(result, JobReport):
                continue
            if once:
                return
            time.sleep(poll_s)


def lower_priority() -> None:
    """Training yields the CPU to the user's programs (nice 10 on POSIX)."""
    try:
        os.nice(10)
    except (AttributeError, OSError) as exc:
        log.info("byllm-distill: could not lower the worker's priority: %s", exc)


def prompt_tokens(versions: list[Any], active: int | None) -> dict[str, Any] | None:
    """Prompt tokens per call, teacher vs student, from the dataset of the active version
    (else the newest): what a site's inputs cost on each side, object state included."""
    chosen = [v for v in versions if v.number == active] or versions[-1:]
    if not chosen:
        return None
    dataset = chosen[0].manifest.get("dataset") or {}
    tokens = dataset.get("tokens") or {}
    if not tokens:
        return None
    billed = tokens.get("teacher_billed") or {}
    return {"version": chosen[0].number,
            "teacher": tokens["teacher_prompt"]["mean"],
            "teacher_schema": tokens.get("teacher_schema"),
            "teacher_billed": billed.get("mean"),
            "student": tokens["compact_prompt"]["mean"],
            "student_max": tokens["compact_prompt"]["max"],
            "inputs": (dataset.get("inputs") or {}).get("policy")}


def site_status(store: Store, config: DistillConfig, site: str) -> dict[str, Any]:
    """What `status` shows per site: mode, versions, gate numbers, counts, next due."""
    from byllm_distill.scheduler import due_info

    registry = SiteRegistry(config, site, store)
    state = registry.state()
    # Range counts over the (site, source, ...) index, one per source: faster on SQLite
    # than one GROUP BY (measured by benchmarks/store_scale.py at 1M records).
    records = {s: store.count(RecordFilter(site=site, source=s))
               for s in ("teacher", "student", "shadow", "eval")}
    gate = None
    if state.active is not None and state.mode == "shadow":
        gate = {"kind": "promotion", **promotion_gate(
            store, site, state.active, config.site(site), state.fingerprint).to_dict()}
    elif state.active is not None and state.mode == "student":
        gate = {"kind": "live", **live_check(
            store, site, state.active, config.site(site), state.fingerprint).to_dict()}
    due = due_info(store, config, site)
    jobs = [j for j in JobQueue(store).list(site=site, limit=1)]
    versions = registry.versions()
    return {
        "site": site, "mode": state.mode, "active": state.active, "pinned": state.pinned,
        "versions": [v.number for v in versions], "records": records,
        "prompt_tokens": prompt_tokens(versions, state.active),
        "valid_teacher_records": store.count(RecordFilter(site=site, source="teacher",
                                                           valid=True)),
        "gate": gate,
        "next_due": {"new_valid_records": due.new_records, "needed": due.needed,
                     "due": due.due},
        "job": ({"status": jobs[0].status, "progress": jobs[0].progress,
                 "error": jobs[0].error, "version": jobs[0].version} if jobs else None),
        "retry": retry_info(JobQueue(store), config, site).to_dict(),
    }
