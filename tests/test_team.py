"""Team scale-out as a team runs it: separate app and worker processes with their own data
dirs (standing for machines), one real PostgreSQL server, one real S3-compatible server.

The trained students here are tiny (a few LoRA steps) and the RPG task validators are off:
these tests check the mechanics (who trains, who serves, what each process sees and when),
not how good a student is; the gate's tests and the benchmarks cover that.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import BIN
from postgres_server import PostgresServer

from byllm_distill.config import load_config
from byllm_distill.drops import DropLog
from byllm_distill.registry import SiteRegistry, file_manifest
from byllm_distill.router import STATE_POLL_S
from byllm_distill.rpg.corpus import LEVEL_SITE, MAP_SITE
from byllm_distill.store import Record, RecordFilter, Store
from byllm_distill.store.jobs import JobQueue

APP = Path(__file__).resolve().parent / "team_app.py"


def _env(home: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "BYLLM_DISTILL_HOME": str(home), **extra}


def _app(env: dict[str, str], width: int, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(APP), "--width", str(width), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(app: subprocess.Popen[str], timeout: float = 600) -> list[dict[str, Any]]:
    out, err = app.communicate(timeout=timeout)
    assert app.returncode == 0, err[-3000:]
    return [json.loads(line) for line in out.splitlines()]


def _levels(url: str, width: int | None = None) -> list[Record]:
    store = Store(url)
    try:
        rows = list(store.iter_records(RecordFilter(site=LEVEL_SITE), with_verdicts=False))
    finally:
        store.close()
    return [r for r in rows if width is None or r.args.get("level_width") == width]


def _moment(record: Record) -> float:
    return datetime.fromisoformat(record.created_at).timestamp()


def _answers(lines: list[dict[str, Any]]) -> list[tuple[str, list[int]]]:
    return [(line["name"], line["size"]) for line in lines]


# -- the database goes away while an app runs -------------------------------------------

def test_postgres_restart_while_capturing(postgres_server: PostgresServer,
                                          tmp_path: Path) -> None:
    reference = _finish(_app(_env(tmp_path / "ref", BYLLM_DISTILL_STORE_URL=(
        postgres_server.create_database())), 16, "--calls", "12"))

    url = postgres_server.create_database()
    app = _app(_env(tmp_path / "app", BYLLM_DISTILL_STORE_URL=url), 16, "--calls", "12",
               "--pause", "0.4")
    lines: list[str] = []
    try:
        lines += [app.stdout.readline() for _ in range(3)]
        postgres_server.stop()
        try:
            lines += [app.stdout.readline() for _ in range(5)]  # calls made while it is down
        finally:
            postgres_server.start()
        out, err = app.communicate(timeout=300)
    finally:
        if app.poll() is None:
            app.kill()
    assert app.returncode == 0, err[-3000:]
    outage = [json.loads(line) for line in lines + out.splitlines()]
    assert _answers(outage) == _answers(reference)  # the program's output is unchanged
    assert "held in memory" in err and "written when it answers again" in err
    # Held back while the server was down, written once it was back: every call, once.
    records = _levels(url)
    assert len(records) == 12 and len({r.id for r in records}) == 12
    assert DropLog(tmp_path / "app").totals() == {}


def test_records_the_database_never_took_are_counted_as_dropped(
        postgres_server: PostgresServer, tmp_path: Path) -> None:
    url = postgres_server.create_database()
    postgres_server.stop()
    try:
        lines = _finish(_app(_env(tmp_path / "app", BYLLM_DISTILL_STORE_URL=url), 16,
                             "--calls", "3"))
    finally:
        postgres_server.start()
    assert len(lines) == 3  # every call answered by the teacher
    assert DropLog(tmp_path / "app").totals() == {"store unavailable": 3}
    assert (tmp_path / "app" / "dropped.jsonl").is_file()  # in the data dir, not in /tmp
    assert _levels(url) == []


# -- two app servers, two workers, one database, one artifact store ---------------------

TEAM_SETTINGS = {"BYLLM_DISTILL_RETRAIN_AFTER": "20", "BYLLM_DISTILL_TRAIN_STEPS": "4",
                 "BYLLM_DISTILL_DISABLED_VALIDATORS": "rpg"}


@pytest.mark.slow
def test_two_apps_two_workers_share_one_store_and_one_artifact_store(
        team_env: dict[str, str], tmp_path: Path) -> None:
    url = team_env["BYLLM_DISTILL_STORE_URL"]
    homes = {"a": tmp_path / "machine-a", "b": tmp_path / "machine-b"}
    env = {name: _env(home, **team_env, **TEAM_SETTINGS) for name, home in homes.items()}
    width = {"a": 16, "b": 18}

    # Both apps capture at once: every record lands once.
    apps = {name: _app(env[name], width[name], "--calls", "15") for name in homes}
    for app in apps.values():
        assert len(_finish(app)) == 15
    records = _levels(url)
    assert len(records) == 30 and len({r.id for r in records}) == 30
    assert all(len(_levels(url, width[name])) == 15 for name in homes)

    # Both workers find the site due; exactly one trains it.
    workers = {name: subprocess.Popen(
        [str(BIN / "byllm-distill"), "worker", "--once", "--site", LEVEL_SITE],
        env=env[name], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for name in homes}
    said = {name: w.communicate(timeout=900)[0] for name, w in workers.items()}
    assert all(w.returncode == 0 for w in workers.values()), said
    trainers = [name for name in homes if "trained version 1" in said[name]]
    assert len(trainers) == 1, said
    (other,) = [name for name in homes if name not in trainers]
    assert "nothing to do" in said[other], said
    store = Store(url)
    (job,) = JobQueue(store).list(site=LEVEL_SITE)
    assert (job.status, job.attempts, job.version) == ("done", 1, 1)
    assert not (homes[other] / "sites" / LEVEL_SITE / "versions" / "1").exists()

    promoted = subprocess.run([str(BIN / "byllm-distill"), "promote", LEVEL_SITE],
                              env=env[trainers[0]], capture_output=True, text=True)
    assert promoted.returncode == 0, promoted.stderr

    # After the promotion both app servers serve the student (the other machine
    # downloads version 1 from the artifact store first).
    before = {r.id for r in records}
    for name in homes:
        assert len(_finish(_app(env[name], width[name], "--calls", "3"))) == 3
        served = [r for r in _levels(url, width[name]) if r.id not in before]
        assert [r.source for r in served].count("student") >= 1, [r.source for r in served]
        assert all(r.version == 1 for r in served if r.source == "student")
    assert (homes[other] / "sites" / LEVEL_SITE / "versions" / "1" / "model.gguf").is_file()

    # A rollback made through one machine is obeyed by the other within STATE_POLL_S.
    stop = tmp_path / "stop"
    app = _app(env[other], width[other], "--until", str(stop), "--pause", "0.2")
    try:
        deadline = time.monotonic() + 300
        while sum(r.source == "student" for r in _levels(url, width[other])) < 3 + 2:
            assert app.poll() is None and time.monotonic() < deadline, app.stderr.read()
            time.sleep(0.5)
        rolled = subprocess.run([str(BIN / "byllm-distill"), "rollback", LEVEL_SITE],
                                env=env[trainers[0]], capture_output=True, text=True)
        assert rolled.returncode == 0, rolled.stderr
        after = time.time()
        obeyed_by = after + STATE_POLL_S + 1.0  # the bound, plus one call in flight
        while not [r for r in _levels(url, width[other]) if _moment(r) > obeyed_by + 2]:
            assert app.poll() is None and time.monotonic() < deadline, app.stderr.read()
            time.sleep(0.5)
    finally:
        stop.touch()
    _finish(app)
    late = [r for r in _levels(url, width[other]) if _moment(r) > obeyed_by]
    assert late and {r.source for r in late} == {"teacher"}, [r.source for r in late]
    store.close()


@pytest.mark.slow
def test_a_killed_workers_job_is_retried_by_another_worker(
        team_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from byllm_distill.rpg.corpus import generate_corpus

    homes = {"a": tmp_path / "machine-a", "b": tmp_path / "machine-b"}
    for key, value in team_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("BYLLM_DISTILL_HOME", str(homes["a"]))
    generate_corpus(runs=6, levels_per_run=5, seed=5, progress=False)
    store = Store(team_env["BYLLM_DISTILL_STORE_URL"])
    fingerprint = next(store.iter_records(RecordFilter(site=MAP_SITE))).fingerprint
    registry = SiteRegistry(replace(load_config(), home=homes["a"]), MAP_SITE)
    with registry.new_version() as (active, folder):
        (folder / "model.gguf").write_text("stand-in weights")
        (folder / "manifest.json").write_text(json.dumps(
            {"fingerprint": fingerprint, "files": file_manifest(folder)}))
    registry.activate(active, mode="student")
    registry.update(pinned=str(active))  # the retried job must not displace it either
    state_before = registry.state()

    common = {**team_env, "BYLLM_DISTILL_RETRAIN_AFTER": "10",
              "BYLLM_DISTILL_DISABLED_VALIDATORS": "rpg", "BYLLM_DISTILL_STALE_AFTER": "6"}
    log_a = tmp_path / "worker-a.log"
    with log_a.open("w") as fh:
        worker_a = subprocess.Popen(
            [str(BIN / "byllm-distill"), "worker", "--once", "--site", MAP_SITE],
            env=_env(homes["a"], **common, BYLLM_DISTILL_TRAIN_STEPS="400"), stdout=fh,
            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        versions_a = homes["a"] / "sites" / MAP_SITE / "versions"
        while not list(versions_a.glob("*.partial/adapter.partial")):
            assert worker_a.poll() is None and time.monotonic() < deadline, log_a.read_text()
            time.sleep(0.5)
        time.sleep(2)
        worker_a.send_signal(signal.SIGKILL)
        worker_a.wait(timeout=30)
    finally:
        if worker_a.poll() is None:
            worker_a.kill()
    assert registry.state() == state_before
    (job,) = JobQueue(store).list(site=MAP_SITE)
    assert (job.status, job.attempts) == ("running", 1)  # as the dead worker left it

    time.sleep(7)  # the dead worker's heartbeat is now older than BYLLM_DISTILL_STALE_AFTER
    worker_b = subprocess.run(
        [str(BIN / "byllm-distill"), "worker", "--once", "--site", MAP_SITE],
        env=_env(homes["b"], **common, BYLLM_DISTILL_TRAIN_STEPS="2"), capture_output=True,
        text=True, timeout=900)
    assert worker_b.returncode == 0, worker_b.stdout + worker_b.stderr
    (job,) = JobQueue(store).list(site=MAP_SITE)
    assert (job.status, job.attempts) == ("done", 2), job
    assert f"trained version {job.version}" in worker_b.stdout
    assert job.version == active + 2  # the dead worker's number is never reused
    assert registry.state() == state_before  # active and pinned, untouched
    assert [v.number for v in registry.versions()] == [active, job.version]
    assert registry.verify(job.version).path.is_dir()  # machine A fetches B's version
    store.close()
