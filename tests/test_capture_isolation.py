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
