"""Capture through byLLM's real provider path, against a local OpenAI-compatible server."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import run_jac
from openai_server import OpenAIServer

import byllm_distill
from byllm_distill.store import Store

SECRET = "sk-test-SECRET-5f1d2c9a"


@dataclass
class Point:
    x: int
    y: int


@pytest.fixture
def jac_loaded() -> None:
    import jaclang  # noqa: F401 - loads byLLM and the byllm-distill plugin


def _byllm():
    from byllm.lib import Model

    return Model


def _stored_bytes(url: str, home: Path) -> bytes:
    """Everything the store holds: each row of each table, and for SQLite the raw files too
    (freed pages and the WAL keep bytes that no row shows)."""
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    meta.reflect(engine)
    with engine.connect() as conn:
        rows = [repr(tuple(row)) for table in meta.sorted_tables
                for row in conn.execute(sa.select(table))]
    engine.dispose()
    files = b"".join(p.read_bytes() for p in home.glob("distill.db*"))
    return "\n".join(rows).encode() + files


def _ask_capital_of_france(model_name: str, monkeypatch: pytest.MonkeyPatch,
                           before_flush: Callable[[], bool] = lambda: True) -> OpenAIServer:
    """One captured call through byLLM's litellm path to a local server answering as
    `model_name`; `before_flush` must hold once the call returned, before the flush."""
    with OpenAIServer(model=model_name) as server:
        server.answers.append("Paris")
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_BASE", server.base_url)
        model = _byllm()(model_name=f"openai/{model_name}", api_key=SECRET)

        @byllm_distill.by(model)
        def capital_of(country: str) -> str:
            """Name the capital city of the country."""

        assert capital_of("France") == "Paris"
        assert before_flush()
        assert byllm_distill.flush()
    return server


def test_python_api_captures_litellm_answer_usage_cost(jac_loaded: None, distill_home: Path,
                                                      store_backend: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    server = _ask_capital_of_france("gpt-4o-mini", monkeypatch)
    sent = server.requests[0]
    headers = {k.lower(): v for k, v in sent["headers"].items()}
    assert headers["authorization"] == f"Bearer {SECRET}"  # the call really used the key
    store = Store(store_backend)
    (record,) = list(store.iter_records())
    assert record.site.endswith("capital_of")
    assert record.output == "Paris" and record.output_raw == "Paris"
    assert record.usage == {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
    assert record.cost is not None and record.cost > 0  # litellm's price for gpt-4o-mini
    assert record.model == "gpt-4o-mini"
    assert record.messages == sent["body"]["messages"]  # exactly what went over the wire
    assert record.args == {"country": "France"}
    store.close()
    stored = _stored_bytes(store_backend, distill_home)
    assert b"Paris" in stored and SECRET.encode() not in stored


def test_a_response_litellm_did_not_price_is_priced_off_the_callers_thread(
        jac_loaded: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model litellm has no price for (a self-hosted teacher) comes back unpriced; the
    price-table lookup (~50-70 µs) then runs where the record is built, on the writer
    thread, and what it finds is the record's cost."""
    import threading

    import litellm

    from byllm_distill.config import load_config

    asked: list[str] = []

    def price(*args: object, **kwargs: object) -> float:
        asked.append(threading.current_thread().name)
        return 0.25

    monkeypatch.setattr(litellm, "completion_cost", price)
    _ask_capital_of_france("local-teacher", monkeypatch,
                           before_flush=lambda: asked == [])  # nothing priced while it waited
    caller = threading.current_thread().name
    assert asked and caller not in asked, (asked, caller)
    store = Store(load_config().database_url)
    (record,) = list(store.iter_records())
    store.close()
    assert record.cost == 0.25 and record.model == "local-teacher"


def test_http_client_path_and_structured_output(jac_loaded: None, store_backend: str) -> None:
    # byLLM's `http_client` mode posts straight to the endpoint with httpx. (Its `proxy`
    # mode is not tested: byLLM 0.6.19 fails on the OpenAI client's response object.)
    with OpenAIServer(model="local-teacher") as server:
        server.answers.append('{"x": 2, "y": 5}')
        model = _byllm()(model_name="local-teacher", api_key=SECRET,
                         config={"http_client": True,
                                 "base_url": server.base_url + "/chat/completions"})
        @byllm_distill.by(model)
        def pick(hint: str) -> Point:
            """Pick a point."""

        assert pick("top") == Point(x=2, y=5)
        assert byllm_distill.flush()
        body = server.requests[0]["body"]
    (record,) = list(Store(store_backend).iter_records())
    assert record.output == {"x": 2, "y": 5}
    assert record.output_raw == '{"x": 2, "y": 5}'
    assert record.schema == body["response_format"]
    assert record.usage["total_tokens"] == 18


def test_jac_program_against_local_server(tmp_path: Path, distill_home: Path,
                                          store_backend: str) -> None:
    program = tmp_path / "ask.jac"
    program.write_text(
        'import from byllm.lib { Model }\n'
        f'glob llm = Model(model_name="openai/gpt-4o-mini", api_key="{SECRET}");\n'
        '"""Answer briefly."""\n'
        'def ask(question: str) -> str by llm();\n'
        'with entry { print(ask("Why is the sky blue?")); }\n'
    )
    with OpenAIServer() as server:
        server.answers.append("Rayleigh scattering.")
        result = run_jac(program, env={"OPENAI_BASE_URL": server.base_url,
                                       "OPENAI_API_BASE": server.base_url})
    assert result.returncode == 0, result.stderr
    assert "Rayleigh scattering." in result.stdout
    (record,) = list(Store(store_backend).iter_records())
    assert record.site == "ask.ask" and record.output == "Rayleigh scattering."
    assert record.usage["completion_tokens"] == 7
    stored = _stored_bytes(store_backend, distill_home)
    assert b"Rayleigh" in stored and SECRET.encode() not in stored
    assert json.dumps(record.to_public())  # exportable


def test_failed_call_is_recorded_and_still_raises(jac_loaded: None, distill_home: Path,
                                                   store_backend: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # nothing listens there
    monkeypatch.setenv("OPENAI_API_BASE", "http://127.0.0.1:9/v1")
    model = _byllm()(model_name="openai/gpt-4o-mini", api_key=SECRET,
                     call_params={"stream_num_retries": 0})

    @byllm_distill.by(model)
    def shout(text: str) -> str:
        """Shout it."""

    with pytest.raises(Exception):  # noqa: B017 - whatever byLLM raises must pass through
        shout("hi")
    assert byllm_distill.flush()
    (record,) = list(Store(store_backend).iter_records())
    assert record.status == "error" and record.error and record.output is None
    assert SECRET not in json.dumps(record.to_public())
    assert os.environ["BYLLM_DISTILL_HOME"] == str(distill_home)
