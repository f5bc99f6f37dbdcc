"""The registry shared by a team: state and version numbers in PostgreSQL, files on S3.

Two `DistillConfig`s with different data dirs stand for two machines; they share one
database and one bucket (a real PostgreSQL server and a real S3-compatible server).
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from byllm_distill.config import DistillConfig, load_config
from byllm_distill.registry import (
    ArtifactError,
    ArtifactUnavailable,
    SiteRegistry,
    file_manifest,
    site_dirname,
)

SITE = "team.create_next_map"


def _train_stand_in(registry: SiteRegistry, label: str) -> int:
    with registry.new_version() as (number, folder):
        (folder / "model.gguf").write_text(f"stand-in weights {label}")
        (folder / "adapter").mkdir()
        (folder / "adapter" / "adapter_config.json").write_text("{}")
        manifest = {"fingerprint": "fp", "created_at": "2026-12-01T00:00:00",
                    "files": file_manifest(folder)}
        (folder / "manifest.json").write_text(json.dumps(manifest))
    return number


def _remote(config: DistillConfig, number: int, rel: str) -> str:
    return f"{config.artifacts}/{site_dirname(SITE)}/{number}/{rel}"


def test_a_version_trained_on_one_machine_is_served_on_another(
        machines: tuple[DistillConfig, DistillConfig]) -> None:
    a, b = (SiteRegistry(c, SITE) for c in machines)
    number = _train_stand_in(a, "v1")
    assert [v.number for v in b.versions()] == [number]
    assert not (b.versions_dir / str(number)).exists()  # nothing local yet on machine B

    a.activate(number, mode="student")
    assert b.state().mode == "student" and b.state().active == number
    version = b.verify(number)  # downloaded from S3 into B's data dir, hashes checked
    assert version.path == b.versions_dir / str(number)
    assert (version.path / "model.gguf").read_text() == "stand-in weights v1"
    assert (version.path / "adapter" / "adapter_config.json").is_file()

    b.rollback()  # a decision taken on B is A's state too
    assert a.state().mode == "teacher" and a.state().active is None


def test_version_numbers_are_unique_across_machines(
        machines: tuple[DistillConfig, DistillConfig]) -> None:
    numbers: list[int] = []
    lock = threading.Lock()

    def train(config: DistillConfig, label: str) -> None:
        number = _train_stand_in(SiteRegistry(config, SITE), label)
        with lock:
            numbers.append(number)

    threads = [threading.Thread(target=train, args=(machines[i % 2], f"t{i}"))
               for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(numbers) == [1, 2, 3, 4, 5, 6]
    assert [v.number for v in SiteRegistry(machines[1], SITE).versions()] == [1, 2, 3, 4, 5, 6]


def test_a_failed_training_leaves_no_version_anywhere(
        machines: tuple[DistillConfig, DistillConfig]) -> None:
    a, b = (SiteRegistry(c, SITE) for c in machines)
    with pytest.raises(KeyboardInterrupt), a.new_version() as (_number, folder):
        (folder / "model.gguf").write_text("half")
        raise KeyboardInterrupt
    assert a.versions() == [] and b.versions() == []
    assert _train_stand_in(a, "next") == 2  # the abandoned number is never reused


def test_a_corrupt_download_is_refused_with_the_file_named(
        machines: tuple[DistillConfig, DistillConfig]) -> None:
    import fsspec

    a, b = (SiteRegistry(c, SITE) for c in machines)
    number = _train_stand_in(a, "v1")
    fs = fsspec.filesystem("s3", client_kwargs={"endpoint_url": machines[0].artifacts_endpoint})
    fs.pipe_file(_remote(machines[0], number, "model.gguf"), b"tampered with")
    with pytest.raises(ArtifactUnavailable, match="model.gguf does not match its manifest"):
        b.verify(number)
    assert not (b.versions_dir / str(number)).exists()  # nothing half-downloaded is kept
    assert a.verify(number).number == number  # A's own copy is still good


def test_an_unreachable_artifact_store_is_refused_with_the_file_named(
        machines: tuple[DistillConfig, DistillConfig]) -> None:
    a = SiteRegistry(machines[0], SITE)
    number = _train_stand_in(a, "v1")
    offline = SiteRegistry(replace(machines[1], artifacts_endpoint="http://127.0.0.1:9"), SITE)
    with pytest.raises(ArtifactUnavailable, match=r"cannot download s3://.*/1/"):
        offline.verify(number)


def test_no_shared_artifacts_says_how_to_share(tmp_path: Path, team_env: dict[str, str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BYLLM_DISTILL_STORE_URL", team_env["BYLLM_DISTILL_STORE_URL"])
    base = load_config()
    number = _train_stand_in(SiteRegistry(replace(base, home=tmp_path / "a"), SITE), "v1")
    with pytest.raises(ArtifactError, match="no shared artifact store is configured"):
        SiteRegistry(replace(base, home=tmp_path / "b"), SITE).verify(number)


def test_state_json_and_version_folders_are_imported_once(distill_home: Path) -> None:
    """A data dir from before the store held the registry keeps its versions and state."""
    root = distill_home / "sites" / SITE
    folder = root / "versions" / "3"
    folder.mkdir(parents=True)
    (folder / "model.gguf").write_text("old weights")
    (folder / "manifest.json").write_text(json.dumps(
        {"fingerprint": "fp", "files": file_manifest(folder)}))
    (root / "state.json").write_text(json.dumps(
        {"mode": "student", "active": 3, "pinned": None, "fingerprint": "fp",
         "previous": [1], "updated_at": "2026-11-30T00:00:00"}))
    registry = SiteRegistry(load_config(), SITE)
    state = registry.state()
    assert (state.mode, state.active, state.previous) == ("student", 3, [1])
    assert [v.number for v in registry.versions()] == [3]
    assert (root / "state.json.imported").is_file() and not (root / "state.json").exists()
    registry.update(mode="shadow")
    assert SiteRegistry(load_config(), SITE).state().mode == "shadow"  # not re-imported
    assert _train_stand_in(registry, "new") == 4


def test_a_router_obeys_another_machines_rollback_within_the_poll_bound(
        machines: tuple[DistillConfig, DistillConfig], monkeypatch: pytest.MonkeyPatch) -> None:
    from byllm_distill import router as router_mod
    from byllm_distill.capture import Capture

    a, b = machines
    number = _train_stand_in(SiteRegistry(a, SITE), "v1")
    SiteRegistry(a, SITE).activate(number, mode="student")
    router = router_mod.Router(Capture(b), b, student_loader=lambda site, version: None)
    # In one test process A's change would also bump this process's own change counter;
    # another machine's change does not, so hold it still.
    monkeypatch.setattr(router_mod, "state_generation", lambda: 0)
    assert router._state(SITE).mode == "student"
    SiteRegistry(a, SITE).rollback()  # on machine A
    assert router._state(SITE).mode == "student"  # cached: within the bound
    now = router_mod.time.monotonic()
    monkeypatch.setattr(router_mod.time, "monotonic", lambda: now + router_mod.STATE_POLL_S)
    assert router._state(SITE).mode == "teacher"


def test_an_unreachable_artifact_store_means_the_teacher_answers(
        machines: tuple[DistillConfig, DistillConfig], caplog: pytest.LogCaptureFixture) -> None:
    from byllm_distill import router as router_mod
    from byllm_distill.capture import Capture

    a, b = machines
    number = _train_stand_in(SiteRegistry(a, SITE), "v1")
    SiteRegistry(a, SITE).activate(number, mode="student")
    offline = replace(b, artifacts_endpoint="http://127.0.0.1:9")
    loaded: list[Any] = []
    router = router_mod.Router(Capture(offline), offline,
                               student_loader=lambda site, version: loaded.append(version))
    route = router_mod.Route("student", SITE, number)
    with caplog.at_level(logging.WARNING, logger="byllm_distill"):
        for _ in range(3):
            with pytest.raises(ArtifactUnavailable) as failed:
                router._student(route)
            router._student_unloadable(route, failed.value)
    assert loaded == []
    # Logged once with the reason, and not rolled back for the machines that can reach it.
    warnings = [r for r in caplog.records if "cannot be loaded" in r.getMessage()]
    assert len(warnings) == 1
    assert SiteRegistry(a, SITE).state().mode == "student"
