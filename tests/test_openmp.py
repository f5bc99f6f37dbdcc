"""Parked OpenMP threads are given back: after training, and when a model's stepping thread
runs out of work (byllm_distill/openmp.py says why; `benchmarks/openmp_threads.py`
measures the speed, these tests check the behaviour only).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from byllm_distill import openmp
from byllm_distill.openmp import loaded_runtimes
from byllm_distill.training import TrainingError, pipeline

CHILD = """
import json, os
import torch
from byllm_distill.openmp import loaded_runtimes, release_openmp_threads

def threads():
    return len(os.listdir("/proc/self/task"))

def gradient():
    torch.manual_seed(0)
    w = torch.randn(256, 256, requires_grad=True)
    (w @ w).sum().backward()
    return w.grad.clone()

torch.set_num_threads(2)
start = threads()
first = gradient()
parked = threads()
released = release_openmp_threads()
after = threads()
again = gradient()
print(json.dumps({"start": start, "parked": parked, "after": after, "released": released,
                  "runtimes": loaded_runtimes(), "same": bool(torch.equal(first, again))}))
"""


def test_the_threads_torch_parked_are_released_and_torch_still_computes() -> None:
    out = subprocess.run([sys.executable, "-c", CHILD], check=True, capture_output=True,
                         text=True, timeout=300)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert any("gomp" in path for path in seen["runtimes"]), seen
    assert seen["parked"] > seen["start"], f"torch parked no OpenMP thread: {seen}"
    assert seen["released"] == len(seen["runtimes"]), seen
    assert seen["after"] == seen["start"], f"parked threads still there: {seen}"
    assert seen["same"], "torch computed a different gradient after the release"


def test_train_site_releases_them_even_when_it_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(openmp, "release_openmp_threads", lambda: calls.append(1) or 1)
    with pytest.raises(TrainingError, match="quant must be one of"):
        pipeline.train_site("rpg.create_next_map", quant="Q9")
    assert calls == [1]


def test_no_runtime_is_reported_when_the_process_maps_cannot_be_read(tmp_path) -> None:
    assert loaded_runtimes(tmp_path / "missing") == []
