"""Per-call-site model registry: numbered versions, an active pointer, pins, rollback.

What is shared lives in the store, so every app server and worker sees one truth:

    versions     (site, number, status, manifest)   numbers allocated in the store
    site_state   mode, active version, pin, contract fingerprint, earlier actives

What is heavy lives in files: each machine's data dir caches the versions it uses,

    sites/<site>/versions/<N>/manifest.json   + the artifacts it lists (model.gguf, adapter/)

and with `artifacts = "s3://..."` (see artifacts.py) every version is also uploaded there
and downloaded on first use elsewhere, with the shared base GGUF its adapter applies to
uploaded once beside them (bases.py; downloaded where a machine serves it as an adapter).
A version becomes `ready` in the store only after its folder is complete locally (training
writes `versions/<N>.partial/` and renames it) and uploaded; a killed trainer leaves a
`building` row and a `.partial` folder, both ignored (the folder is cleaned by the next
`new_version`). State changes are one transaction each (the row is locked on PostgreSQL; a
file lock serialises processes on one machine for SQLite); a reader sees the old state or
the new one. `verify` checks every file's sha256 against the manifest the store holds
before a version may be loaded or activated. Data from before the store held the registry
(`state.json`, version folders) is imported once, the first time a site is read
(legacy.py).

Modes: `teacher` (default), `shadow` (teacher answers, the active version runs alongside
and is scored), `student` (the active version answers, the teacher is the fallback). A pin
(`teacher` or a version number) overrides the mode and disables automatic decisions.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from byllm_distill.artifacts import (
    ArtifactError,
    ArtifactStore,
    ArtifactUnavailable,
    file_manifest,
    sha256_file,
    verify_files,
)
from byllm_distill.bases import publish_base
from byllm_distill.errors import DistillError, NotFoundError, StoreError
from byllm_distill.legacy import import_local
from byllm_distill.site_state import MODES, SiteState, Version
from byllm_distill.store import tables
from byllm_distill.store.record import utc_now
from byllm_distill.store.store import error_reason

if TYPE_CHECKING:
    from byllm_distill.config import DistillConfig
    from byllm_distill.store import Store

__all__ = ["MODES", "ArtifactError", "ArtifactUnavailable", "SiteRegistry", "SiteState",
           "Version", "file_manifest", "sha256_file", "site_dirname", "state_generation",
           "verify_files"]

_generation = 0  # bumped by every state change this process makes (see `state_generation`)
_generation_lock = threading.Lock()


def site_dirname(site: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", site)


def state_generation() -> int:
    """A counter of this process's own state changes: a cache of site states that saw
    this value unchanged has missed no change made here (others' changes need a re-read)."""
    return _generation


class SiteRegistry:
    def __init__(self, config: DistillConfig, site: str, store: Store | None = None) -> None:
        self.site = site
        self.config = config
        self._store = store
        self.dirname = site_dirname(site)
        self.root = config.data_dir / "sites" / self.dirname
        self.versions_dir = self.root / "versions"
        self.shared = (ArtifactStore(config.artifacts, config.artifacts_endpoint)
                       if config.artifacts else None)

    @classmethod
    def at(cls, data_dir: Path, site: str, store: Store | None = None) -> SiteRegistry:
        """The registry with this process's configuration but `data_dir` as its data dir."""
        from byllm_distill.config import load_config

        config = load_config()
        if Path(data_dir).resolve() != config.data_dir:
            config = replace(config, home=Path(data_dir))
        return cls(config, site, store)

    @property
    def store(self) -> Store:
        if self._store is None:
            from byllm_distill.store.shared import shared_store

            self._store = shared_store(self.config.database_url)
        return self._store

    @contextmanager
    def _db(self, write: bool = False) -> Iterator[Any]:
        """A connection (a transaction when `write`), database errors as `StoreError`."""
        engine = self.store.engine
        try:
            with engine.begin() if write else engine.connect() as conn:
                yield conn
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"cannot reach the registry of {self.site} in "
                             f"{self.store.display_url}: {error_reason(exc)}") from exc

    # -- versions ----------------------------------------------------------------------

    def versions(self) -> list[Version]:
        """Every ready version, oldest first (its files may not be on this machine yet)."""
        import_local(self)
        v = tables.versions.c
        with self._db() as conn:
            rows = conn.execute(sa.select(v.number, v.manifest).where(
                v.site == self.site, v.status == "ready").order_by(v.number)).all()
        return [Version(n, self.versions_dir / str(n), json.loads(m)) for n, m in rows]

    def _manifest(self, number: int) -> dict[str, Any]:
        import_local(self)
        v = tables.versions.c
        with self._db() as conn:
            text = conn.execute(sa.select(v.manifest).where(
                v.site == self.site, v.number == number, v.status == "ready")).scalar()
        if text is None:
            raise NotFoundError(f"{self.site} has no version {number}; see "
                                f"`byllm-distill models {self.site}`.")
        return json.loads(text)

    def version(self, number: int) -> Version:
        """The version, its files on this machine (downloaded from shared artifacts when
        missing here)."""
        manifest = self._manifest(number)
        path = self.versions_dir / str(number)
        if not (path / "manifest.json").is_file():
            if self.shared is None:
                raise ArtifactError(
                    f"{path} is missing: version {number} of {self.site} was trained on "
                    "another machine and no shared artifact store is configured; set "
                    "`artifacts = \"s3://bucket/prefix\"` (BYLLM_DISTILL_ARTIFACTS) on every "
                    "machine, or retrain here.")
            self.versions_dir.mkdir(parents=True, exist_ok=True)
            self.shared.fetch(self.site, self.dirname, number, path, manifest)
        return Version(number, path, manifest)

    def newest(self) -> int:
        """The newest version's number; `NotFoundError` (saying how to train) if none."""
        versions = self.versions()
        if not versions:
            raise NotFoundError(f"{self.site} has no trained student; run "
                                f"`byllm-distill train {self.site}`.")
        return versions[-1].number

    def resolve(self, number: int | None = None, default: str = "active") -> Version:
        """The one way every reader picks a version: `number`, else the active version (or
        the newest when none is active), or with `default="newest"` the newest; its files
        verified. `NotFoundError` (saying how to train) when the site has none."""
        if number is None and default == "active":
            number = self.state().active
        return self.verify(self.newest() if number is None else number)

    @contextmanager
    def new_version(self) -> Iterator[tuple[int, Path]]:
        """Yield `(number, partial folder)`; the caller writes `manifest.json` into it last.
        On success the folder becomes `versions/N`, is uploaded to shared artifacts, and
        the version is `ready` in the store. On any exception (Ctrl-C included) the folder
        is removed and the number is given up; no version appears."""
        import_local(self)
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        with self._locked():
            _remove_stale_partials(self.versions_dir)
            number = self._allocate()
            partial = self.versions_dir / f"{number}.partial"
            partial.mkdir()
            # Held while this version is built: a `.partial` whose lock is free belongs to
            # a process that died, and the next `new_version` removes it.
            building = (self.versions_dir / f"{number}.partial.lock").open("a")
            fcntl.flock(building, fcntl.LOCK_EX)
        final = self.versions_dir / str(number)
        try:
            yield number, partial
            manifest = json.loads((partial / "manifest.json").read_text())
            os.rename(partial, final)
            if self.shared is not None:
                # The shared base first: a version others can see has its base there.
                publish_base(self.shared, self.config.data_dir, manifest)
                self.shared.publish(self.dirname, number, final, manifest)
            self._set_version(number, "ready", manifest)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            shutil.rmtree(final, ignore_errors=True)
            # If even this fails the row stays `building`, which readers ignore the same.
            with suppress(StoreError):
                self._set_version(number, "abandoned", None)
            raise
        finally:
            Path(building.name).unlink(missing_ok=True)
            building.close()

    def _allocate(self) -> int:
        """A version number no machine has taken (the store's primary key decides)."""
        v = tables.versions.c
        local = [int(p.name) for p in self.versions_dir.iterdir() if p.name.isdigit()]
        for _ in range(50):
            try:
                with self._db(write=True) as conn:
                    top = conn.execute(sa.select(sa.func.max(v.number))
                                       .where(v.site == self.site)).scalar()
                    number = max(top or 0, *local, 0) + 1
                    conn.execute(tables.versions.insert().values(
                        site=self.site, number=number, status="building", manifest=None,
                        created_at=utc_now()))
                return number
            except StoreError as exc:
                if not isinstance(exc.__cause__, sa.exc.IntegrityError):
                    raise
        raise StoreError(f"could not allocate a version number for {self.site}; retry")

    def _set_version(self, number: int, status: str, manifest: dict[str, Any] | None) -> None:
        v = tables.versions.c
        with self._db(write=True) as conn:
            conn.execute(tables.versions.update().where(v.site == self.site, v.number == number)
                         .values(status=status, manifest=json.dumps(manifest)
                                 if manifest is not None else None))

    def verify(self, number: int) -> Version:
        """The version, after checking each listed file's size and sha256 against the
        manifest the store holds."""
        version = self.version(number)
        verify_files(self.site, version.path, version.manifest)
        return version

    # -- state -------------------------------------------------------------------------

    def state(self) -> SiteState:
        import_local(self)
        s = tables.site_state.c
        with self._db() as conn:
            row = conn.execute(sa.select(tables.site_state).where(s.site == self.site)).first()
        return _state(row)

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
        """Apply `changes` to the state in one transaction and return the new state."""
        return self._change(lambda _current: changes)

    def _change(self, decide: Callable[[SiteState], dict[str, Any]]) -> SiteState:
        """Read the state (row locked), apply `decide(current)`'s changes, write it back."""
        global _generation
        import_local(self)
        s = tables.site_state.c
        for _ in range(5):
            try:
                with self._locked(), self._db(write=True) as conn:
                    row = conn.execute(sa.select(tables.site_state).where(s.site == self.site)
                                       .with_for_update()).first()
                    new = replace(_state(row), **decide(_state(row)), updated_at=utc_now())
                    if new.mode not in MODES:
                        raise DistillError(f"mode must be one of {', '.join(MODES)}, not "
                                           f"{new.mode!r}")
                    values = {"mode": new.mode, "active": new.active, "pinned": new.pinned,
                              "fingerprint": new.fingerprint,
                              "previous": json.dumps(new.previous),
                              "updated_at": new.updated_at}
                    if row is None:
                        conn.execute(tables.site_state.insert().values(site=self.site,
                                                                       **values))
                    else:
                        conn.execute(tables.site_state.update().where(s.site == self.site)
                                     .values(**values))
            except StoreError as exc:
                if isinstance(exc.__cause__, sa.exc.IntegrityError):
                    continue  # another machine created the row first: read it and retry
                raise
            with _generation_lock:
                _generation += 1
            return new
        raise StoreError(f"could not update the state of {self.site}; retry")

    # -- decisions ---------------------------------------------------------------------

    def activate(self, number: int, mode: str) -> SiteState:
        """Make `number` the active version in `mode` (after verifying its files)."""
        version = self.verify(number)

        def decide(current: SiteState) -> dict[str, Any]:
            previous = list(current.previous)
            if current.active is not None and current.active != number:
                previous.append(current.active)
            return {"active": number, "mode": mode, "previous": previous,
                    "fingerprint": version.manifest.get("fingerprint")}

        return self._change(decide)

    def rollback(self) -> SiteState:
        """Back to the previous active version that still verifies, else to the teacher."""

        def decide(current: SiteState) -> dict[str, Any]:
            previous = list(current.previous)
            while previous:
                candidate = previous.pop()
                try:
                    version = self.verify(candidate)
                except DistillError:
                    continue
                return {"active": candidate, "previous": previous, "mode": "student",
                        "fingerprint": version.manifest.get("fingerprint")}
            return {"active": None, "previous": [], "mode": "teacher", "fingerprint": None}

        return self._change(decide)


def _remove_stale_partials(versions_dir: Path) -> None:
    """Remove `.partial` folders no living process is building (see `new_version`)."""
    for stale in versions_dir.glob("*.partial"):
        with (versions_dir / f"{stale.name}.lock").open("a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # still being built
            shutil.rmtree(stale, ignore_errors=True)
            Path(lock.name).unlink(missing_ok=True)


def _state(row: Any) -> SiteState:
    if row is None:
        return SiteState()
    return SiteState(mode=row.mode, active=row.active, pinned=row.pinned,
                     fingerprint=row.fingerprint, previous=json.loads(row.previous or "[]"),
                     updated_at=row.updated_at or "")
