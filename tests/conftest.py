"""Shared fixtures: every test gets its own data dir; helpers to run Jac programs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
BIN = Path(sys.executable).parent

# Keep litellm from reaching for its remote price list; it has a bundled copy.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def distill_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the data dir at a fresh folder and forget any process-wide capture."""
    home = tmp_path / "distill-home"
    monkeypatch.setenv("BYLLM_DISTILL_HOME", str(home))
    for var in ("BYLLM_DISTILL_CAPTURE", "BYLLM_DISTILL_STORE_URL", "BYLLM_DISTILL_TEACHER",
                "BYLLM_DISTILL_TEACHER_ERRORS"):
        monkeypatch.delenv(var, raising=False)
    from byllm_distill import capture, router

    router.reset_router()
    capture.reset_capture()
    yield home
    router.reset_router()
    capture.reset_capture()


def run_jac(program: Path, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`jac run program` in a subprocess with the test's environment plus `env`."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([str(BIN / "jac"), "run", str(program)], capture_output=True,
                          text=True, env=full_env, cwd=cwd or program.parent, timeout=timeout)


def run_cli(*args: str, env: dict[str, str] | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([str(BIN / "byllm-distill"), *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout)
