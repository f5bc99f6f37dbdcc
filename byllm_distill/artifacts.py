"""Where version files live beyond this machine: shared artifact storage.

`artifacts` unset (the default): a version's folder under this machine's data dir is its
only copy, and the registry reads it in place. `artifacts = "s3://bucket/prefix"` (any
fsspec URL; a folder path works too, e.g. one shared over NFS): training uploads each
version there, and every other machine downloads it into its own data dir on first use.

Contract: `publish` uploads every file a version's manifest lists, then the manifest
last, so a reader that finds a manifest finds the whole version. `fetch` downloads into
`<N>.download` in the local cache, checks each file's size and sha256 against the
manifest the store holds (not the downloaded one), and only then renames the folder into
place; a failed or corrupt download leaves nothing behind and raises `ArtifactError`
naming the file. S3 credentials come from the standard AWS variables; `artifacts_endpoint`
points at an S3-compatible server (MinIO, Ceph, moto).

Content-addressed objects (a shared base GGUF, see bases.py) live beside the sites, named by
their sha256: `upload_once` skips one already there at its size, and `download_checked`
checks what it downloaded against the sha256 the caller expects, deleting it if it differs.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from byllm_distill.errors import DistillError


class ArtifactError(DistillError):
    """A version's files are missing, changed, corrupt or unreachable; it must not load."""


class ArtifactUnavailable(ArtifactError):
    """This machine could not get a good copy from shared storage (unreachable, or the
    download does not match): a problem of this machine's access, not of the version, so
    the site is not rolled back for everyone; this machine's calls go to the teacher."""


# The version manifest's format. Training writes it; `verify_files`, which every reader
# (router, engine, evaluation, `try`) passes before a version loads, checks it. Manifests
# written before the field existed read as format 1.
MANIFEST_FORMAT = 1
READABLE_MANIFEST_FORMATS = (1,)


def check_manifest_format(manifest: dict[str, Any], where: Any, site: str) -> None:
    """Refuse a manifest of a format this code does not read, naming it and the fix: a
    newer one is this machine's problem (an older byllm-distill than the one that trained
    it, e.g. on another team machine), so `ArtifactUnavailable`; an older one needs a
    retrain."""
    found = manifest.get("manifest_format", 1)
    if found in READABLE_MANIFEST_FORMATS:
        return
    if isinstance(found, int) and found > max(READABLE_MANIFEST_FORMATS):
        raise ArtifactUnavailable(
            f"{where}: manifest format {found} is newer than this byllm-distill reads "
            f"(formats {', '.join(map(str, READABLE_MANIFEST_FORMATS))}); upgrade "
            "byllm-distill on this machine (the teacher answers here until then).")
    raise ArtifactError(f"{where}: manifest format {found!r} is not one this byllm-distill "
                        f"reads (formats {', '.join(map(str, READABLE_MANIFEST_FORMATS))}); "
                        f"retrain with `byllm-distill train {site}`.")


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
    check_manifest_format(manifest, folder / "manifest.json", site)
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


class ArtifactStore:
    """One shared artifact location, e.g. `s3://team-models/distill`."""

    def __init__(self, url: str, endpoint: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.endpoint = endpoint
        self._fs: Any = None

    @property
    def fs(self) -> Any:
        if self._fs is None:
            try:
                import fsspec
            except ImportError as exc:  # pragma: no cover - fsspec is a core dependency
                raise ArtifactError("shared artifacts need fsspec; pip install fsspec") from exc
            protocol = self.url.split("://", 1)[0] if "://" in self.url else "file"
            options: dict[str, Any] = {}
            if protocol in ("s3", "s3a"):
                options = {"client_kwargs": {"endpoint_url": self.endpoint}} if self.endpoint \
                    else {}
                options["config_kwargs"] = {"retries": {"max_attempts": 2},
                                            "connect_timeout": 5, "read_timeout": 30}
            try:
                self._fs = fsspec.filesystem(protocol, **options)
            except (ImportError, ValueError) as exc:
                raise ArtifactError(f"cannot open artifact store {self.url}: {exc} (for s3:// "
                                    "install the `team` extra: pip install "
                                    "'byllm-distill[team]')") from exc
        return self._fs

    def _remote(self, site_dir: str, number: int, rel: str = "") -> str:
        base = f"{self.url}/{site_dir}/{number}"
        return f"{base}/{rel}" if rel else base

    def publish(self, site_dir: str, number: int, folder: Path, manifest: dict[str, Any]) -> None:
        """Upload the version's files, the manifest last."""
        try:
            for rel in manifest["files"]:
                self.fs.put_file(str(folder / rel), self._remote(site_dir, number, rel))
            self.fs.pipe_file(self._remote(site_dir, number, "manifest.json"),
                              json.dumps(manifest, indent=2).encode())
        except Exception as exc:  # noqa: BLE001 - any storage client's error, named
            raise ArtifactError(f"cannot upload version {number} to {self.url}: "
                                f"{type(exc).__name__}: {exc}") from exc

    def fetch(self, site: str, site_dir: str, number: int, dest: Path,
              manifest: dict[str, Any]) -> None:
        """Download a version into `dest` (complete and verified, or not at all)."""
        partial = dest.with_name(f"{dest.name}.download")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        try:
            for rel in manifest.get("files", {}):
                remote = self._remote(site_dir, number, rel)
                (partial / rel).parent.mkdir(parents=True, exist_ok=True)
                try:
                    self.fs.get_file(remote, str(partial / rel))
                except Exception as exc:  # noqa: BLE001 - any storage client's error, named
                    raise ArtifactUnavailable(f"cannot download {remote}: {type(exc).__name__}: "
                                        f"{exc}; the teacher answers until the artifact "
                                        "store is reachable.") from exc
            try:
                verify_files(site, partial, manifest)
            except ArtifactError as exc:
                raise ArtifactUnavailable(f"downloaded from {self._remote(site_dir, number)}: "
                                    f"{exc}") from exc
            (partial / "manifest.json").write_text(json.dumps(manifest, indent=2))
            partial.rename(dest)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise

    def upload_once(self, path: Path, rel: str) -> bool:
        """Upload `path` to `<url>/<rel>` unless an object of its size is there already
        (`rel` names the content's sha256, so the same name and size is the same upload;
        readers still check the hash). True when it uploaded."""
        remote = f"{self.url}/{rel}"
        try:
            try:
                if int(self.fs.info(remote)["size"]) == path.stat().st_size:
                    return False
            except FileNotFoundError:
                pass
            self.fs.put_file(str(path), remote)
        except Exception as exc:  # noqa: BLE001 - any storage client's error, named
            raise ArtifactError(f"cannot upload {path} to {remote}: {type(exc).__name__}: "
                                f"{exc}") from exc
        return True

    def download_checked(self, rel: str, dest: Path, sha256: str, size: int,
                         fix: str) -> None:
        """Download `<url>/<rel>` to `dest` (a path of the caller's staging area) and check
        its size and sha256; on any failure `dest` is deleted and `ArtifactUnavailable`
        names the object and `fix`."""
        remote = f"{self.url}/{rel}"
        try:
            try:
                self.fs.get_file(remote, str(dest))
            except Exception as exc:  # noqa: BLE001 - any storage client's error, named
                raise ArtifactUnavailable(f"cannot download {remote}: {type(exc).__name__}: "
                                          f"{exc}; {fix}") from exc
            got = dest.stat().st_size
            if got != size or sha256_file(dest) != sha256:
                raise ArtifactUnavailable(
                    f"{remote} does not match its sha256 {sha256[:12]}... ({got} bytes "
                    f"downloaded, {size} expected; changed or corrupt in the artifact store), "
                    f"refused: delete that object and the next version trained on it uploads "
                    f"it again; {fix}")
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
