"""`distill(model)`: capture and routing through the model, for Jac without plugins.

Newer Jac releases load no third-party plugins; `by llm()` still calls
`model.invoke(mt_run=...)` on the model it is given. Here the same Jac program runs three
ways: plain model with the hook (jaclang 0.16.7's zero-code path), wrapped model with the
hook disabled (`JAC_DISABLED_PLUGINS`, as on a plugin-less Jac), and wrapped with the hook
active: same site keys, same outputs, one record per call each time. Routing through the
wrapper (shadow, student, fallback) runs in this process with the hook unregistered.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, run_cli, run_jac, stand_in_version
from test_capture_jac import EXPECTED_STDOUT_LINES, program_lines

import byllm_distill
from byllm_distill import router as router_mod
from byllm_distill.attach import DistilledModel, attachment, distill, unwrap
from byllm_distill.capture import get_capture
from byllm_distill.config import load_config
from byllm_distill.registry import SiteRegistry
from byllm_distill.rpg.corpus import MAP_SITE, load_program
from byllm_distill.rpg.teacher import OfflineDesigner
from byllm_distill.store import RecordFilter, Store

NO_HOOK = {"JAC_DISABLED_PLUGINS": "byllm_distill"}


def _wrapped_program(folder: Path) -> Path:
    """capture_prog.jac with both of its models wrapped (same file name: same site keys)."""
    text = (FIXTURES / "capture_prog.jac").read_text()
    text = text.replace("import asyncio;", "import asyncio;\nimport from byllm_distill "
                                           "{ distill }", 1)
    text = text.replace("glob llm = Model(", "glob llm = distill(Model(", 1)
    text = text.replace(')]}\n);', ')]}\n));', 1)
    text = text.replace('glob allm = MockLLM(model_name="mockllm", config={"outputs": '
                        '["Dragons hoard gold."]});',
                        'glob allm = distill(MockLLM(model_name="mockllm", config={"outputs": '
                        '["Dragons hoard gold."]}));', 1)
    assert text.count("= distill(") == 2, text
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "capture_prog.jac"
    path.write_text(text)
    return path


def _records(home: Path) -> list[Any]:
    return list(Store(f"sqlite:///{home / 'distill.db'}").iter_records())


def _run(program: Path, home: Path, env: dict[str, str] | None = None) -> list[Any]:
    result = run_jac(program, env={"BYLLM_DISTILL_HOME": str(home), **(env or {})})
    assert result.returncode == 0, result.stderr[-3000:]
    assert program_lines(result.stdout) == EXPECTED_STDOUT_LINES
    return _records(home)


def _shape(records: list[Any]) -> dict[str, tuple]:
    return {r.site: (r.fingerprint, json.dumps(r.args, sort_keys=True),
                     json.dumps(r.output, sort_keys=True), r.model, r.source, r.status)
            for r in records}


def test_wrapped_model_captures_like_the_hook_with_and_without_it(tmp_path: Path,
                                                                  distill_home: Path) -> None:
    hook = _run(FIXTURES / "capture_prog.jac", tmp_path / "hook")
    wrapped = _wrapped_program(tmp_path / "wrapped")
    no_hook = _run(wrapped, tmp_path / "no-hook", NO_HOOK)
    both = _run(wrapped, tmp_path / "both")
    assert len(hook) == len(no_hook) == len(both) == 3  # each call recorded once
    assert _shape(no_hook) == _shape(hook) == _shape(both)
    assert set(_shape(hook)) == {"capture_prog.greet", "capture_prog.Village.make_npc",
                                 "capture_prog.tell"}

    # Neither attached (the plain model with the hook disabled): nothing is captured.
    plain = run_jac(FIXTURES / "capture_prog.jac",
                    env={"BYLLM_DISTILL_HOME": str(tmp_path / "nothing"), **NO_HOOK})
    assert plain.returncode == 0, plain.stderr[-3000:]
    db = tmp_path / "nothing" / "distill.db"
    assert not db.exists() or _records(tmp_path / "nothing") == []


def test_status_says_how_capture_attaches(distill_home: Path) -> None:
    status = run_cli("status", "--json")
    assert status.returncode == 0, status.stderr
    attached = json.loads(status.stdout)["attached"]
    assert attached["hook"] is True and attached["fix"] is None
    off = run_cli("status", env=NO_HOOK)
    assert off.returncode == 0, off.stderr
    assert "does not call byllm-distill's plugin hook" in off.stdout
    assert "distill(Model(" in off.stdout


def test_distill_delegates_everything_else_and_wraps_once() -> None:
    teacher = OfflineDesigner(model_name="the-teacher")
    model = distill(teacher)
    assert isinstance(model, DistilledModel) and distill(model) is model
    assert model.model_name == "the-teacher" and unwrap(model) is teacher
    assert model.call_params == teacher.call_params
    assert "distill(" in repr(model)
    with pytest.raises(TypeError, match="needs a byLLM model"):
        distill(object())
    assert attachment()["wrapper"] is True


@pytest.fixture
def without_hook() -> Any:
    """This process as on a Jac without plugins: byllm-distill's hook unregistered."""
    import jaclang  # noqa: F401
    from jaclang.jac0core.runtime import plugin_manager

    from byllm_distill.plugin import DistillPlugin, register

    plugin_manager.unregister(DistillPlugin)
    assert attachment()["hook"] is False
    try:
        yield
    finally:
        register()


def _install_router(students: dict[int, Any]) -> None:
    capture = get_capture()
    router_mod._router = router_mod.Router(
        capture, capture.config, student_loader=lambda site, version: students[version.number])


class BrokenDesigner(OfflineDesigner):
    def answer(self, mt_run: Any) -> str:
        data = json.loads(super().answer(mt_run))
        data["enemies"] = []
        return json.dumps(data)


def test_wrapped_program_routes_without_the_hook(distill_home: Path, without_hook: Any) -> None:
    program = load_program()
    assert isinstance(program.llm, DistilledModel)  # the RPG program wraps its teacher
    store = Store(load_config().database_url)
    level = program.create_next_level([], 2, 16, 12)
    program.create_next_map(level)
    byllm_distill.flush()
    (first,) = store.iter_records(RecordFilter(site=MAP_SITE))
    assert first.source == "teacher"  # captured through the wrapper alone
    version = stand_in_version(MAP_SITE, first.fingerprint)
    registry = SiteRegistry(load_config(), MAP_SITE)

    _install_router({version: OfflineDesigner(model_name="stand-in-student")})
    registry.activate(version, mode="shadow")
    program.create_next_map(level)
    byllm_distill.flush()
    assert store.count(RecordFilter(site=MAP_SITE, source="shadow")) == 1

    registry.activate(version, mode="student")
    answer = program.create_next_map(level)
    byllm_distill.flush()
    (served,) = store.iter_records(RecordFilter(site=MAP_SITE, source="student"))
    assert served.model == "stand-in-student" and served.valid is True
    assert len(answer.enemies) == level.num_enemies

    _install_router({version: BrokenDesigner(model_name="broken-student")})
    answer = program.create_next_map(level)  # rejected: the teacher answers in the call
    byllm_distill.flush()
    assert len(answer.enemies) == level.num_enemies
    rejected = [r for r in store.iter_records(RecordFilter(site=MAP_SITE, source="student"))
                if r.model == "broken-student"]
    assert len(rejected) == 1 and rejected[0].valid is False
