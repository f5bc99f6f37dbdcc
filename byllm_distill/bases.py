"""Shared base GGUFs: one quantized base model per data dir, under every site's adapter.

Contract. A version trained with an adapter GGUF (`adapter.gguf`, beside its merged
`model.gguf`) names in its manifest's `adapter_serving` section the base it applies to:
`{"adapter": "adapter.gguf", "base": {"key", "quant", "sha256", "bytes"}}`. That base
lives once per data dir, at `<data_dir>/bases/<key>/model.gguf`, with a `base.json`
saying how it was made; `key` names the base model and its weights' hash and the quant
(training builds it, see `training/export.py: base_gguf`). Training writes it once per
base and quant and every version built on it reuses it.

`find_base(data_dir, base)` is the one reader: the path of the base GGUF when it is here
and its size and sha256 match what the version's manifest recorded, else None with the
reason (so serving falls back to the version's merged GGUF). A changed or corrupt base
here must not load. A base that is not here is downloaded first when a shared artifact
store is configured (team mode, artifacts.py): `publish_base`, which the registry calls
before it uploads a version, puts the base there once, as `bases/sha256-<sha256>.gguf`.
The download goes to a staging folder beside the bases, is checked against the manifest's
size and sha256, and only then renamed into place; processes pulling the same base take
turns on a lock file and the later one finds it done. An unreachable store or a download
that does not match leaves nothing behind and is a reason, not an exception: the version
serves merged. Importing this module loads nothing heavy.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from byllm_distill.artifacts import ArtifactError, ArtifactStore, sha256_file
from byllm_distill.errors import ConfigError

log = logging.getLogger("byllm_distill")
BASES_DIR = "bases"
BASE_FILE = "model.gguf"
_SAFE_KEY = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_checked: dict[tuple[str, float, int], str] = {}  # (path, mtime, size) -> sha256 seen


def base_folder(data_dir: Path, key: str) -> Path:
    return Path(data_dir) / BASES_DIR / key


def shared_name(sha256: str) -> str:
    """Where a base lives in the shared artifact store, relative to its URL."""
    return f"{BASES_DIR}/sha256-{sha256}.gguf"


def file_sha256(path: Path) -> str:
    """The sha256 of `path`, hashed once per process while its size and mtime hold."""
    stat = path.stat()
    seen = (str(path), stat.st_mtime, stat.st_size)
    if seen not in _checked:
        _checked[seen] = sha256_file(path)
    return _checked[seen]


def _parse(base: dict[str, Any]) -> tuple[str, str, int] | str:
    """(key, sha256, bytes) of a manifest's `adapter_serving.base`, or why it is malformed
    (the key becomes a folder name and the sha256 an object name, so both are checked)."""
    try:
        key, sha, size = str(base["key"]), str(base["sha256"]), int(base["bytes"])
    except (KeyError, TypeError, ValueError) as exc:
        return f"the manifest's adapter_serving.base is malformed ({exc})"
    if not _SAFE_KEY.fullmatch(key) or not _SHA256.fullmatch(sha):
        return (f"the manifest's adapter_serving.base names no valid key and sha256 "
                f"({key!r}, {sha!r})")
    return key, sha, size


def local_base(data_dir: Path, base: dict[str, Any]) -> tuple[Path | None, str]:
    """(the base GGUF's path, "") when this data dir holds it and it matches `base` (a
    manifest's `adapter_serving.base`), else (None, why not). Never downloads."""
    parsed = _parse(base)
    if isinstance(parsed, str):
        return None, parsed
    key, want_sha, want_bytes = parsed
    path = base_folder(data_dir, key) / BASE_FILE
    if not path.is_file():
        return None, f"the base GGUF {path} is not on this machine"
    if path.stat().st_size != want_bytes or file_sha256(path) != want_sha:
        return None, (f"the base GGUF {path} does not match the version's manifest (changed "
                      f"or corrupt; delete {path.parent}: a shared artifact store gives it "
                      "back, or retrain to rebuild it)")
    return path, ""


def find_base(data_dir: Path, base: dict[str, Any],
              shared: ArtifactStore | None = None) -> tuple[Path | None, str]:
    """(the base GGUF's path, "") when it matches `base`, downloading it from `shared` (by
    default the configured artifact store, if any) when it is not here; else (None, why
    not). See the module docstring."""
    path, why = local_base(data_dir, base)
    parsed = _parse(base)
    if path is not None or isinstance(parsed, str) or \
            (base_folder(data_dir, parsed[0]) / BASE_FILE).is_file():
        return path, why  # here and good, malformed, or here and not good: no download
    try:
        shared = shared or configured_store()
    except ConfigError as exc:
        return None, f"{why}, and the artifact store is not configured right: {exc}"
    if shared is None:
        return None, why
    try:
        return fetch_base(shared, Path(data_dir), base), ""
    except (ArtifactError, OSError) as exc:
        return None, f"{why} and cannot be downloaded: {exc}"


def configured_store() -> ArtifactStore | None:
    """The shared artifact store this process's configuration names, or None."""
    from byllm_distill.config import load_config

    config = load_config()
    return ArtifactStore(config.artifacts, config.artifacts_endpoint) \
        if config.artifacts else None


def fetch_base(shared: ArtifactStore, data_dir: Path, base: dict[str, Any]) -> Path:
    """Download `base` from `shared` into this data dir's bases (checked, then renamed into
    place); the path of its GGUF. `ArtifactUnavailable` names the object when it cannot be
    downloaded or does not match."""
    parsed = _parse(base)
    if isinstance(parsed, str):
        raise ArtifactError(parsed)
    key, sha, size = parsed
    bases = Path(data_dir) / BASES_DIR
    bases.mkdir(parents=True, exist_ok=True)
    folder = base_folder(data_dir, key)
    with (bases / f".{key}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one download per base per machine at a time
        path, _ = local_base(data_dir, base)
        if path is not None:
            return path  # another process downloaded it while this one waited
        for stale in bases.glob(f".{key}-*.download"):  # left by a killed download
            shutil.rmtree(stale, ignore_errors=True)
        staged = Path(tempfile.mkdtemp(dir=bases, prefix=f".{key}-", suffix=".download"))
        try:
            shared.download_checked(shared_name(sha), staged / BASE_FILE, sha, size,
                                    "until then this machine serves the version's merged "
                                    "model.gguf")
            (staged / "base.json").write_text(json.dumps(
                {"key": key, "quant": base.get("quant"), "sha256": sha, "bytes": size,
                 "downloaded_from": f"{shared.url}/{shared_name(sha)}"}, indent=2))
            try:
                os.rename(staged, folder)
            except OSError:  # a leftover folder without its GGUF: put the files in it
                os.replace(staged / BASE_FILE, folder / BASE_FILE)
                os.replace(staged / "base.json", folder / "base.json")
        finally:
            shutil.rmtree(staged, ignore_errors=True)
    path = folder / BASE_FILE
    _checked[_seen(path)] = sha  # renaming keeps size and mtime: no second hash
    log.info("byllm-distill: downloaded the base GGUF %s from %s", path, shared.url)
    return path


def publish_base(shared: ArtifactStore, data_dir: Path, manifest: dict[str, Any]) -> bool:
    """Upload the base a version's manifest serves its adapter over, unless the artifact
    store has it already; True when it uploaded. A version without one needs none; a base
    missing here is logged (other machines then serve that version merged)."""
    base = (manifest.get("adapter_serving") or {}).get("base")
    if not base:
        return False
    path, why = local_base(data_dir, base)
    if path is None:
        log.warning("byllm-distill: the version's base is not uploaded, so machines that "
                    "download it serve it merged: %s.", why)
        return False
    uploaded = shared.upload_once(path, shared_name(str(base["sha256"])))
    if uploaded:
        log.info("byllm-distill: uploaded the base GGUF %s to %s", path, shared.url)
    return uploaded


def _seen(path: Path) -> tuple[str, float, int]:
    stat = path.stat()
    return str(path), stat.st_mtime, stat.st_size
