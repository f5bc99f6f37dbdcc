"""The record store: SQLAlchemy Core over SQLite (default) or PostgreSQL.

Contract: a `Store` is migrated in its constructor, so no caller can forget. Each
`add_records` call is one transaction: all of its records land or none do. Records are
append-only; a site row (`sites`) is upserted per (site, fingerprint) with first/last
seen times. SQLite runs in WAL mode with a 30 s busy timeout, so several threads and
processes can write at once. Only portable constructs are used in queries; the one
dialect-specific piece (upsert) is chosen by dialect name for SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from byllm_distill.errors import NotFoundError, StoreError
from byllm_distill.store import tables
from byllm_distill.store.migrations import migrate
from byllm_distill.store.record import Record

_RELATIVE = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str) -> str:
    """`--since` value → ISO timestamp. Accepts `30m`, `2h`, `7d`, a date or a datetime."""
    match = _RELATIVE.match(text.strip())
    if match:
        delta = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
        return (datetime.now(UTC) - delta).isoformat(timespec="microseconds")
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise StoreError(
            f"--since {text!r} is not understood; use e.g. 30m, 2h, 7d, 2026-11-01 "
            "or 2026-11-01T12:00:00"
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class RecordFilter:
    site: str | None = None
    model: str | None = None
    source: str | None = None
    status: str | None = None
    since: str | None = None
    ids: Sequence[str] | None = None

    def clauses(self) -> list[Any]:
        r = tables.records.c
        out: list[Any] = []
        for column, value in (("site", self.site), ("model", self.model),
                              ("source", self.source), ("status", self.status)):
            if value is not None:
                out.append(getattr(r, column) == value)
        if self.since is not None:
            out.append(r.created_at >= parse_since(self.since))
        if self.ids is not None:
            out.append(r.id.in_(list(self.ids)))
        return out


@dataclass(frozen=True)
class SiteSummary:
    site: str
    fingerprint: str
    records: int
    models: list[str]
    last_seen: str

    def to_dict(self) -> dict[str, Any]:
        return {"site": self.site, "fingerprint": self.fingerprint, "records": self.records,
                "models": self.models, "last_seen": self.last_seen}


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
        try:
            self.engine = _make_engine(url)
            with self.engine.begin() as conn:
                migrate(conn)
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            raise StoreError(f"cannot open store {self.display_url}: {_reason(exc)}") from exc

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
                conn.execute(tables.records.insert(), [r.to_row() for r in batch])
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
            raise StoreError(f"cannot write to {self.display_url}: {_reason(exc)}") from exc

    # -- reading ---------------------------------------------------------------------

    def iter_records(self, flt: RecordFilter | None = None, limit: int | None = None,
                     newest_first: bool = False) -> Iterator[Record]:
        query = sa.select(tables.records).where(*(flt or RecordFilter()).clauses())
        order = tables.records.c.id.desc() if newest_first else tables.records.c.id.asc()
        query = query.order_by(order)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            for row in conn.execute(query):
                yield Record.from_row(row)

    def get_record(self, record_id: str) -> Record:
        """A record by full id or by a unique prefix of at least 6 characters."""
        r = tables.records.c
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(tables.records).where(r.id == record_id)).all()
            if not rows and len(record_id) >= 6:
                rows = conn.execute(
                    sa.select(tables.records).where(r.id.startswith(record_id)).limit(2)
                ).all()
        if len(rows) != 1:
            why = "is ambiguous" if rows else "does not exist"
            raise NotFoundError(f"record {record_id!r} {why}; run `byllm-distill records list`.")
        return Record.from_row(rows[0])

    def count(self, flt: RecordFilter | None = None) -> int:
        query = sa.select(sa.func.count()).select_from(tables.records)
        query = query.where(*(flt or RecordFilter()).clauses())
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def site_summaries(self) -> list[SiteSummary]:
        r = tables.records.c
        query = (
            sa.select(r.site, r.fingerprint, r.model, sa.func.count(), sa.func.max(r.created_at))
            .group_by(r.site, r.fingerprint, r.model)
            .order_by(r.site, r.fingerprint)
        )
        grouped: dict[tuple[str, str], dict[str, Any]] = {}
        with self.engine.connect() as conn:
            for site, fingerprint, model, n, last in conn.execute(query):
                entry = grouped.setdefault((site, fingerprint),
                                           {"records": 0, "models": [], "last_seen": ""})
                entry["records"] += n
                entry["models"].append(model)
                entry["last_seen"] = max(entry["last_seen"], last)
        return [SiteSummary(site=s, fingerprint=f, records=e["records"],
                            models=sorted(e["models"]), last_seen=e["last_seen"])
                for (s, f), e in grouped.items()]


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return f"{type(orig or exc).__name__}: {orig or exc}".splitlines()[0]
