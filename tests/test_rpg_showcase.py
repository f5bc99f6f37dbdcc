"""The RPG showcase end to end: offline corpus, validators stored, hosted-teacher path."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import run_jac
from openai_server import OpenAIServer

from byllm_distill.cli import main
from byllm_distill.config import load_config
from byllm_distill.rpg.corpus import LEVEL_SITE, MAP_SITE, PROGRAM_DIR, generate_corpus
from byllm_distill.store import RecordFilter, Store


@pytest.fixture(scope="module")
def corpus_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One offline corpus (20 runs x 5 levels), shared by the tests that read it."""
    import os

    home = tmp_path_factory.mktemp("corpus") / "home"
    old = os.environ.get("BYLLM_DISTILL_HOME")
    os.environ["BYLLM_DISTILL_HOME"] = str(home)
    from byllm_distill import capture

    capture.reset_capture()
    try:
        summary = generate_corpus(runs=20, levels_per_run=5, seed=7, progress=False)
    finally:
        capture.reset_capture()
        if old is None:
            del os.environ["BYLLM_DISTILL_HOME"]
        else:
            os.environ["BYLLM_DISTILL_HOME"] = old
    (home / "summary.json").write_text(json.dumps(summary.__dict__))
    return home


def _store(home: Path) -> Store:
    return Store(f"sqlite:///{home / 'distill.db'}")


def test_offline_corpus_meets_the_bar(corpus_home: Path) -> None:
    store = _store(corpus_home)
    levels = list(store.iter_records(RecordFilter(site=LEVEL_SITE)))
    maps = list(store.iter_records(RecordFilter(site=MAP_SITE)))
    assert len(levels) == 100 and len(maps) == 100
    assert all(r.model == "offline-designer" and r.source == "teacher" for r in levels + maps)
    records = levels + maps
    assert all(r.verdicts for r in records), "every record carries its verdicts"
    passing = sum(1 for r in records if r.valid)
    assert passing / len(records) >= 0.98
    canonical = {json.dumps(r.output, sort_keys=True) for r in maps}
    assert len(canonical) == len(maps), "no two maps identical"
    summary = json.loads((corpus_home / "summary.json").read_text())
    assert summary["records_per_site"] == {LEVEL_SITE: 100, MAP_SITE: 100}
    assert summary["unique_map_fraction"] == 1.0
    assert summary["mean_pairwise_hamming"] > 0


def test_verdict_names_and_difficulty_rises(corpus_home: Path) -> None:
    store = _store(corpus_home)
    a_map = next(store.iter_records(RecordFilter(site=MAP_SITE)))
    names = {v.name for v in a_map.verdicts}
    assert {"parses", "matches_schema", "in_bounds", "reachable", "enemy_count",
            "no_overlap", "enemy_not_adjacent_to_spawn", "one_player_on_floor"} <= names
    a_level = next(store.iter_records(RecordFilter(site=LEVEL_SITE)))
    assert "difficulty_rises" in {v.name for v in a_level.verdicts}
    # Within the first run, the level difficulties are 1..5 in order.
    first_run = [r.output["difficulty"] for r in store.iter_records(RecordFilter(site=LEVEL_SITE),
                                                                     limit=5)]
    assert first_run == [1, 2, 3, 4, 5]


def test_valid_and_invalid_views_after_breaking_a_map(corpus_home: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    monkeypatch.setenv("BYLLM_DISTILL_HOME", str(corpus_home))
    store = _store(corpus_home)
    valid_before = store.count(RecordFilter(site=MAP_SITE, valid=True))
    # A map whose enemies were all removed fails enemy_count once re-validated.
    victim = next(store.iter_records(RecordFilter(site=MAP_SITE, valid=True)))
    broken = dict(victim.output, enemies=[])
    with store.engine.begin() as conn:
        from byllm_distill.store import tables

        conn.execute(tables.records.update().where(tables.records.c.id == victim.id)
                     .values(output=json.dumps(broken)))
    runner = CliRunner()
    result = runner.invoke(main, ["validate", "--site", MAP_SITE])
    assert result.exit_code == 0 and "Validated 100 records" in result.output
    assert store.count(RecordFilter(site=MAP_SITE, valid=True)) == valid_before - 1
    invalid = runner.invoke(main, ["records", "list", "--site", MAP_SITE, "--invalid-only"])
    assert victim.id in invalid.output
    exported = runner.invoke(main, ["records", "export", "--site", MAP_SITE, "--valid-only"])
    ids = {json.loads(line)["id"] for line in exported.output.splitlines()}
    assert victim.id not in ids and len(ids) == valid_before - 1
    shown = runner.invoke(main, ["rpg", "show", victim.id[:12], "--png",
                                 str(tmp_path / "m.png")])
    assert shown.exit_code == 0, shown.output
    assert "FAILED enemy_count" in shown.output and (tmp_path / "m.png").stat().st_size > 0
    assert shown.output.count("P") >= 1


def test_same_program_with_a_hosted_teacher(distill_home: Path) -> None:
    """`jac run rpg.jac` unchanged, with BYLLM_DISTILL_TEACHER pointing at a local server."""
    from byllm_distill.rpg.generator import design_level, design_map

    rng = random.Random(3)
    state: dict = {"levels": 0, "last": None}

    def answer(body: dict) -> str:
        name = body["response_format"]["json_schema"]["name"]
        if name == "Level":
            state["levels"] += 1
            state["last"] = design_level([], state["levels"], 16, 12, rng)
            return json.dumps(state["last"])
        return json.dumps(design_map(state["last"], rng))

    with OpenAIServer(answer=answer, model="gpt-4o") as server:
        result = run_jac(PROGRAM_DIR / "rpg.jac", env={
            "BYLLM_DISTILL_TEACHER": "openai/gpt-4o", "OPENAI_API_KEY": "sk-dummy-key-0000",
            "OPENAI_BASE_URL": server.base_url, "OPENAI_API_BASE": server.base_url,
            "RPG_LEVELS": "2", "RPG_WIDTH": "16", "RPG_HEIGHT": "12"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("== ") == 2  # two rendered levels
    store = Store(load_config().database_url)
    records = list(store.iter_records())
    assert sorted(r.site for r in records) == [LEVEL_SITE, LEVEL_SITE, MAP_SITE, MAP_SITE]
    assert all(r.model == "gpt-4o" and r.usage["total_tokens"] == 18 for r in records)
    assert all(r.valid for r in records), [v for r in records for v in r.verdicts
                                           if not v.passed]
    blob = b"".join(p.read_bytes() for p in distill_home.glob("distill.db*"))
    assert b"sk-dummy-key-0000" not in blob
