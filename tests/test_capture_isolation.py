"""Capture failures never change what the user's call returns."""

from __future__ import annotations

from pathlib import Path

import pytest

import byllm_distill
from byllm_distill.config import load_config
from byllm_distill.drops import DropLog
from byllm_distill.store import Store


class Opaque:
    """An argument with no JSON form."""


def test_unserializable_argument_is_dropped_and_counted(store_backend: str,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    import jaclang  # noqa: F401
    from byllm.lib import Model

    model = Model(model_name="mockllm", config={"outputs": ["fine", "also fine", "kept"]})

    @byllm_distill.by(model)
    def describe(thing: object) -> str:
        """Describe it."""

    assert describe(Opaque()) == "fine"
    assert describe(Opaque()) == "also fine"
    assert describe("a plain string") == "kept"  # proves capture writes where we look
    assert byllm_distill.flush()
    assert DropLog(load_config().data_dir).totals() == {"value does not serialize": 2}
    warnings = [r for r in caplog.records if "capture dropped a record" in r.getMessage()]
    assert len(warnings) == 1 and "Opaque" in warnings[0].getMessage()
    (kept,) = Store(store_backend).iter_records()
    assert kept.output == "kept" and kept.args == {"thing": "a plain string"}


def test_value_that_fails_on_the_writer_thread_is_dropped_and_counted(
        distill_home: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An immutable argument is serialised later, on the writer thread; one with no JSON
    form (NaN) is counted there, with its reason, and the call is untouched."""
    import jaclang  # noqa: F401
    from byllm.lib import Model

    model = Model(model_name="mockllm", config={"outputs": ["odd", "kept"]})

    @byllm_distill.by(model)
    def weigh(amount: float) -> str:
        """Weigh it."""

    assert weigh(float("nan")) == "odd"
    assert weigh(1.5) == "kept"
    assert byllm_distill.flush()
    assert DropLog(load_config().data_dir).totals() == {"value does not serialize": 1}
    assert any("nan" in r.getMessage() for r in caplog.records
               if "capture dropped a record" in r.getMessage())
    (kept,) = Store(load_config().database_url).iter_records()
    assert kept.output == "kept" and kept.args == {"amount": 1.5}


def test_malformed_config_turns_capture_off_not_the_call(distill_home: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    import jaclang  # noqa: F401
    from byllm.lib import Model

    monkeypatch.setenv("BYLLM_DISTILL_CAPTURE", "sometimes")
    model = Model(model_name="mockllm", config={"outputs": ["ok"]})

    @byllm_distill.by(model)
    def greet(name: str) -> str:
        """Greet."""

    assert greet("x") == "ok"
    assert any("capture is off for this run" in r.getMessage() for r in caplog.records)


def test_a_dataclass_type_met_before_still_refuses_a_cycle_and_keeps_values_exact() -> None:
    """serialize.py takes a fast path for exact scalars and dataclass types it has seen;
    its results and refusals are the general path's."""
    import dataclasses
    import enum

    from byllm_distill.errors import SerializationError
    from byllm_distill.serialize import snapshot, to_jsonable

    class Mood(enum.Enum):
        CALM = "calm"

    class Name(str):
        pass

    @dataclasses.dataclass
    class Node:
        label: str
        next: object = None
        _hidden: int = 0

    assert to_jsonable(Node("a", Node(Name("b"), Mood.CALM))) == {
        "label": "a", "next": {"label": "b", "next": "calm"}}
    looped = Node("x")
    looped.next = looped  # the type is known now: the fast path must still see the cycle
    with pytest.raises(SerializationError, match="cycle through Node"):
        to_jsonable(looped)
    shared = Node("leaf")
    assert to_jsonable([shared, shared]) == [{"label": "leaf", "next": None}] * 2
    with pytest.raises(SerializationError, match="nan"):
        to_jsonable(Node("n", float("nan")))
    assert snapshot("s") == "s" and snapshot(Mood.CALM) is Mood.CALM
    assert snapshot(Node("m")) == {"label": "m", "next": None}
