"""The router with stand-in students (real byLLM model subclasses), no training needed.

The RPG program runs in this process; its teacher is the offline designer. A "student"
here is another designer (a different seed, or one that breaks maps on purpose), loaded
through the router's student loader as a trained GGUF would be.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES

import byllm_distill
from byllm_distill import router as router_mod
from byllm_distill.background import Background
from byllm_distill.capture import get_capture
from byllm_distill.config import load_config
from byllm_distill.drops import DropLog
from byllm_distill.gate import wilson_lower
from byllm_distill.registry import SiteRegistry, file_manifest
from byllm_distill.rpg.corpus import MAP_SITE, load_program
from byllm_distill.rpg.teacher import OfflineDesigner
from byllm_distill.runtime.load import Turns
from byllm_distill.serialize import to_jsonable
from byllm_distill.store import RecordFilter, Store
from byllm_distill.store.events import site_events


class BrokenDesigner(OfflineDesigner):
    """Answers maps with every enemy removed: parses, but fails `enemy_count`."""

    def answer(self, mt_run: Any) -> str:
        data = json.loads(super().answer(mt_run))
        data["enemies"] = []
        return json.dumps(data)


class ExplodingModel(OfflineDesigner):
    def answer(self, mt_run: Any) -> str:
        raise RuntimeError("student crashed")


@pytest.fixture
def program() -> Any:
    return load_program()


def _level(program: Any, difficulty: int = 2) -> Any:
    return program.create_next_level([], difficulty, 16, 12)


def _register_version(fingerprint: str, label: str = "a") -> int:
    registry = SiteRegistry(load_config(), MAP_SITE)
    with registry.new_version() as (number, folder):
        (folder / "model.gguf").write_text(f"stand-in weights {label}")
        manifest = {"fingerprint": fingerprint, "files": file_manifest(folder)}
        (folder / "manifest.json").write_text(json.dumps(manifest))
    return number


def _install_router(students: dict[int, Any], **site_settings: Any) -> router_mod.Router:
    capture = get_capture()
    config = capture.config
    if site_settings:
        config = replace(config, defaults=replace(config.defaults, **site_settings))
    router = router_mod.Router(capture, config,
                               student_loader=lambda site, version: students[version.number])
    router_mod._router = router
    return router


def _map_fingerprint(program: Any) -> str:
    program.create_next_map(_level(program))
    byllm_distill.flush()
    store = Store(load_config().database_url)
    return next(store.iter_records(RecordFilter(site=MAP_SITE))).fingerprint


def test_student_serves_and_is_recorded(program: Any) -> None:
    fingerprint = _map_fingerprint(program)
    version = _register_version(fingerprint)
    student = OfflineDesigner(model_name="student-designer")
    _install_router({version: student})
    SiteRegistry(load_config(), MAP_SITE).activate(version, mode="student")

    level = _level(program, 3)
    answer = program.create_next_map(level)
    byllm_distill.flush()
    store = Store(load_config().database_url)
    (served,) = list(store.iter_records(RecordFilter(site=MAP_SITE, source="student")))
    assert served.version == version and served.model == "student-designer"
    assert served.valid is True
    assert len(answer.enemies) == level.num_enemies


def test_rejected_student_answer_falls_back_inside_the_call(program: Any) -> None:
    fingerprint = _map_fingerprint(program)
    version = _register_version(fingerprint)
    _install_router({version: BrokenDesigner(model_name="broken-student")})
    SiteRegistry(load_config(), MAP_SITE).activate(version, mode="student")

    level = _level(program, 4)
    answer = program.create_next_map(level)
    assert len(answer.enemies) == level.num_enemies  # the teacher's answer came back
    byllm_distill.flush()
    store = Store(load_config().database_url)
    (rejected,) = list(store.iter_records(RecordFilter(site=MAP_SITE, source="student")))
    assert rejected.valid is False
    assert "enemy_count" in {v.name for v in rejected.verdicts if not v.passed}
    teacher = list(store.iter_records(RecordFilter(site=MAP_SITE, source="teacher")))
    assert len(teacher) == 2  # the fingerprint probe, then the fallback: new training data
    assert teacher[-1].output["enemies"] == [
        {"x": e.x, "y": e.y} for e in answer.enemies]


def test_crashing_student_falls_back(program: Any) -> None:
    version = _register_version(_map_fingerprint(program))
    _install_router({version: ExplodingModel(model_name="exploding")})
    SiteRegistry(load_config(), MAP_SITE).activate(version, mode="student")
    level = _level(program)
    assert len(program.create_next_map(level).enemies) == level.num_enemies


class TurnTakingDesigner(OfflineDesigner):
    """A student that answers one call at a time, taking turns as the engine does
    (runtime/load.py); each answer waits until `release` is set."""

    turns = Turns()
    answering = threading.Event()
    release = threading.Event()

    def answer(self, mt_run: Any) -> str:
        with type(self).turns.turn():
            type(self).answering.set()
            type(self).release.wait(30)
            return super().answer(mt_run)

    def expected_wait_ms(self) -> float:
        return 1000.0 * type(self).turns.expected_wait_s()


def test_a_call_that_would_wait_past_max_wait_ms_is_answered_by_the_teacher(
        program: Any) -> None:
    fingerprint = _map_fingerprint(program)
    version = _register_version(fingerprint)
    _install_router({version: TurnTakingDesigner(model_name="busy-student")},
                    max_wait_ms=200.0)
    SiteRegistry(load_config(), MAP_SITE).activate(version, mode="student")
    first_level, second_level = _level(program, 3), _level(program, 5)
    first: list[Any] = []
    caller = threading.Thread(target=lambda: first.append(program.create_next_map(first_level)))
    caller.start()
    assert TurnTakingDesigner.answering.wait(30)
    time.sleep(0.3)  # the student's answer in progress has now run past the 200 ms budget
    try:
        second = program.create_next_map(second_level)  # would block until release
    finally:
        TurnTakingDesigner.release.set()
        caller.join(30)
    byllm_distill.flush()
    store = Store(load_config().database_url)
    (served,) = store.iter_records(RecordFilter(site=MAP_SITE, source="student"))
    assert served.args["level"]["difficulty"] == 3 and served.route is None
    assert to_jsonable(first[0]) == served.output
    teacher = [r for r in store.iter_records(RecordFilter(site=MAP_SITE, source="teacher"))
               if r.args["level"]["difficulty"] == 5]
    (answered,) = teacher
    assert answered.route.startswith("student busy: expected wait ")
    assert answered.route.endswith("ms > max_wait_ms 200")
    assert to_jsonable(second) == answered.output  # the program got the teacher's answer
    # The queue is empty again: the next call is the student's.
    program.create_next_map(_level(program, 4))
    byllm_distill.flush()
    assert store.count(RecordFilter(site=MAP_SITE, source="student")) == 2


def test_turns_expect_the_answer_in_progress_and_the_queue_behind_it() -> None:
    turns, holding, release = Turns(), threading.Event(), threading.Event()
    assert turns.expected_wait_s() == 0.0

    def answer() -> None:
        with turns.turn():
            holding.set()
            release.wait(30)

    first = threading.Thread(target=answer)
    first.start()
    assert holding.wait(30)
    time.sleep(0.05)
    assert turns.expected_wait_s() >= 0.05  # no answer finished yet: what has run so far
    holding.clear()
    second = threading.Thread(target=answer)
    second.start()  # queued behind the first
    release.set()
    first.join(30)
    second.join(30)
    assert turns.expected_wait_s() == 0.0  # idle again
    holding.clear()
    release.clear()
    third = threading.Thread(target=answer)
    third.start()
    assert holding.wait(30)
    mean = turns._mean_s  # the moving mean of the two answers that finished
    assert mean is not None and mean > 0
    assert turns.expected_wait_s() <= mean  # the rest of one answer, nobody queued
    release.set()
    third.join(30)


def test_shadow_samples_then_promotion(program: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BYLLM_DISTILL_HOME", str(load_config().data_dir))
    version = _register_version(_map_fingerprint(program))
    router = _install_router({version: OfflineDesigner(model_name="student-designer")})
    registry = SiteRegistry(load_config(), MAP_SITE)
    registry.activate(version, mode="shadow")
    settings = load_config().site(MAP_SITE)
    # Validity alone would promote after the fewest perfect samples whose Wilson lower bound
    # clears the threshold (35 at 0.9); the quality criteria need the teacher's repeats too.
    enough_for_validity = next(n for n in range(1, 500)
                               if wilson_lower(n, n) >= settings.threshold)
    calls = 0
    while registry.state().mode == "shadow" and calls < 120:
        program.create_next_map(_level(program, 1 + calls % 5))
        router.drain()
        calls += 1
    assert registry.state().mode == "student"
    assert calls >= enough_for_validity
    byllm_distill.flush()
    store = Store(load_config().database_url)
    shadow = list(store.iter_records(RecordFilter(site=MAP_SITE, source="shadow")))
    assert len(shadow) == calls
    assert all(r.agreement is not None and 0 <= r.agreement <= 1 for r in shadow)
    # Up to teacher_repeats shadow inputs were answered twice by the teacher.
    teacher = list(store.iter_records(RecordFilter(site=MAP_SITE, source="teacher")))
    assert len(teacher) == 1 + calls + min(calls, settings.teacher_repeats)
    (event,) = site_events(store, MAP_SITE, kinds=("promoted",))
    assert event.version == version and event.details["lower_bound"] >= settings.threshold
    assert event.details["n"] >= settings.min_samples
    criteria = {c["name"]: c for c in event.details["criteria"]}
    for name in ("validity", "agreement:level", "fidelity:json_values", "fidelity:rpg_patterns",
                 "fidelity:rpg_diversity"):
        c = criteria[name]
        assert c["passed"] is True and {"value", "bound", "bar", "n"} <= set(c), c


def _shadow_call_then_exit(program: Any, student: str, exit_wait: float,
                           ) -> tuple[subprocess.CompletedProcess[str], float]:
    version = _register_version(_map_fingerprint(program))
    SiteRegistry(load_config(), MAP_SITE).activate(version, mode="shadow")
    env = {**os.environ, "BYLLM_DISTILL_EXIT_WAIT": str(exit_wait)}
    started = time.monotonic()
    result = subprocess.run([sys.executable, str(FIXTURES / "shadow_exit_proc.py"), student],
                            capture_output=True, text=True, env=env, timeout=120)
    return result, time.monotonic() - started


def test_shadow_sample_still_running_at_exit_is_recorded(program: Any) -> None:
    result, _ = _shadow_call_then_exit(program, "slow", exit_wait=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"  # the teacher's answer, unchanged
    store = Store(load_config().database_url)
    (shadow,) = list(store.iter_records(RecordFilter(site=MAP_SITE, source="shadow")))
    assert shadow.model == "stand-in" and shadow.agreement is not None
    assert DropLog(load_config().data_dir).totals() == {}


def test_exit_gives_up_on_a_stuck_student_after_exit_wait(program: Any) -> None:
    result, seconds = _shadow_call_then_exit(program, "stuck", exit_wait=1)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"
    # Parked in the student's code at once, not after router.PARK_WAIT_S more seconds.
    assert "did not stop" not in result.stderr and seconds < router_mod.PARK_WAIT_S + 20
    assert "unfinished at exit" in result.stderr
    assert DropLog(load_config().data_dir).totals() == {"unfinished at exit": 1}
    store = Store(load_config().database_url)
    assert store.count(RecordFilter(site=MAP_SITE, source="shadow")) == 0
    assert store.count(RecordFilter(site=MAP_SITE, source="teacher")) == 2


def test_background_parks_only_in_the_given_code() -> None:
    background = Background("test-park")
    calls = []

    def task() -> None:
        while True:
            calls.append(json.dumps(len(calls)))

    background.submit(task)
    assert not background.park(("no.such.module",), timeout=0.3)
    assert background.park(("json",), timeout=5)
    seen = len(calls)
    time.sleep(0.2)
    assert len(calls) == seen and background.unfinished() == 1
    assert threading.getprofile() is None  # the hook is gone once the thread is parked


def test_bad_student_is_never_promoted_and_live_failures_roll_back(program: Any) -> None:
    fingerprint = _map_fingerprint(program)
    good = _register_version(fingerprint, "good")
    bad = _register_version(fingerprint, "bad")
    router = _install_router({good: OfflineDesigner(model_name="good"),
                              bad: BrokenDesigner(model_name="bad")})
    registry = SiteRegistry(load_config(), MAP_SITE)
    registry.activate(bad, mode="shadow")
    for _ in range(25):
        program.create_next_map(_level(program))
    router.drain()
    assert registry.state().mode == "shadow"  # the gate refused it
    assert not router.maybe_promote(MAP_SITE, bad)

    registry.activate(good, mode="student")
    registry.activate(bad, mode="student")  # someone forces the bad one live
    for _ in range(30):
        level = _level(program)
        assert len(program.create_next_map(level).enemies) == level.num_enemies
    router.drain()
    state = registry.state()
    assert state.active == good and state.mode == "student"
    store = Store(load_config().database_url)
    (event,) = site_events(store, MAP_SITE, kinds=("rolled_back",))
    assert event.version == bad and event.details["to"] == good


def test_changed_contract_routes_to_teacher(program: Any) -> None:
    version = _register_version("fingerprint-of-an-older-contract")
    _install_router({version: BrokenDesigner(model_name="stale")})
    SiteRegistry(load_config(), MAP_SITE).activate(version, mode="student")
    program.create_next_map(_level(program))
    byllm_distill.flush()
    store = Store(load_config().database_url)
    assert store.count(RecordFilter(site=MAP_SITE, source="student")) == 0


def test_corrupt_artifact_is_refused_and_rolled_back(program: Any) -> None:
    version = _register_version(_map_fingerprint(program))
    _install_router({version: OfflineDesigner(model_name="never-loaded")})
    registry = SiteRegistry(load_config(), MAP_SITE)
    registry.activate(version, mode="student")
    (registry.versions_dir / str(version) / "model.gguf").write_text("corrupted!")
    level = _level(program)
    assert len(program.create_next_map(level).enemies) == level.num_enemies
    assert registry.state().mode == "teacher" and registry.state().active is None
    byllm_distill.flush()
    store = Store(load_config().database_url)
    assert store.count(RecordFilter(site=MAP_SITE, source="student")) == 0
    (event,) = site_events(store, MAP_SITE, kinds=("rolled_back",))
    assert "does not match its manifest" in event.details["reasons"][0]


def test_pins(program: Any) -> None:
    version = _register_version(_map_fingerprint(program))
    # No sampled teacher checks (5% by default): they would add teacher records.
    _install_router({version: OfflineDesigner(model_name="pinned-student")}, check_fraction=0.0)
    registry = SiteRegistry(load_config(), MAP_SITE)
    registry.update(pinned=str(version))
    program.create_next_map(_level(program))
    registry.update(pinned="teacher", active=version, mode="student")
    program.create_next_map(_level(program))
    byllm_distill.flush()
    store = Store(load_config().database_url)
    assert [r.source for r in store.iter_records(RecordFilter(site=MAP_SITE))] == [
        "teacher", "student", "teacher"]


def test_partial_version_never_appears(tmp_path: Path) -> None:
    registry = SiteRegistry.at(tmp_path, "m.f")
    with pytest.raises(KeyboardInterrupt), registry.new_version() as (_number, folder):
        (folder / "model.gguf").write_text("half")
        raise KeyboardInterrupt
    assert registry.versions() == [] and not list(registry.versions_dir.glob("*.partial"))


def test_newest_version_or_a_clear_error(tmp_path: Path) -> None:
    from byllm_distill.errors import NotFoundError

    registry = SiteRegistry.at(tmp_path, "m.f")
    with pytest.raises(NotFoundError, match="run `byllm-distill train m.f`"):
        registry.newest()
    for _ in range(2):
        with registry.new_version() as (_number, folder):
            (folder / "manifest.json").write_text("{}")
    assert registry.newest() == 2
