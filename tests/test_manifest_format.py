"""The version manifest's format version: unknown formats are refused, naming the format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from byllm_distill.artifacts import (
    MANIFEST_FORMAT,
    ArtifactError,
    ArtifactUnavailable,
    file_manifest,
    verify_files,
)
from byllm_distill.config import load_config
from byllm_distill.registry import SiteRegistry

SITE = "prog.make_thing"


def _version(folder: Path, **fields: object) -> Path:
    folder.mkdir(parents=True)
    (folder / "model.gguf").write_text("stand-in weights")
    (folder / "manifest.json").write_text(json.dumps({"files": file_manifest(folder),
                                                      **fields}))
    return folder


def test_known_and_legacy_formats_load(tmp_path: Path) -> None:
    verify_files(SITE, _version(tmp_path / "now", manifest_format=MANIFEST_FORMAT))
    verify_files(SITE, _version(tmp_path / "legacy"))  # written before the field existed


def test_a_newer_format_is_this_machines_problem(tmp_path: Path) -> None:
    folder = _version(tmp_path / "v", manifest_format=MANIFEST_FORMAT + 98)
    with pytest.raises(ArtifactUnavailable, match=rf"manifest format {MANIFEST_FORMAT + 98} "
                                                  r"is newer than this byllm-distill reads.*"
                                                  r"upgrade byllm-distill"):
        verify_files(SITE, folder)


def test_an_unknown_older_format_asks_for_a_retrain(tmp_path: Path) -> None:
    folder = _version(tmp_path / "v", manifest_format="0.9")
    with pytest.raises(ArtifactError, match=r"manifest format '0.9' is not one this "
                                            r"byllm-distill reads.*byllm-distill train "
                                            rf"{SITE}") as caught:
        verify_files(SITE, folder)
    assert not isinstance(caught.value, ArtifactUnavailable)


def test_the_engine_refuses_a_newer_format_before_reading_anything_else(
        tmp_path: Path) -> None:
    from byllm_distill.runtime.engine import StudentSpec

    folder = _version(tmp_path / "v", manifest_format=7)  # and no serving section at all
    with pytest.raises(ArtifactUnavailable, match="manifest format 7"):
        StudentSpec.from_folder(SITE, folder)


def test_registry_verify_refuses_a_newer_format(distill_home: Path) -> None:
    registry = SiteRegistry(load_config(), SITE)
    with registry.new_version() as (number, folder):
        (folder / "model.gguf").write_text("stand-in weights")
        (folder / "manifest.json").write_text(json.dumps(
            {"fingerprint": "f", "manifest_format": 42, "files": file_manifest(folder)}))
    with pytest.raises(ArtifactUnavailable, match="manifest format 42"):
        registry.verify(number)
