"""The record store: SQLAlchemy Core over SQLite (default) or PostgreSQL.

Contract: a `Store` is migrated in its constructor, so no caller can forget. Each
`add_records` call is one transaction: all of its records land or none do. Records are
append-only; a site row (`sites`) is upserted per (site, fingerprint) with first/last
seen times. SQLite runs in WAL mode with a 30 s busy timeout, so several threads and
processes can write at once. Only portable constructs are used in queries; the one
dialect-specific piece (upsert) is chosen by dialect name for SQLite and PostgreSQL.

Scale: `records.valid` mirrors a record's verdicts (true: every stored verdict passed,
false: one failed, NULL: none stored) and is written in the same transaction as they are,
so counting valid records is an index range count, not a verdict lookup per record; the
counts behind `status`, `sites` and the due check are SQL aggregates over indexes
(migrations.m006_scale). Record reads stream in batches of 500 (a server-side cursor on
PostgreSQL), so an export or a dataset never holds the whole result.

Beside it: query.py (which records a read asks for), export.py (export lines and the
verdicts column written as JSON text), migrations.py, tables.py, record.py.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from byllm_distill.errors import NotFoundError, StoreError
from byllm_distill.store import tables
from byllm_distill.store.export import export_query, unique_verdicts, verdicts_text
from byllm_distill.store.migrations import migrate
from byllm_distill.store.query import RecordFilter, SiteSummary
from byllm_distill.store.record import Record, new_record_id, utc_now
from byllm_distill.validators.base import Verdict

# What a Record is read from: every column but the ones the store keeps for itself.
_RECORD_COLUMNS = [c for c in tables.records.c if c.name in {f.name for f in fields(Record)}]


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _make_engine(url: str) -> Engine:
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30})
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        # A batch of rows as multi-row INSERTs (SQLAlchemy's "insertmanyvalues"), not one
        # statement per row: sqlite3 releases the GIL for each statement it runs, and each
        # release lets capture's writer thread interrupt the program once more.
        engine.dialect.use_insertmanyvalues_wo_returning = True
        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def _upsert(dialect: str, table: sa.Table) -> Any:
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        raise StoreError(f"unsupported database {dialect!r}; use SQLite or PostgreSQL")
    return insert(table)


class Store:
    """Read and write captured records. Thread-safe; one per process is enough."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._pinned = threading.local()  # the connection of a `reading()` block, per thread
        try:
            self.engine = _make_engine(url)
            with self.engine.begin() as conn:
                migrate(conn)
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            raise StoreError(f"cannot open store {self.display_url}: {error_reason(exc)}") from exc

    @property
    def display_url(self) -> str:
        return sa.engine.make_url(self.url).render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()

    # -- writing ---------------------------------------------------------------------

    def add_records(self, batch: Sequence[Record]) -> None:
        """Insert records (and their site rows) in one transaction."""
        if not batch:
            return
        latest: dict[tuple[str, str], Record] = {}
        for record in batch:
            latest[(record.site, record.fingerprint)] = record
        try:
            with self.engine.begin() as conn:
                conn.execute(tables.records.insert(),
                             [{**r.to_row(), "valid": _validity(r.verdicts),
                               "input_hash": r.input_hash(),
                               "verdicts_json": verdicts_text(r.verdicts)} for r in batch])
                verdict_rows = [
                    {"record_id": r.id, "name": v.name, "passed": v.passed, "detail": v.detail}
                    for r in batch for v in unique_verdicts(r.verdicts or [])
                ]
                if verdict_rows:
                    conn.execute(tables.verdicts.insert(), verdict_rows)
                stmt = _upsert(self.engine.dialect.name, tables.sites)
                for (site, fingerprint), record in latest.items():
                    contract = json.dumps({"schema": record.schema}, sort_keys=True)
                    conn.execute(
                        stmt.values(site=site, fingerprint=fingerprint, contract=contract,
                                    first_seen=record.created_at, last_seen=record.created_at)
                        .on_conflict_do_update(
                            index_elements=["site", "fingerprint"],
                            set_={"last_seen": record.created_at},
                        )
                    )
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"cannot write to {self.display_url}: {error_reason(exc)}") from exc

    def replace_verdicts(self, verdicts_by_record: dict[str, list[Verdict]]) -> None:
        """Store fresh verdicts for existing records (e.g. after adding a validator)."""
        v = tables.verdicts.c
        r = tables.records.c
        try:
            with self.engine.begin() as conn:
                ids = list(verdicts_by_record)
                for chunk in _chunks(ids, 500):
                    conn.execute(tables.verdicts.delete().where(v.record_id.in_(chunk)))
                rows = [{"record_id": rid, "name": x.name, "passed": x.passed, "detail": x.detail}
                        for rid, verdicts in verdicts_by_record.items()
                        for x in unique_verdicts(verdicts)]
                if rows:
                    conn.execute(tables.verdicts.insert(), rows)
                if ids:
                    conn.execute(
                        tables.records.update().where(r.id == sa.bindparam("rid"))
                        .values(valid=sa.bindparam("validity"),
                                verdicts_json=sa.bindparam("text")),
                        [{"rid": rid, "validity": _validity(verdicts),
                          "text": verdicts_text(verdicts)}
                         for rid, verdicts in verdicts_by_record.items()])
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"cannot write to {self.display_url}: {error_reason(exc)}") from exc

    def set_agreement(self, record_id: str, value: float) -> None:
        """Attach an agreement score measured after the record was written."""
        r = tables.records.c
        try:
            with self.engine.begin() as conn:
                conn.execute(tables.records.update().where(r.id == record_id)
                             .values(agreement=value))
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"cannot write to {self.display_url}: {error_reason(exc)}") from exc

    def add_rating(self, record_id: str, rater: str, scores: dict[str, int],
                   comment: str = "") -> str:
        """Store one rater's rubric scores for a record; returns the rating id."""
        rating_id = new_record_id()
        self._insert(tables.ratings, {"id": rating_id, "record_id": record_id, "rater": rater,
                                      "scores": json.dumps(scores, sort_keys=True),
                                      "comment": comment, "created_at": utc_now()})
        return rating_id

    def add_preference(self, rater: str, left_id: str, right_id: str, choice: str) -> str:
        """Store a side-by-side preference: `choice` is "left", "right" or "tie"."""
        if choice not in ("left", "right", "tie"):
            raise StoreError(f"preference choice must be left, right or tie, not {choice!r}")
        pref_id = new_record_id()
        self._insert(tables.preferences, {"id": pref_id, "rater": rater, "left_id": left_id,
                                          "right_id": right_id, "choice": choice,
                                          "created_at": utc_now()})
        return pref_id

    def ratings(self) -> list[dict[str, Any]]:
        with self._read() as conn:
            rows = conn.execute(sa.select(tables.ratings).order_by(tables.ratings.c.id))
            return [dict(r._mapping, scores=json.loads(r.scores)) for r in rows]

    def preferences(self) -> list[dict[str, Any]]:
        with self._read() as conn:
            rows = conn.execute(sa.select(tables.preferences).order_by(tables.preferences.c.id))
            return [dict(r._mapping) for r in rows]

    def _insert(self, table: sa.Table, row: dict[str, Any]) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(table.insert().values(**row))
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"cannot write to {self.display_url}: {error_reason(exc)}") from exc

    # -- reading ---------------------------------------------------------------------

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Serve this thread's reads from one connection until the block ends. For a burst
        of small queries (`status` asks a dozen per site): each would otherwise check a
        connection out, ping it and roll it back, three round trips to PostgreSQL for one
        query. Writes keep their own transactions."""
        if getattr(self._pinned, "conn", None) is not None:
            yield
            return
        with self.engine.connect() as conn:
            self._pinned.conn = conn
            try:
                yield
            finally:
                self._pinned.conn = None

    @contextmanager
    def _read(self) -> Iterator[Any]:
        pinned = getattr(self._pinned, "conn", None)
        if pinned is not None:
            yield pinned
        else:
            with self.engine.connect() as conn:
                yield conn

    def iter_records(self, flt: RecordFilter | None = None, limit: int | None = None,
                     newest_first: bool = False, with_verdicts: bool = True) -> Iterator[Record]:
        query = sa.select(*_RECORD_COLUMNS).where(*(flt or RecordFilter()).clauses())
        order = tables.records.c.id.desc() if newest_first else tables.records.c.id.asc()
        query = query.order_by(order)
        if limit is not None:
            query = query.limit(limit)
        # A server-side cursor on PostgreSQL (psycopg would otherwise fetch the whole
        # result at once), so an export of millions of records holds a batch in memory;
        # SQLite's cursor streams anyway. Not for a few rows: it costs round trips.
        stream = limit is None or limit > 500
        with self._read() as conn:
            result = conn.execute(query.execution_options(stream_results=stream))
            try:
                while rows := result.fetchmany(500):
                    batch = [Record.from_row(row) for row in rows]
                    if with_verdicts:
                        found = self._verdicts(conn, [r.id for r in batch])
                        for record in batch:
                            record.verdicts = found.get(record.id, [])
                    yield from batch
            finally:
                result.close()

    def iter_export_lines(self, flt: RecordFilter | None = None) -> Iterator[str]:
        """`records export`: one line of JSON per record, oldest first, with the values and
        field order of `Record.to_public()` (export.py). Streams like `iter_records`."""
        query, line = export_query((flt or RecordFilter()).clauses())
        with self._read() as conn:
            result = conn.execute(query.execution_options(stream_results=True))
            try:
                while rows := result.fetchmany(500):
                    yield from map(line, rows)
            finally:
                result.close()

    def _verdicts(self, conn: Any, ids: list[str]) -> dict[str, list[Verdict]]:
        v = tables.verdicts.c
        out: dict[str, list[Verdict]] = {}
        query = (sa.select(v.record_id, v.name, v.passed, v.detail)
                 .where(v.record_id.in_(_inline(ids))).order_by(v.record_id, v.name))
        for rid, name, passed, detail in conn.execute(query):
            out.setdefault(rid, []).append(Verdict(name, bool(passed), detail))
        return out

    def get_record(self, record_id: str) -> Record:
        """A record by full id or by a unique prefix of at least 6 characters."""
        r = tables.records.c
        with self._read() as conn:
            rows = conn.execute(sa.select(*_RECORD_COLUMNS).where(r.id == record_id)).all()
            if not rows and len(record_id) >= 6:
                rows = conn.execute(
                    sa.select(*_RECORD_COLUMNS).where(r.id.startswith(record_id)).limit(2)
                ).all()
            if len(rows) == 1:
                record = Record.from_row(rows[0])
                record.verdicts = self._verdicts(conn, [record.id]).get(record.id, [])
                return record
        why = "is ambiguous" if rows else "does not exist"
        raise NotFoundError(f"record {record_id!r} {why}; run `byllm-distill records list`.")

    def count(self, flt: RecordFilter | None = None) -> int:
        query = sa.select(sa.func.count()).select_from(tables.records)
        query = query.where(*(flt or RecordFilter()).clauses())
        with self._read() as conn:
            return int(conn.execute(query).scalar_one())

    def tally(self) -> dict[tuple[str, str], int]:
        """Record counts per (source, status): one pass over a narrow index, in its order."""
        r = tables.records.c
        query = (sa.select(r.source, r.status, sa.func.count()).group_by(r.source, r.status)
                 .order_by(r.source, r.status))
        with self._read() as conn:
            return {(source, status): n for source, status, n in conn.execute(query)}

    def repeated_inputs(self, flt: RecordFilter, limit: int) -> list[str]:
        """Input hashes with at least two records matching `flt` (e.g. inputs the teacher
        answered twice), counted in SQL; at most `limit`, in hash order (a stable,
        arbitrary sample)."""
        r = tables.records.c
        query = (sa.select(r.input_hash).where(*flt.clauses(), r.input_hash.isnot(None))
                 .group_by(r.input_hash).having(sa.func.count() >= 2)
                 .order_by(r.input_hash).limit(limit))
        with self._read() as conn:
            return list(conn.execute(query).scalars())

    def first_per_input(self, flt: RecordFilter, per_input: int) -> list[str]:
        """Ids of the oldest `per_input` records of each input (`input_hash`) matching
        `flt`, oldest first (a window function, on both backends)."""
        r = tables.records.c
        ranked = (sa.select(r.id, sa.func.row_number().over(
            partition_by=r.input_hash, order_by=r.id).label("n")).where(*flt.clauses())
            .subquery())
        query = sa.select(ranked.c.id).where(ranked.c.n <= per_input).order_by(ranked.c.id)
        with self._read() as conn:
            return list(conn.execute(query).scalars())

    def site_names(self) -> list[str]:
        """Every call site with records, sorted: from the `sites` rows, which every write
        upserts, so no record is read."""
        s = tables.sites.c
        with self._read() as conn:
            return list(conn.execute(sa.select(s.site).distinct().order_by(s.site)).scalars())

    def site_summaries(self) -> list[SiteSummary]:
        r = tables.records.c
        query = (
            sa.select(r.site, r.fingerprint, r.model, sa.func.count(), sa.func.max(r.created_at))
            .group_by(r.site, r.fingerprint, r.model)
            .order_by(r.site, r.fingerprint)
        )
        grouped: dict[tuple[str, str], dict[str, Any]] = {}
        with self._read() as conn:
            for site, fingerprint, model, n, last in conn.execute(query):
                entry = grouped.setdefault((site, fingerprint),
                                           {"records": 0, "models": [], "last_seen": ""})
                entry["records"] += n
                entry["models"].append(model)
                entry["last_seen"] = max(entry["last_seen"], last)
        return [SiteSummary(site=s, fingerprint=f, records=e["records"],
                            models=sorted(e["models"]), last_seen=e["last_seen"])
                for (s, f), e in grouped.items()]


def _inline(ids: list[str]) -> Any:
    """A batch's ids for an IN list, written into the statement as quoted literals: bound
    one by one, 500 parameters cost psycopg and PostgreSQL more than the lookup itself."""
    return sa.bindparam("ids", ids, expanding=True, literal_execute=True)


def _validity(verdicts: list[Verdict] | None) -> bool | None:
    """`records.valid` for the verdicts that will be stored."""
    stored = unique_verdicts(verdicts or [])
    return all(v.passed for v in stored) if stored else None


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def error_reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return f"{type(orig or exc).__name__}: {orig or exc}".splitlines()[0]
