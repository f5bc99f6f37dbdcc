"""Many threads and a second process capturing into one store (SQLite, PostgreSQL) at once."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable

from conftest import FIXTURES

import byllm_distill
from byllm_distill.store import Store

THREADS, CALLS, OTHER = 8, 50, 200


def test_threads_and_second_process_every_record_once(store_backend: str) -> None:
    import jaclang  # noqa: F401
    from byllm.lib import Model

    outputs = [f"main-{i}" for i in range(THREADS * CALLS)]
    model = Model(model_name="mockllm", config={"outputs": list(outputs)})

    @byllm_distill.by(model)
    def answer(i: int) -> str:
        """Answer."""

    other = subprocess.Popen([sys.executable, str(FIXTURES / "writer_proc.py"), str(OTHER),
                              "other"], env=dict(os.environ))
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for i in range(CALLS):
                answer(i)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert other.wait(timeout=300) == 0
    assert not errors
    assert byllm_distill.flush(120)

    store = Store(store_backend)
    seen = Counter(r.output for r in store.iter_records())
    expected = set(outputs) | {f"other-{i}" for i in range(OTHER)}
    assert set(seen) == expected
    assert all(n == 1 for n in seen.values())
    assert store.count() == THREADS * CALLS + OTHER
    assert len({r.id for r in store.iter_records()}) == store.count()


def test_a_full_batch_is_written_without_waiting_out_the_window(
        store_backend: str, monkeypatch: object) -> None:
    """The writer gathers calls for a window (BATCH_WINDOW_S); BATCH_MAX queued calls
    cut it short, with no flush."""
    answer = _batches_of_four(monkeypatch, "a")
    for i in range(4):
        answer(i)
    assert _stored_within_a_minute(store_backend, 4) == ["a0", "a1", "a2", "a3"]


def test_a_wake_set_before_the_writer_took_a_call_does_not_split_the_batch(
        store_backend: str, monkeypatch: object) -> None:
    """Three calls queue while the writer starts up; the third crosses the full-batch mark
    and sets the wake before the writer holds any call. That stale wake must not cut the
    next gathering short (it once wrote three, then left the fourth call waiting out the
    whole window)."""
    import time

    from byllm_distill.capture import writer
    from byllm_distill.validators.registry import ValidatorRegistry

    started_up = threading.Event()
    real_load = ValidatorRegistry.load

    def slow_load(self: ValidatorRegistry) -> None:
        started_up.wait(30)
        real_load(self)

    monkeypatch.setattr(ValidatorRegistry, "load", slow_load)  # type: ignore[attr-defined]
    monkeypatch.setattr(writer, "READY_WAIT_S", 0.01)  # type: ignore[attr-defined]
    monkeypatch.setattr("byllm_distill.capture.READY_WAIT_S", 0.01)  # type: ignore[attr-defined]
    answer = _batches_of_four(monkeypatch, "b")
    for i in range(3):
        answer(i)
    started_up.set()
    time.sleep(0.5)  # the writer takes the first call and gathers
    answer(3)
    assert _stored_within_a_minute(store_backend, 4) == ["b0", "b1", "b2", "b3"]


def _batches_of_four(monkeypatch: object, prefix: str) -> Callable[[int], str]:
    """A captured function answering prefix0..prefix3, with a writer that gathers four
    calls a batch and would otherwise wait ten minutes for them."""
    import jaclang  # noqa: F401
    from byllm.lib import Model

    from byllm_distill.capture import writer

    monkeypatch.setattr(writer, "BATCH_WINDOW_S", 600.0)  # type: ignore[attr-defined]
    monkeypatch.setattr(writer, "BATCH_MAX", 4)  # type: ignore[attr-defined]
    model = Model(model_name="mockllm", config={"outputs": [f"{prefix}{i}" for i in range(4)]})

    @byllm_distill.by(model)
    def answer(i: int) -> str:
        """Answer."""

    return answer


def _stored_within_a_minute(store_backend: str, count: int) -> list[str]:
    """The stored outputs, sorted, once `count` are stored (or a minute has passed), with
    no flush."""
    import time

    store = Store(store_backend)
    deadline = time.monotonic() + 60
    while store.count() < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return sorted(r.output for r in store.iter_records())


def test_a_writer_whose_start_up_fails_neither_stalls_the_call_nor_loses_the_record(
        store_backend: str, monkeypatch: object) -> None:
    """The first synchronous call waits for the writer's start-up (loading the validators),
    at most READY_WAIT_S; a start-up that raises still ends it at once."""
    import time

    import jaclang  # noqa: F401
    from byllm.lib import Model

    from byllm_distill.capture import writer
    from byllm_distill.validators.registry import ValidatorRegistry

    def broken(self: ValidatorRegistry) -> None:
        raise RuntimeError("plug-ins unreadable")

    monkeypatch.setattr(ValidatorRegistry, "load", broken)  # type: ignore[attr-defined]
    monkeypatch.setattr(writer, "READY_WAIT_S", 30.0)  # type: ignore[attr-defined]
    monkeypatch.setattr("byllm_distill.capture.READY_WAIT_S", 30.0)  # type: ignore[attr-defined]
    model = Model(model_name="mockllm", config={"outputs": ["kept"]})

    @byllm_distill.by(model)
    def answer(i: int) -> str:
        """Answer."""

    start = time.monotonic()
    assert answer(1) == "kept"
    assert time.monotonic() - start < 10
    assert byllm_distill.flush()
    (record,) = Store(store_backend).iter_records()
    assert record.output == "kept" and record.valid is True
