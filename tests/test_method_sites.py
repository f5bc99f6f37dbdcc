"""Method sites whose object state grows, end to end with real training (slow: minutes).

tests/fixtures/quest_log is a Jac program of its own: two `by llm()` methods on `QuestLog`,
whose `done` and `notes` lists grow with every call (by call 40 the teacher is sent ~1,500
prompt tokens per call). Its records → `worker --once` trains both due sites → the program
runs unchanged in shadow mode (its output is the teacher's) and then in student mode (its
own code indexes and adds up the answers, and does not fail) → `status` reports each
site's prompt tokens per call, teacher vs student.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from conftest import ROOT, jac_project, run_cli, run_jac

from byllm_distill.config import load_config
from byllm_distill.registry import SiteRegistry
from byllm_distill.store import RecordFilter, Store

pytestmark = pytest.mark.slow

PROGRAM = ROOT / "tests" / "fixtures" / "quest_log"
SITES = ("quest_log.QuestLog.next_quest", "quest_log.QuestLog.reward_for")
JAC_TOML = """
[project]
name = "quest_log"

[plugins.distill]
retrain_after = 30
exit_wait = 600
"""
LINE = re.compile(r"^.* (FETCH|SLAY|ESCORT) L-?\d+ -> -?\d+ gold, .*$")  # any title, any item
sys.path.insert(0, str(PROGRAM))
from quest_teacher import KINDS, REGIONS, next_quest, reward_for  # noqa: E402


def _teacher_lines(n: int, start: int) -> list[str]:
    """What the program prints with the teacher answering (a fresh QuestLog)."""
    state: dict = {"done": []}
    gold, out = 0, []
    for i in range(start, start + n):
        region = REGIONS[i % len(REGIONS)]
        quest = next_quest(state, region, 1 + i % 7)
        reward = reward_for(quest)
        state["done"].append(quest)
        gold += reward["gold"]
        out.append(f"{quest['title']} {KINDS[quest['kind'] - 1]} L{quest['target_level']} -> "
                   f"{reward['gold']} gold, {reward['item']}")
    return [*out, f"total {gold} gold over {n} quests"]


def _play(project: Path, n: int, start: int) -> list[str]:
    result = run_jac(project / "quest_log.jac", cwd=project, timeout=900,
                     env={"QUESTS_N": str(n), "QUESTS_START": str(start)})
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.splitlines()


def test_growing_object_state_trains_serves_and_reports_tokens(
        tmp_path: Path, distill_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = jac_project(tmp_path / "project", JAC_TOML, PROGRAM, "quest_log.jac",
                          "quest_teacher.py")
    monkeypatch.chdir(project)
    config = load_config()
    store = Store(config.database_url)

    assert _play(project, 40, 0) == _teacher_lines(40, 0)
    longest = max(len(json.dumps(r.args)) for r in store.iter_records(
        RecordFilter(site=SITES[0])))
    assert longest > 6000  # the object state grew with every call

    worker = run_cli("worker", "--once", timeout=1800)
    assert worker.returncode == 0, worker.stderr[-3000:]
    for site in SITES:
        assert f"{site}: trained version 1" in worker.stdout, worker.stdout
        version = SiteRegistry(config, site, store).version(1)
        dataset = version.manifest["dataset"]
        assert dataset["counts"]["train"] >= 25 and dataset["counts"]["over_budget"] == 0
        train_text = (version.path / "dataset" / "train.jsonl").read_text()
        assert "the inn was full" not in train_text  # the diary (self/notes) is not read
        chosen = dataset["inputs"]["chosen"]  # decided from the records, and recorded
        assert any(c["by"] == "records" and c["choice"] != "whole" for c in chosen.values())

    assert _play(project, 10, 40) == _teacher_lines(10, 40)  # shadow: the teacher's output
    for site in SITES:
        assert store.count(RecordFilter(site=site, source="shadow")) >= 10

    for site in SITES:
        promoted = run_cli("promote", site)
        assert promoted.returncode == 0 and "student mode" in promoted.stdout, promoted.stderr
    lines = _play(project, 10, 50)  # student mode: the program's own code consumes them
    assert len(lines) == 11 and all(LINE.match(line) for line in lines[:10]), lines
    assert re.match(r"^total -?\d+ gold over 10 quests$", lines[10])
    for site in SITES:
        served = store.count(RecordFilter(site=site, source="student", status="ok"))
        assert served >= 1, site

    status = run_cli("status", "--json")
    assert status.returncode == 0, status.stderr
    per_site = {s["site"]: s for s in json.loads(status.stdout)["per_site"]}
    text = run_cli("status").stdout
    for site in SITES:
        tokens = per_site[site]["prompt_tokens"]
        assert tokens["version"] == 1 and tokens["teacher"] > 10 * tokens["student"], tokens
        assert "prompt tokens per call: teacher" in text.split(site, 1)[1]
