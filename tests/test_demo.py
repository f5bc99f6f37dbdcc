"""`byllm-distill demo`, the README's first command, on a tiny budget (slow: minutes).

A 4-step student cannot pass the 0.9 gate, so this also covers the demo's honest path: the
gate refuses, the version is pinned for the serving step only, invalid answers fall back
to the teacher, and the pin is removed afterwards.
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
    result = run_cli("demo", "--home", str(home), "--runs", "6", "--steps", "4",
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
    kinds = [e.kind for e in site_events(store, MAP_SITE)]
    assert "trained" in kinds and ("gate_refused" in kinds or "promoted" in kinds)
    if "gate_refused" in kinds:
        assert "pinned for this step" in out or "pins" in out
        assert kinds.count("pinned") == kinds.count("unpinned") == 1
    again = run_cli("demo", "--home", str(tmp_path), timeout=60)
    assert again.returncode != 0 and "not a demo folder" in again.stdout + again.stderr
