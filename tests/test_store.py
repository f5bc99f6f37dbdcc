"""The store: migrations, writes, reads, filters."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from postgres_server import PostgresServer

from byllm_distill.errors import NotFoundError, StoreError
from byllm_distill.store import Record, RecordFilter, Store, parse_since
from byllm_distill.store.migrations import MIGRATIONS


def _record(site: str = "m.f", model: str = "gpt", status: str = "ok", **kw) -> Record:
    return Record(site=site, fingerprint="fp", model=model, messages=[{"role": "user",
                  "content": "hi"}], args={"a": 1}, latency_ms=1.5, status=status,
                  output={"k": [1, 2]}, **kw)


def test_migrations_run_once_and_are_recorded(store_backend: str) -> None:
    Store(store_backend).close()
    store = Store(store_backend)  # a second open applies nothing new
    with store.engine.connect() as conn:
        names = [r[0] for r in conn.execute(sa.text("select name from _migrations"))]
        assert names == [m.__name__ for m in MIGRATIONS]
        if store.engine.dialect.name == "sqlite":
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    store.close()


def test_write_read_filter_roundtrip(store_backend: str) -> None:
    store = Store(store_backend)
    records = [_record(), _record(site="m.g", model="claude"), _record(status="error",
                                                                        error="boom")]
    store.add_records(records)
    assert store.count() == 3
    assert store.count(RecordFilter(site="m.f")) == 2
    assert store.count(RecordFilter(model="claude")) == 1
    assert store.count(RecordFilter(status="error")) == 1
    assert store.count(RecordFilter(source="student")) == 0
    assert store.count(RecordFilter(since="1h")) == 3
    assert store.count(RecordFilter(since="2999-01-01")) == 0
    back = store.get_record(records[0].id)
    assert back == records[0]
    assert store.get_record(records[1].id[:20]).site == "m.g"
    with pytest.raises(NotFoundError, match="does not exist"):
        store.get_record("ffffffffffff")
    summaries = {s.site: s for s in store.site_summaries()}
    assert summaries["m.f"].records == 2 and summaries["m.g"].models == ["claude"]
    newest = list(store.iter_records(limit=1, newest_first=True))
    assert newest[0].id == records[-1].id


def test_since_parsing() -> None:
    assert parse_since("2026-01-02").startswith("2026-01-02T00:00:00")
    with pytest.raises(StoreError, match="not understood"):
        parse_since("last tuesday")


def test_unopenable_store_raises_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="cannot open store"):
        Store(f"sqlite:///{tmp_path / 'file' / 'sub' / 's.db'}")


def test_missing_postgres_database_raises_store_error(postgres_server: PostgresServer) -> None:
    url = postgres_server.url("no_such_database")
    with pytest.raises(StoreError, match='cannot open store .*"no_such_database" does not exist'):
        Store(url)


def test_input_hash_migration_fills_existing_records(store_backend: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A store from before m008 gets every record's input identity filled in."""
    from byllm_distill.store import migrations, tables

    monkeypatch.setattr(migrations, "MIGRATIONS", MIGRATIONS[:MIGRATIONS.index(
        migrations.m008_input_hash)])
    old = Store(store_backend)
    rows = [Record(site="m.f", fingerprint="fp", model="gpt", messages=[], latency_ms=1.0,
                   args={"b": [1, 2], "a": name}) for name in ("x", "y")]
    before_m008 = [{k: v for k, v in r.to_row().items() if k != "route"} for r in rows]  # m009
    with old.engine.begin() as conn:
        conn.execute(sa.table("records", *(sa.column(c) for c in before_m008[0])).insert(),
                     before_m008)
        conn.execute(tables.verdicts.insert(), [
            {"record_id": rows[0].id, "name": "json", "passed": True, "detail": ""},
            {"record_id": rows[0].id, "name": "bounds", "passed": False, "detail": "x=12"}])
    old.close()
    monkeypatch.setattr(migrations, "MIGRATIONS", MIGRATIONS)
    store = Store(store_backend)
    with store.engine.connect() as conn:
        stored = {rid: (digest, text) for rid, digest, text in conn.execute(
            sa.select(tables.records.c.id, tables.records.c.input_hash,
                      tables.records.c.verdicts_json))}
    assert {rid: digest for rid, (digest, _) in stored.items()} == {
        r.id: r.input_hash() for r in rows}
    exported = [json.loads(line) for line in store.iter_export_lines()]
    assert exported == [r.to_public() for r in store.iter_records()]
    assert exported[0]["verdicts"] == [
        {"name": "bounds", "passed": False, "detail": "x=12"},
        {"name": "json", "passed": True, "detail": ""}]
    assert stored[rows[1].id][1] is None
    store.close()


def test_a_store_lock_has_one_holder_until_released_or_stale(store_backend: str) -> None:
    """store/locks.py: what keeps `auto_train` to one worker per store."""
    from byllm_distill.store import locks

    store = Store(store_backend)
    assert locks.holder(store, "job") is None
    assert locks.acquire(store, "job", "a", stale_after=60)
    assert not locks.acquire(store, "job", "b", stale_after=60)  # a is alive
    assert locks.renew(store, "job", "a") and not locks.renew(store, "job", "b")
    assert locks.holder(store, "job")[0] == "a"
    locks.release(store, "job", "b")  # not b's to release
    assert locks.holder(store, "job")[0] == "a"
    locks.release(store, "job", "a")
    assert locks.holder(store, "job") is None
    assert locks.acquire(store, "job", "b", stale_after=60)
    time.sleep(0.01)
    assert locks.acquire(store, "job", "c", stale_after=0)  # b stopped renewing: taken over
    assert locks.holder(store, "job")[0] == "c" and not locks.renew(store, "job", "b")
    store.close()
