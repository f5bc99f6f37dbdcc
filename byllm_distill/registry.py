"""Per-call-site model registry: numbered versions, an active pointer, pins, rollback.

Layout under the data dir, one folder per site (the key made filesystem-safe):

    sites/<site>/versions/<N>/manifest.json   + the artifacts it lists (model.gguf, adapter/)
    sites/<site>/state.json                   mode, active version, pin, contract fingerprint

A version folder appears only complete: training writes `versions/<N>.partial/` and
renames it (atomic on one filesystem). `state.json` is replaced atomically (write a temp
file, `os.replace`), under a file lock so two processes never interleave updates; a
reader sees the old state or the new one, never half of each. `verify` checks every
file's sha256 against the manifest before a version may be loaded or activated.

Modes: `teacher` (default), `shadow` (teacher answers, the active version runs alongside
and is scored), `student` (the active version answers, the teacher is the fallback). A pin
(`teacher` or a version number) overrides the mode and disables automatic decisions.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from byllm_distill.errors import DistillError, NotFoundError
from byllm_distill.store.record import utc_now

MODES = ("teacher", "shadow", "student")


class ArtifactError(DistillError):
    """A version's files are missing, changed or corrupt; it must not be loaded."""


def site_dirname(site: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", site)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_manifest(folder: Path) -> dict[str, dict[str, Any]]:
    """`{relative path: {"sha256", "bytes"}}` for every file under `folder`."""
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel == "manifest.json":
            continue
        out[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    return out


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


class SiteRegistry:
    def __init__(self, data_dir: Path, site: str) -> None:
        self.site = site
        self.root = data_dir / "sites" / site_dirname(site)
        self.versions_dir = self.root / "versions"

    # -- versions ----------------------------------------------------------------------

    def versions(self) -> list[Version]:
        out = []
        if self.versions_dir.is_dir():
            for child in self.versions_dir.iterdir():
                if child.name.isdigit() and (child / "manifest.json").is_file():
                    out.append(self._load(int(child.name)))
        return sorted(out, key=lambda v: v.number)

    def _load(self, number: int) -> Version:
        path = self.versions_dir / str(number)
        try:
            manifest = json.loads((path / "manifest.json").read_text())
        except FileNotFoundError as exc:
            raise NotFoundError(f"{self.site} has no version {number}; see "
                                f"`byllm-distill models {self.site}`.") from exc
        except ValueError as exc:
            raise ArtifactError(f"{path / 'manifest.json'} is corrupt ({exc}); retrain with "
                                f"`byllm-distill train {self.site}`.") from exc
        return Version(number, path, manifest)

    def version(self, number: int) -> Version:
        return self._load(number)

    def newest(self) -> int:
        """The newest version's number; `NotFoundError` (saying how to train) if none."""
        versions = self.versions()
        if not versions:
            raise NotFoundError(f"{self.site} has no trained student; run "
                                f"`byllm-distill train {self.site}`.")
        return versions[-1].number

    @contextmanager
    def new_version(self) -> Iterator[tuple[int, Path]]:
        """Yield `(number, partial folder)`; on success the folder becomes `versions/N`.

        On any exception (Ctrl-C included) the partial folder is removed and no version
        appears. A killed process leaves only a `.partial` folder, which is ignored and
        cleaned up by the next `new_version`.
        """
        import shutil

        self.versions_dir.mkdir(parents=True, exist_ok=True)
        with self._locked():
            for stale in self.versions_dir.glob("*.partial"):
                shutil.rmtree(stale, ignore_errors=True)
            taken = [int(p.name) for p in self.versions_dir.iterdir() if p.name.isdigit()]
            number = max(taken, default=0) + 1
            partial = self.versions_dir / f"{number}.partial"
            partial.mkdir()
        try:
            yield number, partial
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        os.rename(partial, self.versions_dir / str(number))

    def verify(self, number: int) -> Version:
        """The version, after checking each listed file's size and sha256."""
        version = self._load(number)
        verify_files(self.site, version.path, version.manifest)
        return version

    # -- state -------------------------------------------------------------------------

    @property
    def state_path(self) -> Path:
        return self.root / "state.json"

    def state(self) -> SiteState:
        try:
            data = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return SiteState()
        except ValueError as exc:
            raise ArtifactError(f"{self.state_path} is corrupt ({exc}); fix or delete it "
                                "(the site then goes back to the teacher).") from exc
        return SiteState(**{k: v for k, v in data.items() if k in SiteState.__dataclass_fields__})

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def update(self, **changes: Any) -> SiteState:
        """Apply `changes` to the state atomically and return the new state."""
        with self._locked():
            new = replace(self.state(), **changes, updated_at=utc_now())
            if new.mode not in MODES:
                raise DistillError(f"mode must be one of {', '.join(MODES)}, not {new.mode!r}")
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".state.", suffix=".json")
            with os.fdopen(fd, "w") as fh:
                json.dump(asdict(new), fh, indent=2)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.state_path)
            return new

    # -- decisions ---------------------------------------------------------------------

    def activate(self, number: int, mode: str) -> SiteState:
        """Make `number` the active version in `mode` (after verifying its files)."""
        version = self.verify(number)
        current = self.state()
        previous = list(current.previous)
        if current.active is not None and current.active != number:
            previous.append(current.active)
        return self.update(active=number, mode=mode, previous=previous,
                           fingerprint=version.manifest.get("fingerprint"))

    def rollback(self) -> SiteState:
        """Back to the previous active version that still verifies, else to the teacher."""
        current = self.state()
        previous = list(current.previous)
        while previous:
            candidate = previous.pop()
            try:
                version = self.verify(candidate)
            except DistillError:
                continue
            return self.update(active=candidate, previous=previous, mode="student",
                               fingerprint=version.manifest.get("fingerprint"))
        return self.update(active=None, previous=[], mode="teacher", fingerprint=None)


def verify_files(site: str, folder: Path, manifest: dict[str, Any] | None = None) -> None:
    """Check each file a version's manifest lists (size and sha256) before anything loads;
    `ArtifactError` names the first file that is missing or differs, and the fix."""
    folder = Path(folder)
    if manifest is None:
        try:
            manifest = json.loads((folder / "manifest.json").read_text())
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{folder / 'manifest.json'} cannot be read ({exc}); retrain "
                                f"with `byllm-distill train {site}`.") from exc
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise ArtifactError(f"{folder / 'manifest.json'} lists no files; retrain with "
                            f"`byllm-distill train {site}`.")
    fix = f"retrain with `byllm-distill train {site}` or roll back"
    for rel, info in files.items():
        path = folder / rel
        if not path.is_file():
            raise ArtifactError(f"{path} is missing; {fix}.")
        if path.stat().st_size != info.get("bytes") or sha256_file(path) != info.get("sha256"):
            raise ArtifactError(f"{path} does not match its manifest (changed or corrupt); "
                                f"{fix}.")
