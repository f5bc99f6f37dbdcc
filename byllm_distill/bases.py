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
reason (so serving falls back to the version's merged GGUF: a base can be missing on a
machine that downloaded the version from shared storage, and a changed or corrupt one
must not load). Importing this module loads nothing heavy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from byllm_distill.artifacts import sha256_file

BASES_DIR = "bases"
BASE_FILE = "model.gguf"
_checked: dict[tuple[str, float, int], str] = {}  # (path, mtime, size) -> sha256 seen


def base_folder(data_dir: Path, key: str) -> Path:
    return Path(data_dir) / BASES_DIR / key


def file_sha256(path: Path) -> str:
    """The sha256 of `path`, hashed once per process while its size and mtime hold."""
    stat = path.stat()
    seen = (str(path), stat.st_mtime, stat.st_size)
    if seen not in _checked:
        _checked[seen] = sha256_file(path)
    return _checked[seen]


def find_base(data_dir: Path, base: dict[str, Any]) -> tuple[Path | None, str]:
    """(the base GGUF's path, "") when it matches `base` (a manifest's
    `adapter_serving.base`), else (None, why not)."""
    try:
        path = base_folder(data_dir, str(base["key"])) / BASE_FILE
        want_sha, want_bytes = str(base["sha256"]), int(base["bytes"])
    except (KeyError, TypeError, ValueError) as exc:
        return None, f"the manifest's adapter_serving.base is malformed ({exc})"
    if not path.is_file():
        return None, f"the base GGUF {path} is not on this machine"
    if path.stat().st_size != want_bytes or file_sha256(path) != want_sha:
        return None, (f"the base GGUF {path} does not match the version's manifest (changed "
                      f"or corrupt; delete {path.parent} and retrain to rebuild it)")
    return path, ""
