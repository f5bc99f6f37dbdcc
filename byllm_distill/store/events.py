"""The decision log: every promotion, rollback, pin and gate result, with its numbers.

Append-only rows in `site_events`; `byllm-distill history SITE` prints them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from byllm_distill.store import tables
from byllm_distill.store.record import new_record_id, utc_now
from byllm_distill.store.store import Store


@dataclass(frozen=True)
class SiteEvent:
    id: str
    site: str
    kind: str
    version: int | None
    details: dict[str, Any]
    created_at: str


def log_event(store: Store, site: str, kind: str, version: int | None = None,
              **details: Any) -> SiteEvent:
    event = SiteEvent(new_record_id(), site, kind, version, details, utc_now())
    with store.engine.begin() as conn:
        conn.execute(tables.site_events.insert().values(
            id=event.id, site=site, kind=kind, version=version,
            details=json.dumps(details, sort_keys=True, default=str), created_at=event.created_at))
    return event


def site_events(store: Store, site: str | None = None, limit: int | None = None,
                kinds: tuple[str, ...] | None = None) -> list[SiteEvent]:
    """Events, newest first."""
    e = tables.site_events.c
    query = sa.select(tables.site_events).order_by(e.id.desc())
    if site is not None:
        query = query.where(e.site == site)
    if kinds:
        query = query.where(e.kind.in_(kinds))
    if limit is not None:
        query = query.limit(limit)
    with store.engine.connect() as conn:
        return [SiteEvent(r.id, r.site, r.kind, r.version, json.loads(r.details), r.created_at)
                for r in conn.execute(query)]
