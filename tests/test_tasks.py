"""Task plug-ins (tasks.py): one hook shape and one loader for validators, metrics and
renderers; the RPG showcase is one."""

from __future__ import annotations

import logging
import types

import pytest

from byllm_distill import tasks
from byllm_distill.task_metrics import MetricRegistry, TaskMetric
from byllm_distill.validators.base import Verdict
from byllm_distill.validators.registry import ValidatorRegistry

SHOP_RUBRIC = (("fit", "Fits the basket", "Does every item fit the shopper's list?"),
               ("price", "Priced right", "Is each price the shop's own?"))


def _shop_task() -> types.ModuleType:
    module = types.ModuleType("shop_task")

    def in_stock(record: object) -> list[Verdict]:
        return [Verdict("in_stock", True, "")]

    def register(task: tasks.Task) -> None:
        task.validators.register("shop.*", in_stock)
        task.metrics.register("shop.*", TaskMetric("basket", lambda data: {"n": 1}))
        task.text_renderer("shop.*", lambda out: f"basket of {len(out)}" if isinstance(
            out, list) else None)
        task.rubric("shop.*", SHOP_RUBRIC)
        task.offline_teacher("shop", lambda seed: ("shopkeeper", seed))

    module.register = register  # type: ignore[attr-defined]
    return module


def test_one_hook_registers_validators_metrics_and_a_renderer_and_validators_switch_off(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        distill_home: object) -> None:
    monkeypatch.setitem(__import__("sys").modules, "shop_task", _shop_task())
    monkeypatch.setattr(tasks, "BUILTIN", (("shop", "shop_task:register"),
                                           ("broken", "shop_task:missing"),
                                           ("shop", "shop_task:register"),  # loads once
                                           ("rpg", "byllm_distill.rpg.plugin:register")))
    monkeypatch.setenv("BYLLM_DISTILL_DISABLED_VALIDATORS", "rpg")
    validators, metrics = ValidatorRegistry(), MetricRegistry()
    with caplog.at_level(logging.WARNING, logger="byllm_distill"):
        for kind, registry in (("validators", validators), ("metrics", metrics),
                               ("extras", None)):
            task = tasks.Task(**({kind: registry} if registry is not None else {}))
            tasks.load_all(task, kind)
    assert [fn.__name__ for fn in validators.for_site("shop.buy")] == ["in_stock"]
    assert [m.name for m in metrics.for_site("shop.buy")] == ["basket"]
    # `disabled_validators` switches the named task's validators off, nothing else
    assert validators.for_site("rpg.create_next_map") == []
    assert [m.name for m in metrics.for_site("rpg.create_next_map")] == ["rpg_map"]
    assert caplog.text.count("plug-in 'broken' failed to load") == 3  # once per kind
    assert [pattern for pattern, _ in task.text_renderers] == ["shop.*", "*create_next_map"]
    assert [command.name for command in task.commands] == ["rpg", "demo"]
    assert [pattern for pattern, _ in task.rubrics] == ["shop.*", "*create_next_map",
                                                        "*create_next_level"]
    assert sorted(task.offline_teachers) == ["rpg", "shop"]


@pytest.fixture
def shop_loaded(monkeypatch: pytest.MonkeyPatch, distill_home: object) -> None:
    """The shop task and the RPG one loaded as this process's plug-ins."""
    monkeypatch.setitem(__import__("sys").modules, "shop_task", _shop_task())
    monkeypatch.setattr(tasks, "BUILTIN", (("shop", "shop_task:register"),
                                           ("rpg", "byllm_distill.rpg.plugin:register")))
    monkeypatch.setattr(tasks, "_loaded", {})


def test_a_tasks_rubric_is_what_its_answers_are_rated_on_and_others_get_the_generic_one(
        shop_loaded: None) -> None:
    from byllm_distill.evaluation.ratings import GENERIC_RUBRIC, rubric_for, summarize_ratings
    from byllm_distill.store import Record
    from byllm_distill.web.rating_html import rating_page

    assert rubric_for("shop.buy") == SHOP_RUBRIC
    assert rubric_for("notes.summarize") == GENERIC_RUBRIC
    assert [key for key, _, _ in rubric_for("rpg.create_next_map")] == [
        "gameplay", "structure", "adherence"]
    record = Record(site="shop.buy", fingerprint="f", source="teacher", model="m",
                    messages=[], args={"list": ["tea"]}, output=["tea"], output_raw='["tea"]',
                    latency_ms=1.0)
    ratings = [{"record_id": record.id, "rater": "ann", "scores": {"fit": 4, "price": 2}}]
    summary = summarize_ratings(ratings, [], {record.id: record})
    assert summary["criteria"] == [["fit", "Fits the basket"], ["price", "Priced right"]]
    assert summary["by_source"]["teacher (m)"]["price"]["mean"] == 2
    page = rating_page("h", "ann", 1, 1, record.args, "<pre>tea</pre>", "", rubric_for("shop.buy"))
    assert 'name="fit"' in page and 'name="price"' in page and "gameplay" not in page


def test_teacher_is_the_tasks_offline_one_unless_a_hosted_model_is_configured(
        shop_loaded: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from byllm_distill import teacher
    from byllm_distill.errors import DistillError
    from byllm_distill.rpg.teacher import OfflineDesigner

    assert teacher("shop", seed=3) == ("shopkeeper", 3)
    designer = teacher("rpg", seed=5)
    assert isinstance(designer, OfflineDesigner) and designer.seed == 5
    with pytest.raises(DistillError, match=r"'nope'.*known: rpg, shop"):
        teacher("nope")
    monkeypatch.setenv("BYLLM_DISTILL_TEACHER", "gpt-4o")
    hosted = teacher("rpg")
    assert not isinstance(hosted, OfflineDesigner) and hosted.model_name == "gpt-4o"


def test_the_rpg_showcase_is_a_task_plug_in_of_the_process() -> None:
    from byllm_distill.rpg.generator import design_level, design_map
    from byllm_distill.task_metrics import registry as metrics
    from byllm_distill.validators.registry import registry as validators

    assert tasks.load("validators", validators).validators is validators
    assert [fn.__name__ for fn in validators.for_site("rpg.create_next_map")] == ["rpg_map"]
    assert {m.name for m in metrics.for_site("rpg.create_next_map")} == {"rpg_map"}
    assert {m.name for m in metrics.for_site("rpg.create_next_level")} == {"rpg_level"}
    import random

    rng = random.Random(0)
    game_map = design_map(design_level([], 1, 12, 10, rng), rng)
    drawn = tasks.render_text("rpg.create_next_map", game_map)
    rows = (drawn or "").splitlines()  # 10 x 12 tiles inside a border
    assert len(rows) == 12 and {len(row) for row in rows} == {14} and "P" in drawn
    assert tasks.render_text("shop.buy", game_map) is None


def test_a_task_adds_its_own_commands_to_the_command_line() -> None:
    from byllm_distill.cli import main
    from byllm_distill.rpg.cli import rpg

    assert main.commands["rpg"] is rpg and rpg in tasks.load().commands
