"""When to train: due sites, quiet windows, and the worker loop.

A site is due when it has at least `retrain_after` new teacher records that passed every
validator (of its current contract) since its newest version was trained. Training starts
only inside the configured quiet window (`quiet_hours`, local time) and while the
1-minute load average per core is below `max_load` (each unset means no limit). The
worker takes one job at a time from the durable queue (store/jobs.py) and runs it at low
OS priority; see lifecycle.py for what a job does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime

from byllm_distill.config import DistillConfig, parse_hours
from byllm_distill.registry import SiteRegistry
from byllm_distill.store import RecordFilter, Store


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
    registry = SiteRegistry(config.data_dir, site)
    versions = registry.versions()
    since = versions[-1].manifest.get("created_at") if versions else None
    fingerprint = current_fingerprint(store, site) or ""
    new = sum(1 for r in store.iter_records(
        RecordFilter(site=site, source="teacher", valid=True, since=since),
        with_verdicts=False) if r.fingerprint == fingerprint)
    return DueInfo(site, fingerprint, new, config.retrain_after, since)


def due_sites(store: Store, config: DistillConfig) -> list[DueInfo]:
    sites = sorted({s.site for s in store.site_summaries()})
    return [info for info in (due_info(store, config, s) for s in sites) if info.due]


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
