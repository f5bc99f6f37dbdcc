"""The whole loop with real training (short budget), as a user runs it: separate processes.

RPG program + offline teacher → records → `worker --once` trains the map site → a shadow
sample → the gate passes → the next calls are served by the student (`source="student"`),
and a validator that rejects one answer forces a teacher fallback inside that same call.
The shadow run plays one level and exits right after the map call, while the student's
shadow answer is still being generated: the router finishes it before the program ends.

The budget is tiny (12 LoRA steps), so the RPG task validators are switched off for this
project (`disabled_validators = ["rpg"]`) and the gate's bars are opened wide (threshold 0,
margins that any answer clears, no teacher repeats): this test checks the mechanics of the
loop. That the default gate refuses such a student is tested by test_demo.py and
test_gate_training.py; how good a student gets is measured by the benchmarks.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import FIXTURES, run_cli, run_jac

from byllm_distill.config import load_config
from byllm_distill.registry import SiteRegistry
from byllm_distill.rpg.corpus import MAP_SITE, PROGRAM_DIR
from byllm_distill.store import RecordFilter, Store
from byllm_distill.store.events import site_events

pytestmark = pytest.mark.slow

JAC_TOML = """
[project]
name = "e2e"

[plugins.distill]
disabled_validators = ["rpg"]
retrain_after = 20
train_steps = 12
threshold = 0.0
agreement_margin = 1.0
fidelity_margin = 1.0
margins = {rpg_patterns = 100.0, rpg_diversity = 1.0}
teacher_repeats = 0
min_samples = 1
min_shadow = 1
check_fraction = 0.0
exit_wait = 240  # the shadow sample finishes as the program exits (run_jac allows 300 s)
"""


def test_capture_train_shadow_promote_serve_fallback(tmp_path: Path, distill_home: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "jac.toml").write_text(JAC_TOML)
    program = project / "rpg.jac"
    program.write_text((PROGRAM_DIR / "rpg.jac").read_text())
    monkeypatch.chdir(project)
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(FIXTURES),
                                                       os.environ.get("PYTHONPATH")]))}

    corpus = run_cli("rpg", "generate", "--runs", "6", "--levels-per-run", "5", "--seed", "1",
                     env=env)
    assert corpus.returncode == 0, corpus.stderr
    store = Store(load_config().database_url)
    assert store.count(RecordFilter(site=MAP_SITE, source="teacher", valid=True)) == 30

    trained = run_cli("worker", "--once", "--site", MAP_SITE, env=env)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert "trained version 1, now in shadow mode" in trained.stdout
    registry = SiteRegistry(load_config(), MAP_SITE)
    assert registry.state().mode == "shadow" and registry.state().active == 1
    assert store.count(RecordFilter(site=MAP_SITE, source="eval", version=1)) > 0

    shadow_run = run_jac(program, env={**env, "RPG_LEVELS": "1"}, cwd=project)
    assert shadow_run.returncode == 0, shadow_run.stderr
    assert store.count(RecordFilter(site=MAP_SITE, source="shadow", version=1)) == 1, (
        shadow_run.stderr)
    assert registry.state().mode == "student"
    (promoted,) = site_events(store, MAP_SITE, kinds=("promoted",))
    assert promoted.version == 1

    before = {r.id for r in store.iter_records(RecordFilter(site=MAP_SITE))}
    served_run = run_jac(program, env={**env, "RPG_LEVELS": "2",
                                       "BYLLM_DISTILL_VALIDATORS": "reject_first:register"},
                         cwd=project)
    assert served_run.returncode == 0, served_run.stderr
    assert served_run.stdout.count("== ") == 2
    new = [r for r in store.iter_records(RecordFilter(site=MAP_SITE)) if r.id not in before]
    students = [r for r in new if r.source == "student"]
    teachers = [r for r in new if r.source == "teacher"]
    assert len(students) == 2 and all(r.version == 1 for r in students)
    rejected = [r for r in students if r.valid is False]
    assert len(rejected) == 1
    assert {v.name for v in rejected[0].verdicts if not v.passed} == {"test_reject_first"}
    # The rejected call fell back to the teacher inside the same call; the other was served.
    assert len(teachers) == 1 and teachers[0].created_at > rejected[0].created_at
    served = students[1]
    assert served.valid is True and {"level", "walls", "small_obstacles", "enemies",
                                     "player_pos"} <= set(served.output)
    status = run_cli("status", "--json", env=env)
    site = next(s for s in json.loads(status.stdout)["per_site"] if s["site"] == MAP_SITE)
    assert site["mode"] == "student" and site["active"] == 1
