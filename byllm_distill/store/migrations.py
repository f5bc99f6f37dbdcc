"""Append-only schema migrations.

Each step is a function `mNNN_name(conn)`; shipped steps are never edited, a fix is a new
step. `migrate()` applies the missing ones in order inside one transaction and records
them in `_migrations`. Only portable SQLAlchemy constructs are used, so the same steps
run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
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


def m005_registry(conn: Connection) -> None:
    # Registry state moves from each machine's `state.json` into the store, so every app
    # server sees one mode, active version and pin; version numbers are allocated here so
    # two training machines never take the same one (see registry.py).
    meta = sa.MetaData()
    sa.Table(
        "site_state",
        meta,
        sa.Column("site", sa.String(512), primary_key=True),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("active", sa.Integer),
        sa.Column("pinned", sa.String(16)),
        sa.Column("fingerprint", sa.String(64)),
        sa.Column("previous", sa.Text, nullable=False),  # JSON list of version numbers
        sa.Column("updated_at", sa.String(40), nullable=False),
    )
    sa.Table(
        "versions",
        meta,
        sa.Column("site", sa.String(512), primary_key=True),
        sa.Column("number", sa.Integer, primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),  # building, ready, abandoned
        sa.Column("manifest", sa.Text),  # JSON, once ready
        sa.Column("created_at", sa.String(40), nullable=False),
    )
    meta.create_all(conn)


def m006_scale(conn: Connection) -> None:
    # `status`, `sites` and the due check count in SQL at a million records instead of
    # reading them. `records.valid` (every verdict passed; NULL: none stored) is written
    # with the verdicts (store.py), so "valid" is an indexed column, not two verdict
    # lookups per record; existing records get it from their verdicts here.
    conn.execute(sa.text("ALTER TABLE records ADD COLUMN valid BOOLEAN"))
    meta = sa.MetaData()
    records = sa.Table("records", meta, *(sa.Column(name) for name in (
        "id", "site", "fingerprint", "model", "source", "status", "created_at")),
        sa.Column("valid", sa.Boolean))
    verdicts = sa.Table("verdicts", meta, sa.Column("record_id"), sa.Column("passed", sa.Boolean))
    mine = verdicts.c.record_id == records.c.id
    failing = sa.exists().where(mine, verdicts.c.passed == sa.false())
    conn.execute(records.update().where(sa.exists().where(mine))
                 .values(valid=sa.case((failing, sa.false()), else_=sa.true())))
    # Key order matters: each query's equality columns first.
    # - counts per site, source, contract, status and validity, since a time (the due
    #   check, `status`);
    # - `status`' totals per source and status: one pass over a narrow index;
    # - a site's newest teacher record (its current contract), newest first by id;
    # - a site's records in id order (export, dataset): without it a PostgreSQL cursor,
    #   planned for its first rows, walks the whole primary key;
    # - `sites`: records, models and last seen per site and contract, from the index alone.
    for name, columns in (
        ("ix_records_site_source_fp", ("site", "source", "fingerprint", "status", "valid",
                                       "created_at")),
        ("ix_records_site_source_id", ("site", "source", "id")),
        ("ix_records_site_id", ("site", "id")),
        ("ix_records_site_fp_model", ("site", "fingerprint", "model", "created_at")),
        ("ix_records_source_status", ("source", "status")),
    ):
        sa.Index(name, *(records.c[c] for c in columns)).create(conn)


def m007_one_open_job_per_site(conn: Connection) -> None:
    # At most one queued or running job per site, enforced by the database: two workers
    # that find a site due at the same moment cannot both queue it (a partial unique
    # index; SQLite and PostgreSQL both have them). Older duplicates are failed first.
    jobs = sa.table("jobs", sa.column("id"), sa.column("site"), sa.column("status"),
                    sa.column("error"))
    open_jobs = jobs.c.status.in_(("queued", "running"))
    seen: set[str] = set()
    for job_id, site in conn.execute(sa.select(jobs.c.id, jobs.c.site).where(open_jobs)
                                     .order_by(jobs.c.id.desc())).all():
        if site in seen:
            conn.execute(jobs.update().where(jobs.c.id == job_id).values(
                status="failed", error="duplicate job for the site (m007)"))
        seen.add(site)
    meta = sa.MetaData()
    table = sa.Table("jobs", meta, sa.Column("site"), sa.Column("status"))
    where = table.c.status.in_(("queued", "running"))
    sa.Index("ux_jobs_open_site", table.c.site, unique=True, sqlite_where=where,
             postgresql_where=where).create(conn)


def m008_input_hash(conn: Connection) -> None:
    # Each record's input identity (`Record.input_hash`), so the gate looks up the teacher's
    # answers to the inputs it judges by index; and its verdicts as export writes them
    # (`records.verdicts_json`). Existing rows are filled a page of records at a time.
    from byllm_distill.store.export import verdicts_text
    from byllm_distill.store.record import input_hash
    from byllm_distill.validators.base import Verdict

    conn.execute(sa.text("ALTER TABLE records ADD COLUMN input_hash VARCHAR(32)"))
    conn.execute(sa.text("ALTER TABLE records ADD COLUMN verdicts_json TEXT"))
    records = sa.table("records", sa.column("id"), sa.column("site"), sa.column("args"),
                       sa.column("input_hash"), sa.column("verdicts_json"))
    verdicts = sa.table("verdicts", sa.column("record_id"), sa.column("name"),
                        sa.column("passed"), sa.column("detail"))
    last = ""
    while True:
        rows = conn.execute(sa.select(records.c.id, records.c.site, records.c.args)
                            .where(records.c.id > last).order_by(records.c.id)
                            .limit(2000)).all()
        if not rows:
            break
        found: dict[str, list[Verdict]] = {}
        for rid, name, passed, detail in conn.execute(
                sa.select(verdicts.c.record_id, verdicts.c.name, verdicts.c.passed,
                          verdicts.c.detail)
                .where(verdicts.c.record_id.in_([row[0] for row in rows]))):
            found.setdefault(rid, []).append(Verdict(name, bool(passed), detail))
        conn.execute(records.update().where(records.c.id == sa.bindparam("rid"))
                     .values(input_hash=sa.bindparam("hash"),
                             verdicts_json=sa.bindparam("text")),
                     [{"rid": rid, "hash": input_hash(site, json.loads(args)),
                       "text": verdicts_text(found.get(rid))} for rid, site, args in rows])
        last = rows[-1][0]
    meta = sa.MetaData()
    table = sa.Table("records", meta, *(sa.Column(name) for name in (
        "site", "source", "fingerprint", "status", "input_hash")))
    sa.Index("ix_records_site_input", table.c.site, table.c.source, table.c.input_hash,
             table.c.fingerprint, table.c.status).create(conn)


def m009_route(conn: Connection) -> None:
    # Why the teacher answered a call the router would have given a student (the wait
    # budget), on the teacher's record; NULL for every other record.
    conn.execute(sa.text("ALTER TABLE records ADD COLUMN route TEXT"))


def m010_locks(conn: Connection) -> None:
    # Named locks with a heartbeat, held across processes and servers (store/locks.py):
    # `auto_train` starts one worker per store.
    meta = sa.MetaData()
    sa.Table(
        "locks",
        meta,
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("acquired_at", sa.String(40), nullable=False),
        sa.Column("heartbeat_at", sa.String(40), nullable=False),
    )
    meta.create_all(conn)


MIGRATIONS: list[Callable[[Connection], None]] = [
    m001_initial, m002_verdicts, m003_ratings, m004_routing, m005_registry,
    m006_scale, m007_one_open_job_per_site, m008_input_hash, m009_route, m010_locks,
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
