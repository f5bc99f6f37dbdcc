"""A durable training-job queue in the store.

A job is `queued`, then claimed by exactly one worker (`running`, with its pid and a
heartbeat), then `done` (with the version it produced) or `failed` (with the error); a
failed job is `dismissed` when someone asks for a retry (scheduler.py decides when a
failed site is retried). A running job whose heartbeat is older than `stale_after`
seconds belongs to a worker that crashed or was killed; `requeue_stale` puts it back to
`queued` so it is retried. The
claim is `SELECT ... FOR UPDATE SKIP LOCKED` plus a conditional UPDATE (SQLite: the
conditional UPDATE alone), so two workers, on one machine or many, never run the same job.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from byllm_distill.store import tables
from byllm_distill.store.record import new_record_id, utc_ago, utc_now
from byllm_distill.store.store import Store


@dataclass(frozen=True)
class Job:
    id: str
    site: str
    status: str
    attempts: int
    created_at: str
    started_at: str | None
    finished_at: str | None
    heartbeat_at: str | None
    pid: int | None
    progress: dict[str, Any]
    version: int | None
    error: str | None


def _job(row: Any) -> Job:
    data = dict(row._mapping)
    data["progress"] = json.loads(data["progress"]) if data["progress"] else {}
    return Job(**data)


class JobQueue:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.c = tables.jobs.c

    def enqueue(self, site: str) -> Job | None:
        """Queue a training job for `site` unless one is already queued or running."""
        job_id = new_record_id()
        try:
            with self.store.engine.begin() as conn:
                busy = conn.execute(sa.select(tables.jobs.c.id).where(
                    self.c.site == site, self.c.status.in_(("queued", "running")))).first()
                if busy:
                    return None
                conn.execute(tables.jobs.insert().values(
                    id=job_id, site=site, status="queued", attempts=0, created_at=utc_now()))
        except sa.exc.IntegrityError:
            return None  # another worker queued it between our check and our insert
        return self.get(job_id)

    def get(self, job_id: str) -> Job:
        with self.store.engine.connect() as conn:
            return _job(conn.execute(sa.select(tables.jobs).where(self.c.id == job_id)).one())

    def claim(self, pid: int, site: str | None = None) -> Job | None:
        """Take the oldest queued job (of `site`, if given), or None."""
        while True:
            with self.store.engine.begin() as conn:
                query = sa.select(tables.jobs).where(self.c.status == "queued")
                if site is not None:
                    query = query.where(self.c.site == site)
                # PostgreSQL: lock the row and skip rows other workers hold, so concurrent
                # claims take different jobs without waiting. SQLite has no row locks (the
                # clause is dropped); the conditional UPDATE below decides there.
                row = conn.execute(query.order_by(self.c.id).limit(1)
                                   .with_for_update(skip_locked=True)).first()
                if row is None:
                    return None
                now = utc_now()
                taken = conn.execute(
                    tables.jobs.update()
                    .where(self.c.id == row.id, self.c.status == "queued")
                    .values(status="running", pid=pid, started_at=now, heartbeat_at=now,
                            attempts=row.attempts + 1, error=None)
                ).rowcount
            if taken == 1:
                return self.get(row.id)

    def heartbeat(self, job_id: str, progress: dict[str, Any] | None = None) -> None:
        values: dict[str, Any] = {"heartbeat_at": utc_now()}
        if progress is not None:
            values["progress"] = json.dumps(progress)
        with self.store.engine.begin() as conn:
            conn.execute(tables.jobs.update().where(self.c.id == job_id).values(**values))

    def finish(self, job_id: str, version: int | None, progress: dict[str, Any]) -> None:
        with self.store.engine.begin() as conn:
            conn.execute(tables.jobs.update().where(self.c.id == job_id).values(
                status="done", version=version, finished_at=utc_now(),
                progress=json.dumps(progress)))

    def fail(self, job_id: str, error: str) -> None:
        with self.store.engine.begin() as conn:
            conn.execute(tables.jobs.update().where(self.c.id == job_id).values(
                status="failed", error=error, finished_at=utc_now()))

    def requeue_stale(self, stale_after: float) -> int:
        """Put running jobs with an old heartbeat back in the queue; returns how many."""
        cutoff = utc_ago(stale_after)
        with self.store.engine.begin() as conn:
            return conn.execute(tables.jobs.update().where(
                self.c.status == "running", self.c.heartbeat_at < cutoff
            ).values(status="queued", pid=None, error="worker stopped mid-job; retrying")
            ).rowcount

    def failure_streak(self, site: str, limit: int = 50) -> list[Job]:
        """The site's failed jobs since its last successful one, newest first."""
        streak = []
        for job in self.list(site=site, limit=limit):
            if job.status in ("done", "dismissed"):
                break
            if job.status == "failed":
                streak.append(job)
        return streak

    def dismiss_failures(self, site: str) -> int:
        """Mark the site's failed jobs `dismissed` (someone fixed the cause): its failure
        streak starts again from zero. Returns how many."""
        with self.store.engine.begin() as conn:
            return conn.execute(tables.jobs.update().where(
                self.c.site == site, self.c.status == "failed").values(status="dismissed")
            ).rowcount

    def list(self, site: str | None = None, limit: int = 20) -> list[Job]:
        query = sa.select(tables.jobs).order_by(self.c.id.desc()).limit(limit)
        if site is not None:
            query = query.where(self.c.site == site)
        with self.store.engine.connect() as conn:
            return [_job(r) for r in conn.execute(query)]
