"""Many threads and a second process capturing into one store (SQLite, PostgreSQL) at once."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import Counter

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
