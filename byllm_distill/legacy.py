"""Data from before the store held the registry, imported once per site.

Earlier releases kept a site's state in `sites/<site>/state.json` and its versions only
as folders. The first time a site is read, `import_local` adds the version folders the
store does not know (publishing them to shared artifacts when configured) and the state
(if the store has none), then renames the file `state.json.imported`. Once per site,
data dir and store per process: the router builds a registry on every state read, and
every version made or fetched after the import is in the store already.
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa

from byllm_distill.artifacts import ArtifactError
from byllm_distill.errors import StoreError
from byllm_distill.site_state import SiteState
from byllm_distill.store import Store, tables
from byllm_distill.store.record import utc_now


class SiteRegistry(Protocol):
    """The parts of registry.SiteRegistry an import uses."""

    site: str
    dirname: str
    root: Path
    versions_dir: Path
    shared: Any
    store: Store

    def _locked(self) -> AbstractContextManager[None]: ...

    def _db(self, write: bool = False) -> AbstractContextManager[Any]: ...


_imported: set[tuple[str, str]] = set()  # (site folder, store URL) imported


def import_local(registry: SiteRegistry) -> None:
    """Import this data dir's `state.json` and version folders the store does not know."""
    key = (str(registry.root), registry.store.url)
    if key in _imported:
        return
    _import_once(registry)
    _imported.add(key)

def _import_once(registry: SiteRegistry) -> None:
    legacy = registry.root / "state.json"
    folders = [p for p in registry.versions_dir.iterdir()
               if p.name.isdigit() and (p / "manifest.json").is_file()] \
        if registry.versions_dir.is_dir() else []
    if not folders and not legacy.is_file():
        return
    v = tables.versions.c
    with registry._locked():
        with registry._db() as conn:
            known = set(conn.execute(sa.select(v.number).where(v.site == registry.site))
                        .scalars())
        for folder in sorted(folders, key=lambda p: int(p.name)):
            if int(folder.name) not in known:
                _import_version(registry, int(folder.name), folder)
        if legacy.is_file():
            _import_state(registry, legacy)

def _import_version(registry: SiteRegistry, number: int, folder: Path) -> None:
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except ValueError:
        return  # a corrupt manifest stays unimported; `verify` would refuse it anyway
    if registry.shared is not None:
        registry.shared.publish(registry.dirname, number, folder, manifest)
    try:
        with registry._db(write=True) as conn:
            conn.execute(tables.versions.insert().values(
                site=registry.site, number=number, status="ready",
                manifest=json.dumps(manifest), created_at=manifest.get("created_at")
                or utc_now()))
    except StoreError as exc:
        if not isinstance(exc.__cause__, sa.exc.IntegrityError):
            raise  # else another process imported it first

def _import_state(registry: SiteRegistry, legacy: Path) -> None:
    s = tables.site_state.c
    try:
        data = json.loads(legacy.read_text())
    except ValueError as exc:
        raise ArtifactError(f"{legacy} is corrupt ({exc}); fix or delete it (the site "
                            "then goes back to the teacher).") from exc
    with registry._db(write=True) as conn:
        if conn.execute(sa.select(s.site).where(s.site == registry.site)).first() is None:
            known = SiteState(**{k: v for k, v in data.items()
                                 if k in SiteState.__dataclass_fields__})
            conn.execute(tables.site_state.insert().values(
                site=registry.site, mode=known.mode, active=known.active, pinned=known.pinned,
                fingerprint=known.fingerprint, previous=json.dumps(known.previous),
                updated_at=known.updated_at or utc_now()))
    legacy.rename(legacy.with_name("state.json.imported"))
