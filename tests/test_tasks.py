"""Task plug-ins (tasks.py): one hook shape and one loader for validators, metrics and
renderers; the RPG showcase is one."""

from __future__ import annotations

import logging
import types

import pytest

from byllm_distill import tasks
from byllm_distill.evaluation.registry import MetricRegistry, TaskMetric
from byllm_distill.validators.base import Verdict
from byllm_distill.validators.registry import ValidatorRegistry


def _shop_task() -> types.ModuleType:
    module = types.ModuleType("shop_task")

    def in_stock(record: object) -> list[Verdict]:
        return [Verdict("in_stock", True, "")]

    def register(task: tasks.Task) -> None:
        task.validators.register("shop.*", in_stock)
        task.metrics.register("shop.*", TaskMetric("basket", lambda data: {"n": 1}))
        task.text_renderer("shop.*", lambda out: f"basket of {len(out)}" if isinstance(
            out, list) else None)

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
    assert [command.name for command in task.commands] == ["rpg"]


def test_the_rpg_showcase_is_a_task_plug_in_of_the_process() -> None:
    from byllm_distill.evaluation.registry import registry as metrics
    from byllm_distill.rpg.generator import design_level, design_map
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
