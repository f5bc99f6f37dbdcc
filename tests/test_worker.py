"""The worker: due sites, quiet windows, durable jobs, and a kill in the middle of training."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from conftest import stand_in_version

import byllm_distill
from byllm_distill import router as router_mod
from byllm_distill.capture import get_capture
from byllm_distill.config import load_config
from byllm_distill.registry import SiteRegistry
from byllm_distill.rpg.corpus import MAP_SITE, generate_corpus, load_program
from byllm_distill.rpg.teacher import OfflineDesigner
from byllm_distill.scheduler import due_sites, quiet_now
from byllm_distill.store import RecordFilter, Store
from byllm_distill.store.jobs import JobQueue


def test_quiet_window_and_load() -> None:
    config = load_config(environ={"BYLLM_DISTILL_QUIET_HOURS": "22-6"})
    assert quiet_now(config, now=datetime(2026, 1, 1, 23))[0]
    assert quiet_now(config, now=datetime(2026, 1, 1, 3))[0]
    ok, why = quiet_now(config, now=datetime(2026, 1, 1, 12))
    assert not ok and "quiet hours" in why
    busy = load_config(environ={"BYLLM_DISTILL_MAX_LOAD": "0.5"})
    assert not quiet_now(busy, load=4.0)[0] and quiet_now(busy, load=0.1)[0]


def test_training_device_choice() -> None:
    """`worker --device` / `train --device`: cuda where torch sees a GPU, a clear error
    where it was asked for and there is none; the manifest records what was used."""
    import torch

    from byllm_distill.errors import ConfigError
    from byllm_distill.training import TrainingError
    from byllm_distill.training.trainer import TrainConfig, pick_device

    gpu = torch.cuda.is_available()
    assert pick_device("cpu") == "cpu"
    assert pick_device("auto") == ("cuda" if gpu else "cpu")
    if gpu:
        assert pick_device("cuda") == "cuda"
    else:
        with pytest.raises(TrainingError, match="no CUDA GPU"):
            pick_device("cuda")
    with pytest.raises(TrainingError, match="'device' must be one of"):
        TrainConfig(device="tpu")
    assert load_config(environ={"BYLLM_DISTILL_TRAIN_DEVICE": "cpu"}).train_device == "cpu"
    with pytest.raises(ConfigError, match="train_device"):
        load_config(environ={"BYLLM_DISTILL_TRAIN_DEVICE": "gpu"})


def test_due_sites_and_job_queue(distill_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BYLLM_DISTILL_RETRAIN_AFTER", "30")
    generate_corpus(runs=5, levels_per_run=5, seed=3, progress=False)  # 25 per site
    store = Store(load_config().database_url)
    assert due_sites(store, load_config()) == []
    generate_corpus(runs=2, levels_per_run=5, seed=4, progress=False)  # 35 per site
    assert {d.site for d in due_sites(store, load_config())} == {MAP_SITE,
                                                                 "rpg.create_next_level"}
    queue = JobQueue(store)
    job = queue.enqueue(MAP_SITE)
    assert job is not None and queue.enqueue(MAP_SITE) is None  # one per site at a time
    claimed = queue.claim(pid=123)
    assert claimed.id == job.id and claimed.status == "running" and claimed.attempts == 1
    assert queue.claim(pid=456) is None
    time.sleep(0.01)
    assert queue.requeue_stale(stale_after=0) == 1  # its worker died: retryable
    assert queue.claim(pid=789).attempts == 2


@pytest.mark.slow
def test_killing_the_worker_mid_training_leaves_the_active_version_serving(
        distill_home: Path, tmp_path: Path) -> None:
    generate_corpus(runs=8, levels_per_run=5, seed=5, progress=False)
    store = Store(load_config().database_url)
    fingerprint = next(store.iter_records(RecordFilter(site=MAP_SITE))).fingerprint
    active = stand_in_version(MAP_SITE, fingerprint)
    registry = SiteRegistry(load_config(), MAP_SITE)
    registry.activate(active, mode="student")
    state_before = registry.state()

    env = {**os.environ, "BYLLM_DISTILL_RETRAIN_AFTER": "10", "BYLLM_DISTILL_TRAIN_STEPS": "400"}
    output = tmp_path / "worker.log"
    with output.open("w") as log_file:
        worker = subprocess.Popen(
            [str(Path(sys.executable).parent / "byllm-distill"), "worker", "--once", "--site",
             MAP_SITE], env=env, stdout=log_file, stderr=subprocess.STDOUT)
    queue = JobQueue(store)
    deadline = time.monotonic() + 300
    try:
        # Kill it inside the optimizer loop: the trainer writes its adapter into
        # `adapter.partial` (inside the version's `.partial` folder) once the base model is
        # loaded and training steps begin.
        while time.monotonic() < deadline:
            training = list(registry.versions_dir.glob("*.partial/adapter.partial"))
            if training:
                break
            assert worker.poll() is None, output.read_text()
            time.sleep(0.5)
        else:
            pytest.fail(f"training did not start within 5 minutes:\n{output.read_text()}")
        time.sleep(3)
        assert worker.poll() is None, output.read_text()
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert training[0].is_dir()  # killed mid-training: the half-written adapter is left

    assert registry.state() == state_before
    assert [v.number for v in registry.versions()] == [active]
    (job,) = queue.list(site=MAP_SITE)
    assert job.status == "running"  # as the dead worker left it
    assert queue.requeue_stale(stale_after=0) == 1 and queue.list(site=MAP_SITE)[0].status == (
        "queued")

    # And the site is still served by its active version.
    capture = get_capture()
    router_mod._router = router_mod.Router(
        capture, capture.config,
        student_loader=lambda site, version: OfflineDesigner(model_name="still-serving"))
    program = load_program()
    program.create_next_map(program.create_next_level([], 1, 16, 12))
    byllm_distill.flush()
    served = list(store.iter_records(RecordFilter(site=MAP_SITE, source="student")))
    assert [r.model for r in served] == ["still-serving"]
    assert not any(p.name.endswith(".partial") and (p / "manifest.json").exists()
                   for p in registry.versions_dir.iterdir())


def test_worker_once_with_nothing_due(distill_home: Path) -> None:
    from byllm_distill.lifecycle import Worker

    assert Worker(load_config()).step() == "nothing to do: no site is due for training"




def test_a_failing_site_backs_off_never_blocks_others_and_then_needs_attention(
        distill_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker loop's bookkeeping (the job itself is a stand-in that fails): one round
    runs every due site even when one fails; a failed site waits its back-off, growing
    with each failure; after `max_failures` it needs attention until `retry SITE`."""
    from dataclasses import replace as changed
    from datetime import datetime as dt

    from conftest import run_cli

    from byllm_distill import lifecycle
    from byllm_distill.lifecycle import JobReport, Worker, site_status
    from byllm_distill.rpg.corpus import LEVEL_SITE
    from byllm_distill.scheduler import retry_info

    monkeypatch.setenv("BYLLM_DISTILL_RETRAIN_AFTER", "10")
    monkeypatch.setenv("BYLLM_DISTILL_MAX_FAILURES", "3")
    generate_corpus(runs=3, levels_per_run=5, seed=3, progress=False)  # 15 per site: both due
    config = load_config()
    store = Store(config.database_url)
    queue = JobQueue(store)
    ran: list[str] = []

    def failing_job(store: Store, config: object, job: object, queue: JobQueue,
                    progress: bool = True) -> JobReport:
        ran.append(job.site)
        queue.fail(job.id, f"TrainingError: {job.site} cannot be trained")
        return JobReport(job, error="failed")

    monkeypatch.setattr(lifecycle, "run_job", failing_job)
    Worker(config, store, progress=False).run(once=True)
    assert sorted(ran) == [LEVEL_SITE, MAP_SITE]  # the first failure did not stop the round

    ran.clear()
    Worker(config, store, progress=False).run(once=True)
    assert ran == []  # both back off
    info = retry_info(queue, config, MAP_SITE)
    (job,) = queue.list(site=MAP_SITE)
    waited = dt.fromisoformat(info.retry_at) - dt.fromisoformat(job.finished_at)
    assert info.failures == 1 and waited.total_seconds() == config.retry_backoff
    assert info.reason == f"TrainingError: {MAP_SITE} cannot be trained"
    status = site_status(store, config, MAP_SITE)["retry"]
    assert status == {"failures": 1, "reason": info.reason, "retry_at": info.retry_at,
                      "needs_attention": False}

    no_wait = changed(config, retry_backoff=0.0)
    for _ in range(4):
        Worker(no_wait, store, progress=False).run(once=True)
    assert ran.count(MAP_SITE) == 2  # failures 2 and 3, then it is no longer retried
    info = retry_info(queue, config, MAP_SITE)
    assert info.failures == 3 and info.needs_attention and info.waiting()

    cleared = run_cli("retry", MAP_SITE)
    assert cleared.returncode == 0 and "3 failed job(s) cleared" in cleared.stdout
    ran.clear()
    Worker(no_wait, store, progress=False).run(once=True)
    assert MAP_SITE in ran


def test_auto_train_starts_a_worker_only_when_due_in_quiet_hours_and_one_per_store(
        distill_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from byllm_distill import autotrain
    from byllm_distill.store import locks
    from byllm_distill.store.events import site_events

    started: list[str] = []
    monkeypatch.setattr(autotrain, "start_worker",
                        lambda config, token: started.append(token) or 4242)
    monkeypatch.setenv("BYLLM_DISTILL_RETRAIN_AFTER", "10")
    store = Store(load_config().database_url)
    assert autotrain.AutoTrain(load_config()).check(store) is None  # nothing captured yet
    generate_corpus(runs=3, levels_per_run=5, seed=3, progress=False)  # 15 per site: due
    hour = datetime.now().hour
    monkeypatch.setenv("BYLLM_DISTILL_QUIET_HOURS", f"{(hour + 2) % 24}-{(hour + 3) % 24}")
    assert autotrain.AutoTrain(load_config()).check(store) is None and started == []
    monkeypatch.delenv("BYLLM_DISTILL_QUIET_HOURS")

    first, second = autotrain.AutoTrain(load_config()), autotrain.AutoTrain(load_config())
    token = first.check(store)
    assert token is not None and started == [token]
    assert second.check(store, final=True) is None  # another app: the worker runs already
    assert first.check(store) is None  # and the same app looks again only after CHECK_S
    assert locks.holder(store, autotrain.LOCK)[0] == token
    events = site_events(store, kinds=("auto_train",))
    assert {e.site for e in events} == {MAP_SITE, "rpg.create_next_level"}
    assert {e.details["holder"] for e in events} == {token}

    with autotrain.hold_lock(store, token):  # what the started worker does
        assert locks.holder(store, autotrain.LOCK)[0] == token
    assert locks.holder(store, autotrain.LOCK) is None
    refused = autotrain.hold_lock(store, token)
    with pytest.raises(byllm_distill.errors.DistillError, match="not held by"):
        refused.__enter__()


@pytest.mark.slow
def test_auto_train_starts_exactly_one_worker_for_two_app_processes_and_it_trains_the_site(
        distill_home: Path, tmp_path: Path) -> None:
    """Two app processes share a store with `auto_train` on; the level site becomes due
    while they run. One detached worker starts, outlives both apps and trains the site."""
    from byllm_distill.autotrain import LOCK
    from byllm_distill.store import locks
    from byllm_distill.store.events import site_events

    app = Path(__file__).resolve().parent / "team_app.py"
    env = {**os.environ, "BYLLM_DISTILL_AUTO_TRAIN": "true", "BYLLM_DISTILL_RETRAIN_AFTER": "20",
           "BYLLM_DISTILL_TRAIN_STEPS": "40"}
    apps = [subprocess.Popen([sys.executable, str(app), "--width", str(width), "--calls", "15"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for width in (16, 18)]
    for proc in apps:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert len(out.splitlines()) == 15  # the program's answers were not held up
    store = Store(load_config().database_url)
    events = site_events(store, kinds=("auto_train",))
    assert len({e.details["holder"] for e in events}) == 1, events
    assert {e.site for e in events} == {"rpg.create_next_level"}
    (event,) = events
    log_file = load_config().data_dir / "auto-train.log"
    registry = SiteRegistry(load_config(), "rpg.create_next_level")
    deadline = time.monotonic() + 900
    while locks.holder(store, LOCK) is not None:  # the worker runs on after the apps exit
        assert time.monotonic() < deadline, log_file.read_text()
        time.sleep(2)
    log_text = log_file.read_text()
    assert log_text.count("auto_train worker") == 2, log_text  # one started, one done
    assert [v.number for v in registry.versions()] == [1], log_text
    assert "rpg.create_next_level: trained version 1" in log_text
    (job,) = JobQueue(store).list(site="rpg.create_next_level")
    assert job.status == "done" and job.pid == event.details["pid"]
