"""The quality gate on stored records (no training): every criterion is measured against the
teacher on the same inputs and decided by a bound, so a valid-but-wrong or valid-but-
degenerate student is refused, and a student that answers like the teacher is promoted."""

from __future__ import annotations

import json
import random
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from student_records import FINGERPRINT, SITE, map_records

from byllm_distill.config import SiteSettings, load_config
from byllm_distill.errors import ConfigError
from byllm_distill.gate import live_check, promotion_gate
from byllm_distill.gate.fidelity import compare, generic_distance
from byllm_distill.rpg.generator import design_map
from byllm_distill.stats import newcombe_diff
from byllm_distill.store import Record, Store
from byllm_distill.validators.base import Verdict

TRIAGE_DIR = Path(__file__).resolve().parent.parent / "examples" / "triage"
sys.path.insert(0, str(TRIAGE_DIR))
from rule_teacher import make_tickets, triage  # noqa: E402

TRIAGE_SITE = "triage.triage"
DEFAULTS = replace(SiteSettings(), min_shadow=0)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'gate.db'}")


def _as(record: Record, output: Any, source: str, version: int | None = 1,
        model: str = "student") -> Record:
    """A record answering `record`'s input with `output` (valid: one passing verdict)."""
    return Record(site=record.site, fingerprint=record.fingerprint, model=model,
                  messages=[], args=record.args, latency_ms=1.0, source=source,
                  schema=record.schema, output_raw=json.dumps(output), output=output,
                  version=version if source != "teacher" else None,
                  verdicts=[Verdict("schema", True, "")])


def _triage_records(n: int, seed: int = 0) -> list[Record]:
    return [Record(site=TRIAGE_SITE, fingerprint="triage-contract", model="rule-teacher",
                   messages=[], args={"ticket": t}, latency_ms=1.0, output=triage(t),
                   output_raw=json.dumps(triage(t)), verdicts=[Verdict("schema", True, "")])
            for t in make_tickets(n, seed)]


def _fill(store: Store, teacher: list[Record], student: list[Any], repeats: list[Any],
          source: str = "eval") -> None:
    store.add_records(teacher)
    store.add_records([_as(t, out, source) for t, out in zip(teacher, student, strict=True)])
    store.add_records([_as(t, out, "teacher", model=t.model)
                       for t, out in zip(teacher, repeats, strict=False)])


def _by_name(result: Any) -> dict[str, Any]:
    return {c.name: c for c in result.criteria}


def test_newcombe_interval_matches_the_published_example() -> None:
    # Newcombe (1998), table II example (56/70 vs 48/80): -0.0524 to 0.3339 (method 10).
    low, high = newcombe_diff(56, 70, 48, 80)
    assert low == pytest.approx(0.0524, abs=1e-3) and high == pytest.approx(0.3339, abs=1e-3)


def test_a_map_student_like_the_teacher_is_promoted(store: Store) -> None:
    teacher = map_records(50, seed=1)
    rng = random.Random(7)
    student = [design_map(t.args["level"], rng) for t in teacher]
    repeats = [design_map(t.args["level"], rng) for t in teacher]
    _fill(store, teacher, student, repeats)
    result = promotion_gate(store, SITE, 1, DEFAULTS, FINGERPRINT)
    assert result.passed, result.reasons
    crits = _by_name(result)
    # The copied `level` field must match; the layout fields the teacher varies are left
    # to fidelity, not held to exact agreement.
    assert crits["agreement:level"].passed is True and crits["agreement:level"].baseline == 1.0
    assert crits["agreement:walls"].passed is None
    assert {"fidelity:json_values", "fidelity:rpg_patterns", "fidelity:rpg_diversity"} <= set(crits)


def test_a_valid_but_degenerate_map_student_is_refused_on_fidelity(store: Store) -> None:
    teacher = map_records(50, seed=1)
    rng = random.Random(7)
    repeats = [design_map(t.args["level"], rng) for t in teacher]
    # Every answer valid, but the same layout whatever the input's seed: no diversity.
    student = [design_map(t.args["level"], random.Random(0)) for t in teacher]
    _fill(store, teacher, student, repeats)
    result = promotion_gate(store, SITE, 1, DEFAULTS, FINGERPRINT)
    crits = _by_name(result)
    assert crits["validity"].passed is True and crits["validity"].value == 1.0
    assert not result.passed
    assert crits["fidelity:rpg_diversity"].passed is False
    assert any(r.startswith("fidelity:") for r in result.reasons)


def test_a_deterministic_site_is_refused_on_the_field_the_student_gets_wrong(store: Store) -> None:
    teacher = _triage_records(80)
    rng = random.Random(3)
    student = [dict(t.output, reply_within_hours=t.output["reply_within_hours"] + 1)
               if rng.random() < 0.2 else t.output for t in teacher]
    _fill(store, teacher, student, [t.output for t in teacher])
    result = promotion_gate(store, TRIAGE_SITE, 1, DEFAULTS, "triage-contract")
    crits = _by_name(result)
    assert crits["validity"].passed is True  # valid but wrong
    wrong = crits["agreement:reply_within_hours"]
    assert wrong.passed is False and wrong.baseline == 1.0 and wrong.bound < wrong.bar
    assert "train longer" in wrong.fix
    assert crits["agreement:team"].passed is True and crits["agreement:severity"].passed is True
    assert not result.passed
    assert result.reasons[0].startswith("agreement:reply_within_hours")


def test_a_correct_deterministic_student_is_promoted_once_the_bound_clears(store: Store) -> None:
    teacher = _triage_records(20)
    _fill(store, teacher, [t.output for t in teacher], [t.output for t in teacher])
    few = promotion_gate(store, TRIAGE_SITE, 1, DEFAULTS, "triage-contract")
    # 20/20 right is not yet enough: the bound of the difference is below -0.1.
    assert not few.passed and _by_name(few)["agreement:team"].passed is False
    assert "bound too wide" in _by_name(few)["agreement:team"].fix
    more = _triage_records(30, seed=1)
    _fill(store, more, [t.output for t in more], [])
    assert promotion_gate(store, TRIAGE_SITE, 1, DEFAULTS, "triage-contract").passed


def test_a_number_the_teacher_jitters_agrees_within_the_teachers_own_spread(
        store: Store) -> None:
    """A count the teacher draws with ±1 jitter (its two answers differ by up to 2) is
    matched within ±2; exact agreement (~0.4 for the teacher itself) could never clear
    the bound. Off by 3 is outside the spread and refused; a derived number stays exact."""
    from byllm_distill.gate.criteria import tolerances

    teacher = _triage_records(80)
    rng = random.Random(5)

    base = {t.id: t.output["reply_within_hours"] * 10 for t in teacher}

    def jittered(t: Record) -> dict[str, Any]:
        return dict(t.output, reply_within_hours=base[t.id] + rng.choice((-1, 0, 0, 1)))

    first = [jittered(t) for t in teacher]
    for t, out in zip(teacher, first, strict=True):
        t.output, t.output_raw = out, json.dumps(out)
    repeats = [jittered(t) for t in teacher]
    good = [jittered(t) for t in teacher]
    _fill(store, teacher, good, repeats)
    pairs = [(t, _as(t, r, "teacher")) for t, r in zip(teacher, repeats, strict=True)]
    assert tolerances(pairs) == {"reply_within_hours": 2, "severity": 0}
    crits = _by_name(promotion_gate(store, TRIAGE_SITE, 1, DEFAULTS, "triage-contract"))
    hours = crits["agreement:reply_within_hours"]
    assert hours.passed is True and "within ±2" in hours.detail and hours.baseline == 1.0

    off = Store(str(store.url).replace("gate.db", "off.db"))
    _fill(off, teacher, [dict(t.output, reply_within_hours=t.output["reply_within_hours"] + 3)
                         for t in teacher], repeats)
    crits = _by_name(promotion_gate(off, TRIAGE_SITE, 1, DEFAULTS, "triage-contract"))
    assert crits["agreement:reply_within_hours"].passed is False
    assert "±" not in crits["agreement:severity"].detail  # derived: exact


def test_without_teacher_repeats_agreement_is_not_measured(store: Store) -> None:
    teacher = _triage_records(60)
    _fill(store, teacher, [t.output for t in teacher], [])
    result = promotion_gate(store, TRIAGE_SITE, 1, DEFAULTS, "triage-contract")
    assert not result.passed
    assert "not measured yet" in _by_name(result)["agreement:team"].detail
    # teacher_repeats = 0 declares the teacher deterministic: every field must match.
    assumed = promotion_gate(store, TRIAGE_SITE, 1, replace(DEFAULTS, teacher_repeats=0),
                             "triage-contract")
    assert assumed.passed and "assumed deterministic" in _by_name(assumed)["agreement:team"].detail


def test_fidelity_of_the_teacher_against_itself_is_near_zero() -> None:
    teacher = [t.output for t in map_records(40, seed=2)]
    rng = random.Random(1)
    same = [design_map(t["level"], rng) for t in teacher]
    result = compare(teacher, same, generic_distance(0.05))
    assert result is not None and abs(result.gap) < 0.05 and result.lower <= result.upper
    flat = [dict(t, walls=[], small_obstacles=[]) for t in teacher]
    assert compare(teacher, flat, generic_distance(0.05)).lower > 0.05


def test_ratings_count_when_there_are_enough(store: Store) -> None:
    teacher = _triage_records(50)
    _fill(store, teacher, [t.output for t in teacher], [t.output for t in teacher])
    assert "ratings:gameplay" not in _by_name(promotion_gate(store, TRIAGE_SITE, 1, DEFAULTS,
                                                             "triage-contract"))
    students = [r for r in store.iter_records() if r.source == "eval"]
    for s, t in zip(students[:6], teacher[:6], strict=True):
        store.add_rating(s.id, "ann", {"gameplay": 2})
        store.add_rating(t.id, "ann", {"gameplay": 5})
    result = promotion_gate(store, TRIAGE_SITE, 1, DEFAULTS, "triage-contract")
    rated = _by_name(result)["ratings:gameplay"]
    assert rated.passed is False and rated.value == 2 and rated.baseline == 5
    assert not result.passed


def test_live_check_rolls_back_only_on_evidence(store: Store) -> None:
    teacher = _triage_records(60)
    store.add_records(teacher)
    store.add_records([_as(t, t.output, "teacher", model=t.model) for t in teacher[:30]])
    served = []
    for i, t in enumerate(teacher[30:]):
        output = t.output if i < 10 else dict(t.output, team="finance")
        record = _as(t, output, "student")
        record.agreement = 1.0 if output == t.output else 0.5  # a teacher check was made
        served.append(record)
    settings = replace(DEFAULTS, rollback_window=20, min_samples=10)
    store.add_records(served[:10])
    assert live_check(store, TRIAGE_SITE, 1, settings, "triage-contract").passed
    store.add_records(served[10:])
    result = live_check(store, TRIAGE_SITE, 1, settings, "triage-contract")
    assert not result.passed
    assert any(r.startswith("agreement:team") for r in result.reasons)


def test_gate_settings_from_jac_toml(tmp_path: Path) -> None:
    (tmp_path / "jac.toml").write_text(
        '[plugins.distill]\nagreement_margin = 0.05\nteacher_repeats = 10\n'
        '[plugins.distill.sites."rpg.*"]\nmargins = {rpg_patterns = 0.08}\n')
    config = load_config(tmp_path, environ={})
    assert config.site("triage.triage").agreement_margin == 0.05
    assert config.site("rpg.create_next_map").margins == {"rpg_patterns": 0.08}
    assert config.site("rpg.create_next_map").teacher_repeats == 10
    (tmp_path / "jac.toml").write_text(
        '[plugins.distill.sites."rpg.*"]\nmargins = {rpg_patterns = "big"}\n')
    with pytest.raises(ConfigError, match="margins.rpg_patterns"):
        load_config(tmp_path, environ={})
    (tmp_path / "jac.toml").write_text("[plugins.distill]\nagreement_margin = 2\n")
    with pytest.raises(ConfigError, match="agreement_margin"):
        load_config(tmp_path, environ={})
