"""`byllm-distill demo`, the README's first command (slow: minutes).

On a 1-step budget, the students of both RPG sites answer valid maps and levels (the
per-call grammar and guided decoding see to that) but not the teacher's: the default gate
must refuse each, on fidelity for maps, and say so; both sites stay off student mode, and
the demo's honest path runs: each version is pinned for the serving step only, invalid
answers fall back to the teacher, and the pins are removed afterwards. On the default
budget, the gate promotes both sites on its own.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli

from byllm_distill.registry import SiteRegistry
from byllm_distill.rpg.corpus import LEVEL_SITE, MAP_SITE
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
    assert "create_next_map version 1: held-out" in out and "gate over" in out
    assert "create_next_level version 1: held-out" in out
    assert (home / ".byllm-distill-demo").is_file()
    store = Store(f"sqlite:///{home / 'distill.db'}")
    for site in (LEVEL_SITE, MAP_SITE):
        state = SiteRegistry.at(home, site).state()
        assert state.pinned is None and state.active == 1
        assert store.count(RecordFilter(site=site, source="shadow")) == 5
        assert store.count(RecordFilter(site=site, source="student")) == 5
        assert state.mode != "student"
        assert f"{site} is now in shadow mode (the teacher keeps answering its calls)" in out
        assert f"pins version 1 for this step (`byllm-distill pin {site} 1`)" in out
        events = site_events(store, site)
        kinds = [e.kind for e in events]
        assert "trained" in kinds and "promoted" not in kinds and "gate_refused" in kinds
        assert kinds.count("pinned") == kinds.count("unpinned") == 1
    assert "why: fidelity:" in out, out
    refusal = next(e for e in site_events(store, MAP_SITE) if e.kind == "gate_refused")
    failing = {c["name"] for c in refusal.details["criteria"] if c["passed"] is False}
    assert any(name.startswith("fidelity:") for name in failing), refusal.details
    for site in (LEVEL_SITE, MAP_SITE):  # a before/after table per site
        assert f"      {site}" in out.split("[5/5]")[1], out
    again = run_cli("demo", "--home", str(tmp_path), timeout=60)
    assert again.returncode != 0 and "not a demo folder" in again.stdout + again.stderr


def test_demo_default_budget_promotes_both_sites_by_the_gate(tmp_path: Path) -> None:
    """The README's first command as is (~19 min here): both sites are trained with the
    default budget, judged by the default gate, promoted by it (no pin, no manual step)
    and then serve the serving step from their students."""
    home = tmp_path / "demo"
    result = run_cli("demo", "--home", str(home), timeout=3000)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    print(out)  # shown with `pytest -rP`: the run the README quotes
    store = Store(f"sqlite:///{home / 'distill.db'}")
    assert f"{MAP_SITE} is now in student mode" in out, out
    state = SiteRegistry.at(home, MAP_SITE).state()
    assert state.mode == "student" and state.active == 1 and state.pinned is None
    (promoted,) = site_events(store, MAP_SITE, kinds=("promoted",))
    assert not promoted.details.get("manual")
    criteria = {c["name"]: c for c in promoted.details["criteria"]}
    for name in ("validity", "agreement:level", "fidelity:json_values", "fidelity:rpg_patterns",
                 "fidelity:rpg_diversity"):
        assert criteria[name]["passed"] is True, criteria[name]
        assert criteria[name]["bound"] is not None
    # Fields the teacher varies are left to fidelity, decided from its repeated answers.
    assert criteria["agreement:walls"]["passed"] is None
    assert criteria["agreement:walls"]["baseline"] is not None

    level = SiteRegistry.at(home, LEVEL_SITE).state()
    assert f"{LEVEL_SITE} is now in student mode" in out, out
    assert level.mode == "student" and level.active == 1 and level.pinned is None
    (decided,) = site_events(store, LEVEL_SITE, kinds=("promoted",))
    assert not decided.details.get("manual")
    criteria = {c["name"]: c for c in decided.details["criteria"]}
    # The derived numbers are judged by exact agreement with the teacher, with bounds.
    for name in ("validity", "agreement:width", "agreement:difficulty",
                 "agreement:time_countdown", "agreement:n_retries_allowed"):
        assert criteria[name]["passed"] is True and criteria[name]["bound"] is not None, \
            criteria[name]
    assert criteria["agreement:name"]["passed"] is None  # the teacher names levels freely
    assert "pin " not in out.split("[4/5]")[1], out  # nothing pinned for the serving step
    for site in (LEVEL_SITE, MAP_SITE):  # 2 serve runs x 5 levels, each site by its student
        assert store.count(RecordFilter(site=site, source="student")) >= 10
        assert f"      {site}" in out.split("[5/5]")[1]
