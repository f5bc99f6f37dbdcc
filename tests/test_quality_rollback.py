"""Quality, not validity, decides: the triage example (a non-RPG site whose teacher answers
are a function of the inputs) with a stand-in student through the real router.

The stand-in answers like the teacher, so in shadow mode the gate promotes it once the
teacher's repeats and the student's agreement clear their bounds; then it starts answering
valid but wrong, and the sampled teacher checks of served calls roll it back within the
window, with the failing criterion named in the decision log.
"""

from __future__ import annotations

import importlib
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import byllm_distill
from byllm_distill import router as router_mod
from byllm_distill.capture import get_capture
from byllm_distill.config import load_config
from byllm_distill.registry import SiteRegistry, file_manifest
from byllm_distill.store import RecordFilter, Store
from byllm_distill.store.events import site_events

TRIAGE_DIR = Path(__file__).resolve().parent.parent / "examples" / "triage"
SITE = "triage.triage"


@pytest.fixture
def program() -> Any:
    import jaclang  # noqa: F401 - the .jac importer

    if str(TRIAGE_DIR) not in sys.path:
        sys.path.insert(0, str(TRIAGE_DIR))
    return importlib.import_module("triage")


def _stand_in(rule_teacher: Any) -> Any:
    class DriftingStudent(rule_teacher.RuleTeacher):
        """Answers like the teacher until `drift` is set, then routes every ticket to
        `finance`: still a valid Triage, but wrong."""

        drift: bool = False

        def answer(self, mt_run: Any) -> str:
            if not self.drift:
                return super().answer(mt_run)
            from byllm_distill.capture import args_json

            return json.dumps(dict(rule_teacher.triage(args_json(mt_run)["ticket"]),
                                   team="finance"))

    return DriftingStudent(model_name="drifting-student")


def _ticket(program: Any, t: dict[str, Any]) -> Any:
    return program.Ticket(title=t["title"], product=t["product"],
                          customer_tier=t["customer_tier"], hours_open=t["hours_open"])


def test_gate_promotes_then_quality_rollback_names_the_criterion(program: Any) -> None:
    import rule_teacher

    tickets = rule_teacher.make_tickets(200, seed=11)
    program.triage(_ticket(program, tickets[0]))  # learn the contract's fingerprint
    byllm_distill.flush()
    store = Store(load_config().database_url)
    fingerprint = next(store.iter_records(RecordFilter(site=SITE))).fingerprint
    registry = SiteRegistry(load_config(), SITE)
    with registry.new_version() as (number, folder):
        (folder / "model.gguf").write_text("stand-in weights")
        (folder / "manifest.json").write_text(json.dumps(
            {"fingerprint": fingerprint, "files": file_manifest(folder)}))
    registry.activate(number, mode="shadow")

    capture = get_capture()
    config = capture.config
    config = replace(config, defaults=replace(config.defaults, check_fraction=1.0,
                                              min_samples=20, rollback_window=20))
    student = _stand_in(rule_teacher)
    router = router_mod.Router(capture, config, student_loader=lambda site, version: student)
    router_mod._router = router

    calls = iter(tickets[1:])
    for _ in range(80):
        program.triage(_ticket(program, next(calls)))
        router.drain()
        if registry.state().mode == "student":
            break
    assert registry.state().mode == "student", site_events(store, SITE)
    (promoted,) = site_events(store, SITE, kinds=("promoted",))
    names = {c["name"] for c in promoted.details["criteria"]}
    assert {"validity", "agreement:team", "agreement:severity", "fidelity:json_values"} <= names
    assert all(c["passed"] is not False for c in promoted.details["criteria"])
    # The teacher was asked some shadow inputs twice: its self-agreement is measured.
    team = next(c for c in promoted.details["criteria"] if c["name"] == "agreement:team")
    assert team["baseline"] == 1.0 and team["bound"] >= team["bar"]

    for _ in range(5):  # good answers while serving
        t = next(calls)
        assert program.triage(_ticket(program, t)).team == rule_teacher.triage(t)["team"]
    router.drain()
    student.drift = True
    served = 0
    while registry.state().mode == "student" and served < 40:
        t = next(calls)
        answer = program.triage(_ticket(program, t))
        served += 1
        assert answer.team in ("finance", rule_teacher.triage(t)["team"])
        router.drain()
    state = registry.state()
    assert state.mode == "teacher" and state.active is None
    assert served <= config.defaults.rollback_window
    (event,) = site_events(store, SITE, kinds=("rolled_back",))
    assert event.version == number and event.details["to"] == "teacher"
    assert any(r.startswith("agreement:team") for r in event.details["reasons"])
    # Every answer served while drifting passed every validator: validity alone saw nothing.
    drifted = [r for r in store.iter_records(RecordFilter(site=SITE, source="student"))
               if r.output and r.output.get("team") == "finance"]
    assert drifted and all(r.valid for r in drifted)
    # After the rollback the teacher answers again.
    t = next(calls)
    assert program.triage(_ticket(program, t)).team == rule_teacher.triage(t)["team"]
