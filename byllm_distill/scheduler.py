"""When to train: due sites, quiet windows, and the worker loop.

A site is due when it has at least `retrain_after` new teacher records that passed every
validator (of its current contract) since its newest version was trained. Training starts
only inside the configured quiet window (`quiet_hours`, local time) and while the
1-minute load average per core is below `max_load` (each unset means no limit). The
worker takes one job at a time from the durable queue (store/jobs.py) and runs it at low
OS priority; see lifecycle.py for what a job does.

A site whose training failed is not queued again at once: it waits `retry_backoff`
seconds after its first failure, doubling with each further one (capped at six hours),
and after `max_failures` in a row it needs attention: it is not retried until someone
runs `byllm-distill retry SITE` (after fixing what the error names). One failing site never
holds up the others.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from byllm_distill.config import DistillConfig, parse_hours
from byllm_distill.registry import SiteRegistry
from byllm_distill.store import RecordFilter, Store
from byllm_distill.store.jobs import JobQueue

# The longest a failing site waits between attempts, however many times it failed.
MAX_BACKOFF_S = 6 * 3600.0


@dataclass(frozen=True)
class DueInfo:
    site: str
    fingerprint: str
    new_records: int
    needed: int
    since: str | None

    @property
    def due(self) -> bool:
        return self.new_records >= self.needed


def current_fingerprint(store: Store, site: str) -> str | None:
    newest = next(store.iter_records(RecordFilter(site=site, source="teacher"), limit=1,
                                     newest_first=True, with_verdicts=False), None)
    return newest.fingerprint if newest else None


def due_info(store: Store, config: DistillConfig, site: str) -> DueInfo:
    registry = SiteRegistry(config, site, store=store)
    versions = registry.versions()
    since = versions[-1].manifest.get("created_at") if versions else None
    fingerprint = current_fingerprint(store, site) or ""
    new = store.count(RecordFilter(site=site, source="teacher", fingerprint=fingerprint,
                                   valid=True, since=since))
    return DueInfo(site, fingerprint, new, config.retrain_after, since)


def due_sites(store: Store, config: DistillConfig) -> list[DueInfo]:
    sites = store.site_names()
    return [info for info in (due_info(store, config, s) for s in sites) if info.due]


def trainable_sites(store: Store, config: DistillConfig, queue: JobQueue) -> list[DueInfo]:
    """Due sites that are not backing off after failures: what a worker may queue now."""
    return [info for info in due_sites(store, config)
            if not retry_info(queue, config, info.site).waiting()]


def quiet_now(config: DistillConfig, now: datetime | None = None,
              load: float | None = None) -> tuple[bool, str]:
    """Whether training may start now, and why not if it may not."""
    if config.quiet_hours:
        start, end = parse_hours(config.quiet_hours)
        hour = (now or datetime.now()).hour
        inside = start <= hour < end if start <= end else (hour >= start or hour < end)
        if not inside:
            return False, f"outside quiet hours {config.quiet_hours} (now {hour}:00)"
    if config.max_load is not None:
        per_core = (load if load is not None else os.getloadavg()[0]) / (os.cpu_count() or 1)
        if per_core >= config.max_load:
            return False, f"load {per_core:.2f} per core >= max_load {config.max_load}"
    return True, ""


@dataclass(frozen=True)
class RetryInfo:
    """A site's recent training failures and what the worker does about them."""

    failures: int  # failed jobs since its last successful one
    reason: str | None  # the newest failure's error
    retry_at: str | None  # ISO time before which the site is not queued again
    needs_attention: bool  # `max_failures` reached: not retried until `retry SITE`

    def waiting(self, now: datetime | None = None) -> bool:
        if self.needs_attention:
            return True
        if self.retry_at is None:
            return False
        return (now or datetime.now(UTC)) < datetime.fromisoformat(self.retry_at)

    def to_dict(self) -> dict[str, object]:
        return {"failures": self.failures, "reason": self.reason, "retry_at": self.retry_at,
                "needs_attention": self.needs_attention}


def backoff_s(config: DistillConfig, failures: int) -> float:
    """Delay before retrying after `failures` consecutive failures: doubling from
    `retry_backoff`, capped at `MAX_BACKOFF_S`."""
    return min(MAX_BACKOFF_S, config.retry_backoff * 2 ** max(0, failures - 1))


def retry_info(queue: JobQueue, config: DistillConfig, site: str) -> RetryInfo:
    streak = queue.failure_streak(site, limit=config.max_failures + 1)
    if not streak:
        return RetryInfo(0, None, None, False)
    newest = streak[0]
    finished = datetime.fromisoformat(newest.finished_at or newest.created_at)
    retry_at = finished + timedelta(seconds=backoff_s(config, len(streak)))
    return RetryInfo(len(streak), newest.error, retry_at.isoformat(),
                     len(streak) >= config.max_failures)
