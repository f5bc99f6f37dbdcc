"""What serving needs from a version's manifest (`StudentSpec.from_folder`): the codec,
prompt format, sampling settings and files. A leaf of runtime/: the engine and the
resident models (models.py) both read it. A manifest of another format, or one without a
serving section this version reads, raises `ArtifactError` naming the file and the fix."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from byllm_distill.artifacts import check_manifest_format
from byllm_distill.codec.site import SiteCodec
from byllm_distill.registry import ArtifactError

DEFAULT_MAX_TOKENS = 1024
DEFAULT_ATTEMPTS = 1  # manifests written before validator-checked sampling


@dataclass(frozen=True)
class StudentSpec:
    """What serving needs, read from a version's manifest."""

    site: str
    folder: Path
    gguf: Path
    codec: SiteCodec
    response_format: dict[str, Any] | None
    prompt_format: dict[str, Any]
    max_tokens: int
    n_ctx: int
    version: int | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    attempts: int = DEFAULT_ATTEMPTS
    adapter: Path | None = None  # the LoRA GGUF for adapter serving (bases.py)
    base: dict[str, Any] | None = None  # the shared base it applies to

    @classmethod
    def from_folder(cls, site: str, folder: Path, version: int | None = None) -> StudentSpec:
        path = Path(folder) / "manifest.json"
        fix = f"retrain with `byllm-distill train {site}`"
        try:
            manifest = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise ArtifactError(f"{path} is missing; {fix}.") from exc
        except ValueError as exc:
            raise ArtifactError(f"{path} is corrupt ({exc}); {fix}.") from exc
        check_manifest_format(manifest, path, site)
        try:
            serving, lora = manifest["serving"], manifest.get("adapter_serving")
            return cls(site=site, folder=Path(folder),
                       gguf=Path(folder) / manifest.get("gguf", "model.gguf"),
                       codec=SiteCodec.from_dict(serving["codec"]),
                       response_format=serving.get("response_format"),
                       prompt_format=serving["prompt_format"],
                       max_tokens=int(serving.get("max_tokens", DEFAULT_MAX_TOKENS)),
                       n_ctx=int(serving.get("n_ctx", 2048)), version=version,
                       temperature=float(serving.get("temperature", 0.0)),
                       top_p=float(serving.get("top_p", 1.0)),
                       attempts=max(1, int(serving.get("attempts", DEFAULT_ATTEMPTS))),
                       adapter=Path(folder) / lora["adapter"] if lora else None,
                       base=lora["base"] if lora else None)
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{path} lacks a serving section this version of byllm-distill "
                                f"reads ({exc}); {fix}.") from exc
