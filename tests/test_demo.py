"""`byllm-distill demo`, the README's first command, on a 1-step budget (slow: minutes).

A student trained for one step answers valid maps (the per-call grammar and guided
decoding see to that) but they do not look like the teacher's: the default gate must
refuse it on fidelity and say so, the site must stay off student mode, and the demo's
honest path runs: the version is pinned for the serving step only, invalid answers fall
back to the teacher, and the pin is removed afterwards.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli

from byllm_distill.registry import SiteRegistry
from byllm_distill.rpg.corpus import MAP_SITE
from byllm_distill.store import RecordFilter, Store
from byllm_distill.store.events import site_events

pytestmark = pytest.mark.slow


def test_demo_runs_the_whole_loop(tmp_path: Path) -> None:
    home = tmp_path / "demo"
    result = run_cli("demo", "--home", str(home), "--runs", "6", "--steps", "1",
                     "--shadow-runs", "1", "--serve-runs", "1", timeout=1200)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for step in ("[1/5] Capture", "[2/5] Train", "[3/5] Shadow", "[4/5] Serve",
                 "[5/5] Before / after"):
        assert step in out, out
    assert "version 1: held-out" in out and "gate over" in out
    assert (home / ".byllm-distill-demo").is_file()
    store = Store(f"sqlite:///{home / 'distill.db'}")
    state = SiteRegistry(home, MAP_SITE).state()
    assert state.pinned is None and state.active == 1
    assert store.count(RecordFilter(site=MAP_SITE, source="shadow")) == 5
    assert store.count(RecordFilter(site=MAP_SITE, source="student")) == 5
    assert state.mode != "student"
    assert f"{MAP_SITE} is now in shadow mode (the teacher keeps answering its calls)" in out
    assert "why: fidelity:" in out, out
    events = site_events(store, MAP_SITE)
    kinds = [e.kind for e in events]
    assert "trained" in kinds and "promoted" not in kinds and "gate_refused" in kinds
    refusal = next(e for e in events if e.kind == "gate_refused")
    failing = {c["name"] for c in refusal.details["criteria"] if c["passed"] is False}
    assert any(name.startswith("fidelity:") for name in failing), refusal.details
    assert "pins version 1 for this step" in out
    assert kinds.count("pinned") == kinds.count("unpinned") == 1
    again = run_cli("demo", "--home", str(tmp_path), timeout=60)
    assert again.returncode != 0 and "not a demo folder" in again.stdout + again.stderr


def test_demo_default_budget_promotes_on_its_own(tmp_path: Path) -> None:
    """The README's first command as is (~10 min here): the default-budget map student is
    promoted by the default gate, every criterion cleared, and then serves the map calls."""
    home = tmp_path / "demo"
    result = run_cli("demo", "--home", str(home), timeout=2400)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    print(out)  # shown with `pytest -rP`: the run the README quotes
    assert f"{MAP_SITE} is now in student mode" in out, out
    assert "why:" not in out and "the demo pins" not in out
    state = SiteRegistry(home, MAP_SITE).state()
    assert state.mode == "student" and state.active == 1 and state.pinned is None
    store = Store(f"sqlite:///{home / 'distill.db'}")
    (promoted,) = site_events(store, MAP_SITE, kinds=("promoted",))
    criteria = {c["name"]: c for c in promoted.details["criteria"]}
    for name in ("validity", "agreement:level", "fidelity:json_values", "fidelity:rpg_patterns",
                 "fidelity:rpg_diversity"):
        assert criteria[name]["passed"] is True, criteria[name]
        assert criteria[name]["bound"] is not None
    # Fields the teacher varies are left to fidelity, decided from its repeated answers.
    assert criteria["agreement:walls"]["passed"] is None
    assert criteria["agreement:walls"]["baseline"] is not None
    # 2 serve runs x 5 levels, each answered by the student first (and any shadow-step
    # calls after the promotion).
    assert store.count(RecordFilter(site=MAP_SITE, source="student")) >= 10
    assert "10 map calls answered by the student" in out or "fell back to the teacher" in out
