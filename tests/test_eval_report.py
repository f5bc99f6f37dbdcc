"""Evaluation: metrics, the teacher-vs-student report, and `byllm-distill eval`."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from eval_fixtures import (
    MAP_SITE,
    easier_level_student,
    echo_student,
    level_records,
    map_records,
    procedural_student,
)
from PIL import Image

from byllm_distill.cli import main
from byllm_distill.config import load_config
from byllm_distill.evaluation import (
    EvalData,
    MetricRegistry,
    TaskMetric,
    answer_with_student,
    build_report,
    compute_metrics,
    pair_records,
)
from byllm_distill.evaluation.metrics import teacher_cost
from byllm_distill.evaluation.run import evaluate_site
from byllm_distill.registry import SiteRegistry, Version, file_manifest
from byllm_distill.rpg.report_metrics import memorisation, pattern_distance
from byllm_distill.serialize import dumps_canonical
from byllm_distill.stats import krippendorff_alpha, mean_ci, percentile
from byllm_distill.store import Record, RecordFilter, Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'eval.db'}")


def _degraded_run(store: Store) -> tuple[list[Record], list[Record], list[Record]]:
    """Teacher eval set, a degraded student's stored answers (one copying a training map),
    and the training records."""
    training = map_records(30, seed=1)
    teacher = map_records(10, seed=2)
    store.add_records(training + teacher)
    copied = training[0].output
    copies = {json.dumps(teacher[0].args, sort_keys=True): copied}
    student = answer_with_student(teacher, procedural_student(5, drop_enemies=True, copies=copies),
                                  model="tiny-student", store=store, version=1)
    return teacher, student, training


def test_report_holds_every_metric_and_plot(store: Store, tmp_path: Path) -> None:
    teacher, student, training = _degraded_run(store)
    assert {r.source for r in student} == {"eval"}
    assert len(list(store.iter_records(RecordFilter(source="eval")))) == 10
    # Two raters score the same three teacher and three student maps; one preference each.
    for rater, bump in (("ann", 0), ("bob", 1)):
        for i in range(3):
            store.add_rating(teacher[i].id, rater, {"gameplay": 4 + bump % 2, "structure": 5,
                                                    "adherence": 4}, "ok")
            store.add_rating(student[i].id, rater, {"gameplay": 2 + bump, "structure": 3,
                                                    "adherence": 1 + bump})
        store.add_preference(rater, teacher[0].id, student[0].id, "left")
    store.add_preference("cy", student[1].id, teacher[1].id, "tie")

    html = build_report(teacher, student, training, tmp_path / "report", title="RPG maps",
                        store=store)
    out = html.parent
    report = json.loads((out / "report.json").read_text())
    m = report["metrics"]
    assert m["pairs"] == 10 and m["training_records"] == 30

    validity = m["validity"]
    assert validity["teacher"]["all_pass"] == 1.0
    assert validity["student"]["per_validator"]["enemy_count"] < 1.0
    assert validity["student"]["per_validator"]["reachable"] == 1.0
    assert m["agreement"]["exact_match"] == 0.0
    assert set(m["agreement"]["fields"]) == {"level", "walls", "small_obstacles", "enemies",
                                             "player_pos"}
    assert m["agreement"]["fields"]["enemies"] < 0.2
    assert 0 < m["agreement"]["leaf_mean"] < 1
    assert m["latency"]["teacher"]["p50_ms"] > 500 > m["latency"]["student"]["p95_ms"]
    assert m["cost"]["teacher"]["usd_per_1k_calls"] == pytest.approx(2.0)
    assert m["cost"]["student"]["usd_per_1k_calls"] == 0.0
    assert m["cost"]["student"]["cpu_s_per_1k_calls"] > 0

    rpg = m["task"]["rpg_map"]
    adherence = rpg["adherence"]
    assert adherence["teacher"]["enemy_count_adherence"] == 1.0
    assert adherence["student"]["enemy_count_adherence"] < adherence["teacher"][
        "enemy_count_adherence"]
    assert adherence["student"]["enemy_count_mae"] > 0
    assert adherence["student"]["reachability_rate"] == 1.0
    assert adherence["teacher"]["wall_count_adherence"] == 1.0
    assert rpg["patterns"]["kl_teacher_student"] > 0.01
    assert rpg["patterns"]["kl_student_teacher"] > 0.01
    assert rpg["diversity"]["teacher"]["unique_fraction"] == 1.0
    assert rpg["diversity"]["student"]["mean_pairwise_hamming"] > 0
    assert rpg["memorisation"]["student"]["exact_copies"] == 1
    assert rpg["memorisation"]["student"]["min_nearest_distance"] == 0
    assert rpg["memorisation"]["teacher"]["exact_copies"] == 0

    ratings = report["ratings"]
    assert ratings["ratings"] == 12 and ratings["raters"] == ["ann", "bob", "cy"]
    teacher_label, student_label = "teacher (offline-designer)", "student (tiny-student, v1)"
    assert set(ratings["by_source"]) == {teacher_label, student_label}
    gameplay = ratings["by_source"][student_label]["gameplay"]
    assert gameplay["n"] == 6 and gameplay["mean"] == pytest.approx(2.5)
    low, high = gameplay["ci95"]
    assert low < 2.5 < high
    (pref,) = ratings["preferences"]
    assert (pref["a"], pref["b"]) == (teacher_label, student_label)
    assert (pref["a_wins"], pref["b_wins"], pref["ties"]) == (2, 0, 1)
    assert pref["a_win_rate"] == pytest.approx(2.5 / 3)
    assert pref["ci95"][0] < 2.5 / 3 < pref["ci95"][1]
    agreement = ratings["agreement"]
    assert agreement["items_rated_by_2plus"] == 6
    assert agreement["alpha"]["structure"] == pytest.approx(1.0)
    assert agreement["alpha"]["gameplay"] < 1.0

    names = {Path(p).name for p in report["plots"]}
    assert {"validity.png", "latency.png", "rpg_patterns.png", "rpg_adherence.png",
            "rpg_memorisation.png", "rpg_diversity.png", "ratings.png"} <= names
    images = [out / p for p in report["plots"]]
    images += [out / s[side]["image"] for s in report["samples"] for side in ("teacher",
                                                                               "student")]
    assert len(report["samples"]) == 4
    for path in images:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 50
    page = html.read_text()
    assert page.count("data:image/png;base64,") == len(images)
    assert 'src="plots/' not in page  # self-contained: nothing to load beside it
    assert "enemy_count_adherence" in page and "Manual ratings" in page


def test_identical_answers_agree_fully_with_zero_divergence() -> None:
    teacher = map_records(8, seed=3)
    student = answer_with_student(teacher, echo_student(teacher), model="echo")
    m = compute_metrics(EvalData(MAP_SITE, pair_records(teacher, student), teacher))
    assert m["agreement"]["exact_match"] == 1.0 and m["agreement"]["leaf_mean"] == 1.0
    assert all(r.agreement == 1.0 for r in student)
    assert m["validity"]["student"] == m["validity"]["teacher"]
    patterns = m["task"]["rpg_map"]["patterns"]
    assert patterns["kl_teacher_student"] == pytest.approx(0.0, abs=1e-12)
    assert patterns["kl_student_teacher"] == pytest.approx(0.0, abs=1e-12)
    # The training set is the eval set here: every map is its own nearest copy.
    assert m["task"]["rpg_map"]["memorisation"]["student"]["exact_copies"] == 8


def test_pattern_divergence_and_memorisation_units() -> None:
    a = [r.output for r in map_records(6, seed=4)]
    b = [r.output for r in map_records(6, seed=5)]
    assert pattern_distance(a, a)["kl_teacher_student"] == 0.0
    empty_rooms = [{**m, "walls": [], "small_obstacles": []} for m in a]
    far = pattern_distance(a, empty_rooms)
    near = pattern_distance(a, b)
    assert far["kl_teacher_student"] > near["kl_teacher_student"] > 0
    assert math.isfinite(far["kl_student_teacher"])
    mem = memorisation([b[0], a[2], "not a map"], a)
    assert mem["n"] == 3 and mem["compared"] == 2 and mem["exact_copies"] == 1
    assert mem["distances"][0] > 0


def test_level_progression_drops_for_a_student_that_gets_easier() -> None:
    teacher = level_records(6, seed=6)
    student = answer_with_student(teacher, easier_level_student, model="lazy")
    m = compute_metrics(EvalData("rpg.create_next_level", pair_records(teacher, student)))
    levels = m["task"]["rpg_level"]
    assert levels["teacher"]["difficulty_progression"] == {"sequences": 6, "rate": 1.0}
    assert levels["student"]["difficulty_progression"]["rate"] == 0.0
    assert levels["teacher"]["difficulty_match_rate"] == 1.0
    assert levels["student"]["difficulty_match_rate"] == 0.0
    assert m["validity"]["student"]["per_validator"]["difficulty_rises"] == 0.0


def test_student_failures_are_recorded_not_raised() -> None:
    teacher = map_records(2, seed=7)

    def broken(args: dict) -> tuple[str, float]:
        if args == teacher[0].args:
            raise RuntimeError("grammar exhausted")
        return "{not json", 5.0

    first, second = answer_with_student(teacher, broken, model="broken")
    assert first.status == "error" and "grammar exhausted" in first.error
    assert second.status == "error" and second.output_raw == "{not json"
    m = compute_metrics(EvalData(MAP_SITE, pair_records(teacher, [first, second])))
    assert m["validity"]["student"]["all_pass"] == 0.0
    assert m["task"]["rpg_map"]["adherence"]["student"]["reachability_rate"] == 0.0


def test_teacher_cost_uses_litellm_prices_when_missing() -> None:
    record = map_records(1, seed=8)[0]
    record.cost, record.model = None, "gpt-4o"
    record.usage = {"prompt_tokens": 1000, "completion_tokens": 500}
    unknown = map_records(1, seed=9)[0]
    unknown.cost, unknown.model, unknown.usage = None, "no-such-model", {"prompt_tokens": 9,
                                                                          "completion_tokens": 9}
    cost = teacher_cost([record, unknown])
    assert cost["priced_from_litellm"] == 1 and cost["unpriced_calls"] == 1
    assert cost["usd_per_1k_calls"] == pytest.approx(1000 * (1000 * 2.5e-6 + 500 * 1e-5))


def test_statistics() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5 and percentile([], 50) is None
    ci = mean_ci([1, 2, 3])  # mean 2, sd 1, t(2) = 4.303
    assert ci["mean"] == 2 and ci["ci95"] == pytest.approx([2 - 4.303 / 3**0.5,
                                                            2 + 4.303 / 3**0.5])
    assert krippendorff_alpha({"a": [3, 3], "b": [1, 1]}) == pytest.approx(1.0)
    assert krippendorff_alpha({"a": [1]}) is None
    # Krippendorff (2011) interval example gives 0.849 on this reliability data.
    units = {"1": [1, 1, 1], "2": [2, 2, 3, 2], "3": [3, 3, 3, 3], "4": [3, 3, 3, 3],
             "5": [2, 2, 2, 2], "6": [1, 2, 3, 4], "7": [4, 4, 4, 4], "8": [1, 1, 2, 1],
             "9": [2, 2, 2, 2], "10": [5, 5, 5], "11": [1, 1], "12": [3]}
    assert krippendorff_alpha(units) == pytest.approx(0.849, abs=0.001)


def test_task_metrics_register_by_glob_and_a_broken_one_is_reported() -> None:
    registry = MetricRegistry()
    registry._loaded = True  # this registry holds only what the test registers

    def count(data: EvalData) -> dict:
        return {"pairs": len(data.pairs)}

    def broken(data: EvalData) -> dict:
        raise ValueError("boom")

    registry.register("*.make_npc", TaskMetric("count", count))
    registry.register("*.make_npc", TaskMetric("count", broken))  # same name: first kept
    registry.register("quests.*", TaskMetric("broken", broken))
    teacher = map_records(2, seed=10, site="quests.make_npc")
    data = EvalData("quests.make_npc", pair_records(teacher, teacher))
    assert registry.compute(data) == {"count": {"pairs": 2},
                                      "broken": {"error": "ValueError: boom"}}
    assert registry.compute(EvalData("other.site", [])) == {}


def _stand_in_version(site: str) -> int:
    registry = SiteRegistry(load_config(), site)
    with registry.new_version() as (number, folder):
        (folder / "model.gguf").write_text("stand-in weights")
        manifest = {"fingerprint": "fp-map", "files": file_manifest(folder)}
        (folder / "manifest.json").write_text(json.dumps(manifest))
    return number


def test_eval_command_without_a_student_says_how_to_train() -> None:
    result = CliRunner().invoke(main, ["eval", MAP_SITE])
    assert result.exit_code == 1
    assert (f"{MAP_SITE} has no trained student; run `byllm-distill train {MAP_SITE}`"
            in result.output)


def test_evaluate_site_runs_the_loaded_student_and_eval_reuses_its_records(
        tmp_path: Path) -> None:
    config = load_config()
    store = Store(config.database_url)
    store.add_records(map_records(40, seed=12))
    number = _stand_in_version(MAP_SITE)
    loaded = []

    def loader(site: str, version: Version) -> Callable[[dict], tuple]:
        # Stands in for the llama.cpp engine: what evaluation needs of a loaded student.
        loaded.append((site, version.number))
        return procedural_student(11)

    outcome = evaluate_site(store, config.data_dir, MAP_SITE, limit=5, loader=loader,
                            out_dir=tmp_path / "run")
    assert loaded == [(MAP_SITE, number)]
    assert outcome.report.is_file() and 0 < outcome.answered == outcome.metrics["pairs"] <= 5
    answers = list(store.iter_records(RecordFilter(source="eval")))
    assert len(answers) == outcome.answered
    assert {(r.model, r.version) for r in answers} == {(f"student:{MAP_SITE}@v{number}",
                                                        number)}
    # A second run reuses the stored answers: nothing is generated, nothing is added, so
    # the promotion gate never counts one input twice.
    again = evaluate_site(store, config.data_dir, MAP_SITE, limit=5, loader=loader,
                          out_dir=tmp_path / "run2")
    assert again.answered == 0 and len(loaded) == 1
    assert again.metrics["pairs"] == outcome.metrics["pairs"]
    assert len(list(store.iter_records(RecordFilter(source="eval")))) == len(answers)

    out = tmp_path / "again"
    result = CliRunner().invoke(main, ["eval", MAP_SITE, "--student-records", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"report: {out / 'report.html'}" in result.output
    assert "pass every validator  teacher 100.0%" in result.output
    again = json.loads((out / "report.json").read_text())["metrics"]
    assert again["pairs"] == outcome.metrics["pairs"]
    assert dumps_canonical(again["agreement"]) == dumps_canonical(outcome.metrics["agreement"])
