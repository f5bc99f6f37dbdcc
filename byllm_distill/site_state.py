"""What the registry keeps per site, as plain values: its state (mode, active version,
pin, contract fingerprint, earlier actives) and a version (number, folder, manifest).
A leaf module: registry.py reads and writes them, and anything may import them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODES = ("teacher", "shadow", "student")


@dataclass(frozen=True)
class SiteState:
    mode: str = "teacher"
    active: int | None = None
    pinned: str | None = None  # "teacher" or a version number as text
    fingerprint: str | None = None  # contract the active version was trained on
    previous: list[int] = field(default_factory=list)  # earlier active versions, newest last
    updated_at: str = ""

    def pinned_version(self) -> int | None:
        return int(self.pinned) if self.pinned not in (None, "teacher") else None


@dataclass(frozen=True)
class Version:
    number: int
    path: Path
    manifest: dict[str, Any]

    @property
    def gguf(self) -> Path:
        return self.path / self.manifest.get("gguf", "model.gguf")
