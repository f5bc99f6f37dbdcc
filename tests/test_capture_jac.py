"""Capture of a real Jac program run with `jac run` (function, method, async ability)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES, run_cli, run_jac

import byllm_distill
from byllm_distill import sites
from byllm_distill.config import load_config
from byllm_distill.rpg.corpus import PROGRAM_DIR, load_program
from byllm_distill.store import RecordFilter, Store

PROGRAM = FIXTURES / "capture_prog.jac"
EXPECTED_STDOUT_LINES = [
    "Hello, Bob!",
    "Npc(name='Ann', role=<Role.MAGE: 2>, home=Pos(x=3, y=4), tags=['wise'])",
    "Dragons hoard gold.",
]


def program_lines(stdout: str) -> list[str]:
    """The program's own lines: litellm prints a 'Provider List' banner for the mock model."""
    return [line for line in stdout.splitlines() if line and "Provider List" not in line]


def _user_text(record_messages: list) -> str:
    user = [m for m in record_messages if m["role"] == "user"][0]["content"]
    return user if isinstance(user, str) else " ".join(p.get("text", "") for p in user)


def test_jac_program_one_record_per_call(distill_home: Path) -> None:
    result = run_jac(PROGRAM)
    assert result.returncode == 0, result.stderr
    assert program_lines(result.stdout) == EXPECTED_STDOUT_LINES

    store = Store(load_config().database_url)
    records = {r.site: r for r in store.iter_records()}
    assert store.count() == 3
    assert set(records) == {"capture_prog.greet", "capture_prog.Village.make_npc",
                            "capture_prog.tell"}

    greet = records["capture_prog.greet"]
    assert greet.output == "Hello, Bob!" and greet.output_raw == "Hello, Bob!"
    assert greet.args == {"name": "Bob"}
    assert greet.schema is None
    assert "Greet a person by name." in _user_text(greet.messages)
    assert greet.messages[0]["role"] == "system"
    assert greet.source == "teacher" and greet.status == "ok" and greet.model == "mockllm"

    npc = records["capture_prog.Village.make_npc"]
    assert npc.output == {"name": "Ann", "role": 2, "home": {"x": 3, "y": 4}, "tags": ["wise"]}
    assert npc.args == {"self": {"title": "Oak"}, "hint": "a wise mage"}
    assert npc.schema["json_schema"]["name"] == "Npc"
    assert "a wise mage" in _user_text(npc.messages)

    tell = records["capture_prog.tell"]
    assert tell.output == "Dragons hoard gold." and tell.args == {"topic": "dragons"}

    # Fingerprints are per contract: three sites, three different fingerprints.
    assert len({r.fingerprint for r in records.values()}) == 3
    # A second run of the unchanged program keeps the same keys and fingerprints.
    assert run_jac(PROGRAM).returncode == 0
    again = {r.site: r.fingerprint for r in store.iter_records(RecordFilter(since="1h"))}
    assert again == {k: v.fingerprint for k, v in records.items()}
    assert store.count() == 6


def test_running_and_importing_a_program_give_one_fingerprint(tmp_path: Path) -> None:
    """`jac run rpg.jac` defines `__main__.Map`, `import rpg` defines `rpg.Map`: one site,
    one contract. Else a student trained on imported calls is stale for the run program."""
    program = load_program()
    program.create_next_map(program.create_next_level([], 1, 16, 12))
    byllm_distill.flush()
    (tmp_path / "rpg.jac").write_text((PROGRAM_DIR / "rpg.jac").read_text())
    result = run_jac(tmp_path / "rpg.jac", env={"RPG_LEVELS": "1"})
    assert result.returncode == 0, result.stderr

    fingerprints: dict[str, set[str]] = {}
    for record in Store(load_config().database_url).iter_records():
        fingerprints.setdefault(record.site, set()).add(record.fingerprint)
    assert fingerprints.keys() == {"rpg.create_next_level", "rpg.create_next_map"}
    assert all(len(found) == 1 for found in fingerprints.values()), fingerprints


def test_main_program_types_are_named_by_its_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules["__main__"], "__file__", "/games/rpg.jac", raising=False)
    game_map = type("Map", (), {"__module__": "__main__"})
    assert sites._type_name(game_map) == "rpg.Map"
    assert sites._type_name(list[game_map]) == "list[rpg.Map]"
    assert sites._type_name(game_map | None) == "rpg.Map | None"
    assert sites._type_name(dict[str, int]) == "dict[str, int]"  # unchanged: no main types


def test_capture_off_by_env_records_nothing(distill_home: Path) -> None:
    result = run_jac(PROGRAM, env={"BYLLM_DISTILL_CAPTURE": "0"})
    assert result.returncode == 0, result.stderr
    assert not (distill_home / "distill.db").exists()


def test_capture_off_by_jac_toml(tmp_path: Path, distill_home: Path) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    (project / "prog.jac").write_text(PROGRAM.read_text())
    (project / "jac.toml").write_text(
        '[project]\nname = "p"\n\n[plugins.distill]\ncapture = false\n'
    )
    result = run_jac(project / "prog.jac", cwd=project)
    assert result.returncode == 0, result.stderr
    assert not (distill_home / "distill.db").exists()


def _blocked_home(tmp_path: Path) -> Path:
    # Running as root ignores permission bits, so block the store with a file where its
    # folder should be: every open and mkdir under it fails.
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    return blocker / "home"


def test_unwritable_store_leaves_output_byte_identical(tmp_path: Path) -> None:
    off = run_jac(PROGRAM, env={"BYLLM_DISTILL_CAPTURE": "0"})
    home = _blocked_home(tmp_path)
    temp = tmp_path / "temp"  # the drop log's fallback folder, this test's own
    temp.mkdir()
    env = {"BYLLM_DISTILL_HOME": str(home), "TMPDIR": str(temp)}
    broken = run_jac(PROGRAM, env=env)
    assert off.returncode == 0 and broken.returncode == 0, broken.stderr
    assert broken.stdout == off.stdout
    assert "capture dropped a record" in broken.stderr
    assert broken.stderr.count("capture dropped a record") == 1  # once per cause

    # The drop log cannot live in the blocked home either; it falls back to the temp
    # folder, and status finds it there while reporting why the store cannot open.
    assert [p.name for p in temp.glob("byllm-distill-dropped-*.jsonl")], list(temp.iterdir())
    status = run_cli("status", "--json", env=env)
    assert status.returncode == 0, status.stderr
    info = json.loads(status.stdout)
    assert info["dropped"] == 3 and info["dropped_by_cause"] == {"store unavailable": 3}
    assert "cannot open store" in info["store_error"]


def test_corrupt_store_file_is_counted_not_fatal(distill_home: Path) -> None:
    distill_home.mkdir(parents=True)
    (distill_home / "distill.db").write_bytes(b"this is not a sqlite database" * 100)
    result = run_jac(PROGRAM)
    assert result.returncode == 0, result.stderr
    assert program_lines(result.stdout) == EXPECTED_STDOUT_LINES
    status = run_cli("status", "--json")
    info = json.loads(status.stdout)
    assert info["dropped"] == 3
    assert info["dropped_by_cause"] == {"store corrupt": 3}


def test_secrets_in_environment_are_not_stored(distill_home: Path) -> None:
    assert run_jac(PROGRAM, env={"OPENAI_API_KEY": "sk-env-secret-123"}).returncode == 0
    data = b"".join(p.read_bytes() for p in distill_home.glob("distill.db*"))
    assert b"sk-env-secret-123" not in data
    assert os.environ.get("BYLLM_DISTILL_HOME") == str(distill_home)


def test_record_shows_arguments_self_and_output_as_they_were_at_the_call(
        distill_home: Path) -> None:
    """The program changes `self`, a list argument and the returned object right after
    each call; capture builds records on its writer thread, later, from what it kept."""
    result = run_jac(FIXTURES / "mutating_prog.jac")
    assert result.returncode == 0, result.stderr
    records = sorted(Store(load_config().database_url).iter_records(),
                     key=lambda r: r.args["turn"])
    assert [r.args["turn"] for r in records] == list(range(20))
    for turn, record in enumerate(records):
        title = "Oak" if turn == 0 else f"Changed{turn - 1}"
        assert record.args["self"] == {"title": title, "count": turn}, record.args
        assert record.args["hints"] == [f"hint{i}" for i in range(turn + 1)]
        assert record.output == {"name": "Ann", "tags": ["wise"]}
        assert record.output_raw == '{"name": "Ann", "tags": ["wise"]}'
