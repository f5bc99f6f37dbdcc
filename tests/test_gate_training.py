"""The default gate on the RPG map site, with real training (slow: ~10 minutes).

One corpus from the offline teacher; a student trained for ONE step and one trained with
the default budget, each evaluated on the held-out inputs, put in shadow mode and played
against (the router scores its answers and asks the teacher a second time on shadow
inputs), then judged by the default gate. Both students answer valid maps (the per-call
grammar and guided decoding see to that); only the trained one's maps look like the
teacher's. The 1-step student must be refused with a reason naming a fidelity criterion;
the default-budget student must be promoted.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import byllm_distill
from byllm_distill import capture, router
from byllm_distill.config import load_config
from byllm_distill.lifecycle import evaluate_heldout, promote_if_ready
from byllm_distill.registry import SiteRegistry
from byllm_distill.rpg.corpus import MAP_SITE, generate_corpus, load_program, play_runs
from byllm_distill.store import RecordFilter, Store
from byllm_distill.store.events import site_events

pytestmark = pytest.mark.slow

CORPUS_RUNS = 40  # x 5 levels: 200 map records, as the demo captures
SHADOW_RUNS = 4


def _shadow(program: object, seed: int) -> None:
    play_runs(program, SHADOW_RUNS, 5, seed)
    active = router.get_router(capture.get_capture())
    assert active is not None
    assert active.drain(900) == 0
    byllm_distill.flush(60)


def test_one_step_student_refused_on_fidelity_default_budget_promoted(
        distill_home: Path) -> None:
    from byllm_distill.training.pipeline import train_site
    from byllm_distill.training.trainer import TrainConfig

    generate_corpus(CORPUS_RUNS, 5, seed=0, progress=False)
    config = load_config()
    store = Store(config.database_url)
    registry = SiteRegistry(config.data_dir, MAP_SITE)
    program = load_program()

    one = train_site(MAP_SITE, config=config, store=store, train_config=TrainConfig(steps=1),
                     progress=False)
    held = evaluate_heldout(store, MAP_SITE, registry.verify(one.number))
    assert held is not None and held.passes / held.n >= 0.9  # valid maps, untrained student
    registry.activate(one.number, mode="shadow")
    _shadow(program, seed=500)
    result = promote_if_ready(store, config, MAP_SITE)
    assert result is not None and not result.passed
    assert registry.state().mode == "shadow"
    failing = [c.name for c in result.failing()]
    assert any(name.startswith("fidelity:rpg_") for name in failing), result.reasons
    assert any(r.startswith("fidelity:") for r in result.reasons)
    assert store.count(RecordFilter(site=MAP_SITE, source="shadow", version=one.number)) > 0

    default = train_site(MAP_SITE, config=config, store=store, progress=False)
    evaluate_heldout(store, MAP_SITE, registry.verify(default.number))
    registry.activate(default.number, mode="shadow")
    _shadow(program, seed=600)
    promote_if_ready(store, config, MAP_SITE)  # None if the router promoted it already
    state = registry.state()
    events = site_events(store, MAP_SITE, kinds=("promoted", "gate_refused"))
    assert state.mode == "student" and state.active == default.number, [
        (e.kind, e.version, e.details.get("reasons")) for e in events]
    (promoted,) = [e for e in events if e.kind == "promoted"]
    assert promoted.version == default.number
    passed = {c["name"] for c in promoted.details["criteria"] if c["passed"]}
    assert {"validity", "fidelity:rpg_patterns", "fidelity:rpg_diversity"} <= passed
