"""Append-only schema migrations.

Each step is a function `mNNN_name(conn)`; shipped steps are never edited, a fix is a new
step. `migrate()` applies the missing ones in order inside one transaction and records
them in `_migrations`. Only portable SQLAlchemy constructs are used, so the same steps
run on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection


def m001_initial(conn: Connection) -> None:
    meta = sa.MetaData()
    sa.Table(
        "records",
        meta,
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("site", sa.String(512), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("messages", sa.Text, nullable=False),
        sa.Column("schema", sa.Text),
        sa.Column("args", sa.Text, nullable=False),
        sa.Column("output_raw", sa.Text),
        sa.Column("output", sa.Text),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("usage", sa.Text),
        sa.Column("cost", sa.Float),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.Index("ix_records_site_created", "site", "created_at"),
        sa.Index("ix_records_created", "created_at"),
    )
    sa.Table(
        "sites",
        meta,
        sa.Column("site", sa.String(512), primary_key=True),
        sa.Column("fingerprint", sa.String(64), primary_key=True),
        sa.Column("contract", sa.Text, nullable=False),
        sa.Column("first_seen", sa.String(40), nullable=False),
        sa.Column("last_seen", sa.String(40), nullable=False),
    )
    meta.create_all(conn)


def m002_verdicts(conn: Connection) -> None:
    meta = sa.MetaData()
    sa.Table(
        "verdicts",
        meta,
        sa.Column("record_id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("passed", sa.Boolean, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Index("ix_verdicts_failed", "record_id", "passed"),
    )
    meta.create_all(conn)


def m003_ratings(conn: Connection) -> None:
    meta = sa.MetaData()
    sa.Table(
        "ratings",
        meta,
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("record_id", sa.String(32), nullable=False, index=True),
        sa.Column("rater", sa.String(128), nullable=False),
        sa.Column("scores", sa.Text, nullable=False),
        sa.Column("comment", sa.Text),
        sa.Column("created_at", sa.String(40), nullable=False),
    )
    sa.Table(
        "preferences",
        meta,
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("rater", sa.String(128), nullable=False),
        sa.Column("left_id", sa.String(32), nullable=False),
        sa.Column("right_id", sa.String(32), nullable=False),
        sa.Column("choice", sa.String(8), nullable=False),
        sa.Column("created_at", sa.String(40), nullable=False),
    )
    meta.create_all(conn)


def m004_routing(conn: Connection) -> None:
    # Which student version answered (student and shadow records) and how far its answer
    # agreed with the teacher's on the same input, when that was measured.
    conn.execute(sa.text("ALTER TABLE records ADD COLUMN version INTEGER"))
    conn.execute(sa.text("ALTER TABLE records ADD COLUMN agreement FLOAT"))
    meta = sa.MetaData()
    sa.Table(
        "site_events",
        meta,
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("site", sa.String(512), nullable=False, index=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer),
        sa.Column("details", sa.Text, nullable=False),
        sa.Column("created_at", sa.String(40), nullable=False),
    )
    sa.Table(
        "jobs",
        meta,
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("site", sa.String(512), nullable=False, index=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.Column("started_at", sa.String(40)),
        sa.Column("finished_at", sa.String(40)),
        sa.Column("heartbeat_at", sa.String(40)),
        sa.Column("pid", sa.Integer),
        sa.Column("progress", sa.Text),
        sa.Column("version", sa.Integer),
        sa.Column("error", sa.Text),
    )
    meta.create_all(conn)


MIGRATIONS: list[Callable[[Connection], None]] = [
    m001_initial, m002_verdicts, m003_ratings, m004_routing,
]


def migrate(conn: Connection) -> list[str]:
    """Apply every step not yet recorded; return the names applied."""
    meta = sa.MetaData()
    done_table = sa.Table(
        "_migrations",
        meta,
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("applied_at", sa.String(40), nullable=False),
    )
    meta.create_all(conn)
    done = {row[0] for row in conn.execute(sa.select(done_table.c.name))}
    applied = []
    for step in MIGRATIONS:
        if step.__name__ in done:
            continue
        step(conn)
        conn.execute(
            done_table.insert().values(
                name=step.__name__, applied_at=datetime.now(UTC).isoformat()
            )
        )
        applied.append(step.__name__)
    return applied
