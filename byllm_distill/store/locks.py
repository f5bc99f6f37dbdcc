"""Named locks held in the store, so processes on any server that share it agree.

A lock is a row (`locks`: name, holder, heartbeat). `acquire` inserts it, or takes it over
when its holder's heartbeat is older than `stale_after` seconds (the holder died);
otherwise it fails, and the caller does without. The holder renews the heartbeat while it
works (`renew`, which also tells it whether it still holds the lock) and deletes the row
when done (`release`). Each step is one statement, atomic on SQLite and PostgreSQL.
"""

from __future__ import annotations

import sqlalchemy as sa

from byllm_distill.store import tables
from byllm_distill.store.record import utc_ago, utc_now
from byllm_distill.store.store import Store

c = tables.locks.c


def acquire(store: Store, name: str, holder: str, stale_after: float) -> bool:
    """Take the lock for `holder`; False when a living holder has it."""
    now = utc_now()
    cutoff = utc_ago(stale_after)
    try:
        with store.engine.begin() as conn:
            conn.execute(tables.locks.insert().values(name=name, holder=holder,
                                                      acquired_at=now, heartbeat_at=now))
        return True
    except sa.exc.IntegrityError:
        pass
    with store.engine.begin() as conn:
        taken = conn.execute(tables.locks.update().where(
            c.name == name, c.heartbeat_at < cutoff).values(
                holder=holder, acquired_at=now, heartbeat_at=now))
        return taken.rowcount == 1


def renew(store: Store, name: str, holder: str) -> bool:
    """Refresh the heartbeat; False when `holder` no longer holds the lock."""
    with store.engine.begin() as conn:
        return conn.execute(tables.locks.update().where(
            c.name == name, c.holder == holder).values(heartbeat_at=utc_now())).rowcount == 1


def release(store: Store, name: str, holder: str) -> None:
    with store.engine.begin() as conn:
        conn.execute(tables.locks.delete().where(c.name == name, c.holder == holder))


def holder(store: Store, name: str) -> tuple[str, str] | None:
    """(holder, heartbeat time) of the lock, or None when nobody holds it."""
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(c.holder, c.heartbeat_at).where(c.name == name)).first()
    return (row.holder, row.heartbeat_at) if row else None
