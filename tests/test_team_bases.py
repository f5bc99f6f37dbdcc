"""The shared base GGUF in team mode: uploaded once to the artifact store beside the
versions, downloaded (checked, then renamed into place) where a machine serves a version
as an adapter.

Two `DistillConfig`s with different data dirs stand for two machines sharing one database
and one bucket (a real PostgreSQL server and a real S3-compatible server). The GGUFs are
stand-in bytes: these tests check the storage mechanics; `tests/test_adapter_serving.py`
serves a real trained version over a downloaded base.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT

from byllm_distill.artifacts import ArtifactStore, sha256_file
from byllm_distill.bases import BASE_FILE, base_folder, find_base, publish_base, shared_name
from byllm_distill.config import DistillConfig
from byllm_distill.registry import SiteRegistry, file_manifest

SITE = "team.create_next_map"
KEY = "stand-in-base-0123456789ab-Q4_K_M"


def _build_base(config: DistillConfig, size: int = 1 << 20) -> dict[str, Any]:
    """A stand-in base in `config`'s data dir, as training leaves one; its manifest entry."""
    folder = base_folder(config.data_dir, KEY)
    folder.mkdir(parents=True)
    (folder / BASE_FILE).write_bytes(os.urandom(size))
    sha = sha256_file(folder / BASE_FILE)
    (folder / "base.json").write_text(json.dumps({"quant": "Q4_K_M", "sha256": sha}))
    return {"key": KEY, "quant": "Q4_K_M", "sha256": sha, "bytes": size}


def _train_stand_in(config: DistillConfig, base: dict[str, Any]) -> int:
    with SiteRegistry(config, SITE).new_version() as (number, folder):
        (folder / "model.gguf").write_text(f"stand-in merged weights {number}")
        (folder / "adapter.gguf").write_text(f"stand-in adapter {number}")
        manifest = {"fingerprint": "fp", "files": file_manifest(folder),
                    "adapter_serving": {"adapter": "adapter.gguf", "base": base}}
        (folder / "manifest.json").write_text(json.dumps(manifest))
    return number


def _fs(config: DistillConfig) -> Any:
    import fsspec

    return fsspec.filesystem("s3", client_kwargs={"endpoint_url": config.artifacts_endpoint})


def _leftovers(config: DistillConfig) -> list[str]:
    return sorted(p.name for p in (config.data_dir / "bases").glob(".*.download"))


def test_the_base_is_uploaded_once_and_downloaded_where_it_is_served(
        machines: tuple[DistillConfig, DistillConfig]) -> None:
    a, b = machines
    base = _build_base(a)
    assert [_train_stand_in(a, base) for _ in range(2)] == [1, 2]
    fs = _fs(a)
    assert fs.ls(f"{a.artifacts}/bases") == [
        f"{a.artifacts}/{shared_name(base['sha256'])}".removeprefix("s3://")]
    assert publish_base(ArtifactStore(a.artifacts, a.artifacts_endpoint), a.data_dir,
                        SiteRegistry(a, SITE).verify(2).manifest) is False  # already there

    assert SiteRegistry(b, SITE).verify(1).path.is_dir()  # the version alone
    assert not (b.data_dir / "bases").exists()  # the base only where it is served
    path, why = find_base(b.data_dir, base)
    assert (path, why) == (base_folder(b.data_dir, KEY) / BASE_FILE, "")
    assert path.read_bytes() == (base_folder(a.data_dir, KEY) / BASE_FILE).read_bytes()
    recorded = json.loads((path.parent / "base.json").read_text())
    assert recorded["sha256"] == base["sha256"]
    assert recorded["downloaded_from"].endswith(shared_name(base["sha256"]))
    assert _leftovers(b) == []
    assert find_base(b.data_dir, base, ArtifactStore(b.artifacts, "http://127.0.0.1:9")) == \
        (path, "")  # here now: no download, the store is not asked
    path.unlink()  # a folder left without its GGUF is filled again
    assert find_base(b.data_dir, base) == (path, "")
    assert sha256_file(path) == base["sha256"] and _leftovers(b) == []


@pytest.mark.parametrize("damage", ["flipped byte", "truncated"])
def test_a_corrupt_base_in_the_store_is_refused_by_name(
        machines: tuple[DistillConfig, DistillConfig], damage: str) -> None:
    a, b = machines
    base = _build_base(a)
    _train_stand_in(a, base)
    remote = f"{a.artifacts}/{shared_name(base['sha256'])}"
    data = bytearray(_fs(a).cat_file(remote))
    if damage == "flipped byte":
        data[len(data) // 2] ^= 0xFF
    else:
        del data[len(data) // 2:]
    _fs(a).pipe_file(remote, bytes(data))
    path, why = find_base(b.data_dir, base)
    assert path is None
    assert f"{remote} does not match its sha256" in why
    assert "delete that object" in why and "merged model.gguf" in why
    assert not base_folder(b.data_dir, KEY).exists() and _leftovers(b) == []


def test_an_unreachable_store_is_a_reason_not_a_crash(
        machines: tuple[DistillConfig, DistillConfig]) -> None:
    a, b = machines
    base = _build_base(a)
    _train_stand_in(a, base)
    path, why = find_base(b.data_dir, base, ArtifactStore(b.artifacts, "http://127.0.0.1:9"))
    assert path is None
    assert f"cannot download {b.artifacts}/{shared_name(base['sha256'])}" in why, why
    assert not base_folder(b.data_dir, KEY).exists() and _leftovers(b) == []


def test_a_version_published_without_its_base_is_logged_and_served_merged_elsewhere(
        machines: tuple[DistillConfig, DistillConfig], caplog: pytest.LogCaptureFixture) -> None:
    a, b = machines
    base = _build_base(a)
    (base_folder(a.data_dir, KEY) / BASE_FILE).unlink()  # e.g. deleted by hand
    with caplog.at_level(logging.WARNING, logger="byllm_distill"):
        assert _train_stand_in(a, base) == 1  # the version itself is published
    assert "the version's base is not uploaded" in caplog.text
    path, why = find_base(b.data_dir, base)
    assert path is None and "cannot download" in why, why


PULL = """
import json, logging, sys
from pathlib import Path
from byllm_distill.bases import find_base
logging.basicConfig(level=logging.INFO, format="%(message)s")
path, why = find_base(Path(sys.argv[1]), json.loads(sys.argv[2]))
print(json.dumps([str(path), why]))
"""


def test_two_processes_pulling_at_once_get_one_good_copy(
        machines: tuple[DistillConfig, DistillConfig]) -> None:
    a, b = machines
    base = _build_base(a, size=32 << 20)
    _train_stand_in(a, base)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    pulls = [subprocess.Popen([sys.executable, "-c", PULL, str(b.data_dir), json.dumps(base)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    said = [p.communicate(timeout=120) for p in pulls]
    assert all(p.returncode == 0 for p in pulls), said
    expected = str(base_folder(b.data_dir, KEY) / BASE_FILE)
    assert [json.loads(out) for out, _ in said] == [[expected, ""]] * 2
    # One process downloaded; the other waited for it and found the base in place.
    assert sum(err.count("downloaded the base GGUF") for _, err in said) == 1, said
    assert sha256_file(Path(expected)) == base["sha256"] and _leftovers(b) == []
