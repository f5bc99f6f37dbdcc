"""One call site, end to end: dataset → LoRA → merge → GGUF, as a new registry version.

`train_site(site)` builds the site's dataset, trains an adapter, exports the quantized GGUF
and writes `<data_dir>/sites/<site>/versions/<N>/` with `dataset/`, `adapter/`,
`model.gguf` (the adapter merged into the base), `adapter.gguf` (the adapter alone, for
serving over the data dir's shared base GGUF, built once per base: bases.py) and
`manifest.json`. The folder is written as `<N>.partial` and renamed when
everything is there (the registry's `new_version`), so a crash or Ctrl-C leaves no version.
The converter is checked before training starts, so a missing setup step fails in a second,
not after the training run.

The manifest's `serving` section is everything the runtime needs: the prompt format the
tokenizer produced, the site's codec (prompt and answer forms, and the limits the per-call
grammar applies, see codec/site.py), the response format (for the validators that check each
answer), `max_tokens` (2 × the longest training answer + 64, or less when a JSON-mode
bounded schema admits nothing longer), `n_ctx` (the site's prompt budget plus
`max_tokens`), the sampling defaults and the number of
validator-checked attempts per call.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from byllm_distill.artifacts import MANIFEST_FORMAT
from byllm_distill.codec.schema import max_json_chars
from byllm_distill.config import DistillConfig, load_config
from byllm_distill.openmp import gives_back_openmp_threads
from byllm_distill.progress import Progress
from byllm_distill.registry import SiteRegistry, file_manifest, sha256_file
from byllm_distill.store import Store
from byllm_distill.store.record import utc_now
from byllm_distill.training import TrainingError
from byllm_distill.training.base_model import load_tokenizer, resolve_base
from byllm_distill.training.chat import prompt_format
from byllm_distill.training.dataset import Dataset, build_dataset
from byllm_distill.training.export import (
    PREPARE_COMMAND,
    QUANT_TYPES,
    base_gguf,
    converter_ready,
    export_adapter,
    export_gguf,
)
from byllm_distill.training.trainer import TrainConfig, library_versions, train

DEFAULT_MAX_TOKENS = 1024
# Teachers sample, and a student decoding greedily collapses onto the most likely value at
# every step (for maps: the same few tiles, repeated until maxItems); sampling keeps the
# teacher's variety. Per-call overrides: `Engine.generate(args, temperature=...)`.
DEFAULT_TEMPERATURE = 0.7
DEFAULT_TOP_P = 0.95
# An answer a validator rejects is drawn again up to this many times in all before the
# router falls back to the teacher; sampling makes the draws differ.
DEFAULT_ATTEMPTS = 3


@dataclass(frozen=True)
class TrainedVersion:
    site: str
    number: int
    path: Path
    manifest: dict[str, Any]


def serving_section(dataset: Dataset, fmt: dict[str, Any]) -> dict[str, Any]:
    tokens = dataset.manifest["tokens"]
    target_max = int(tokens["target"]["max"])
    budget = dataset.codec.inputs.budget or int(tokens["compact_prompt"]["max"])
    max_tokens = 2 * target_max + 64 if target_max else DEFAULT_MAX_TOKENS
    codec = dataset.codec
    if codec.mode == "json" and codec.schema is not None:
        # Every token adds at least one character, so an answer the grammar bounds below
        # max_tokens always completes; the cap keeps a looping student cheap.
        max_tokens = min(max_tokens, max_json_chars(codec.schema) + 1)
    return {
        "prompt_format": fmt,
        "codec": codec.to_dict(),
        "response_format": dataset.response_format,
        "max_tokens": max_tokens,
        # The budget bounds every prompt the student reads (serving compacts to it too).
        "n_ctx": 256 * math.ceil((budget + max_tokens) / 256),
        "temperature": DEFAULT_TEMPERATURE,
        "top_p": DEFAULT_TOP_P,
        "attempts": DEFAULT_ATTEMPTS,
    }


@gives_back_openmp_threads
def train_site(site: str, config: DistillConfig | None = None, store: Store | None = None,
               train_config: TrainConfig | None = None, filtered: bool = True,
               holdout: float = 0.2, seed: int = 0, base: str | None = None,
               quant: str = "Q4_K_M", progress: Progress | None = None,
               enum_names: bool = True) -> TrainedVersion:
    """Train, export and register a new version of `site`'s student (not activated).

    Whatever happens, the OpenMP threads torch parked on this thread are given back, so
    llama.cpp answers in this process at full speed afterwards (byllm_distill/openmp.py).
    """
    if quant not in QUANT_TYPES:
        raise TrainingError(f"quant must be one of {', '.join(QUANT_TYPES)}, not {quant!r}.")
    if not converter_ready():
        raise TrainingError(f"the HF→GGUF converter is not prepared; run `{PREPARE_COMMAND}` "
                            "once (it fetches the llama-cpp-python sdist from PyPI).")
    config = config or load_config()
    store = store or Store(config.database_url)
    train_config = train_config or TrainConfig()
    ref = resolve_base(base)
    tokenizer = load_tokenizer(ref)
    settings = config.site(site)
    dataset = build_dataset(store, site, filtered=filtered, holdout=holdout, seed=seed,
                            tokenizer=tokenizer, enum_names=enum_names,
                            max_length=train_config.max_length,
                            drop_inputs=settings.drop_inputs, keep_last=settings.keep_last,
                            prompt_budget=settings.prompt_budget or None)
    registry = SiteRegistry(config, site, store)
    with registry.new_version() as (number, partial):
        dataset.write(partial / "dataset")
        trained = train(dataset, partial / "adapter", train_config, base=ref, progress=progress)
        exported = export_gguf(ref, partial / "adapter", partial / "model.gguf", quant,
                               workdir=partial)
        export_adapter(ref, partial / "adapter", partial / "adapter.gguf")
        shared_base = base_gguf(ref, config.data_dir, quant)
        manifest = {
            "kind": "student",
            "manifest_format": MANIFEST_FORMAT,
            "site": site,
            "version": number,
            "fingerprint": dataset.fingerprint,
            "created_at": utc_now(),
            "gguf": "model.gguf",
            "base_model": ref.to_dict(),
            "dataset": {"content_sha256": dataset.content_sha256,
                        "filtered": filtered,
                        "counts": dataset.manifest["counts"],
                        "inputs": dataset.manifest["inputs"],
                        "tokens": dataset.manifest["tokens"],
                        "train_ids": [e.record_id for e in dataset.train],
                        "heldout_ids": [e.record_id for e in dataset.heldout]},
            "training": {key: trained.manifest[key] for key in (
                "config", "device", "steps", "examples", "truncated_examples", "first_loss",
                "final_loss", "tokens", "tokens_per_s", "seconds", "peak_rss_mb")},
            "export": {**exported.to_dict(), "sha256": sha256_file(exported.gguf)},
            "adapter_serving": {"adapter": "adapter.gguf", "base": shared_base},
            "serving": serving_section(dataset, prompt_format(tokenizer)),
            "library_versions": library_versions(),
        }
        manifest["files"] = file_manifest(partial)
        (partial / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return TrainedVersion(site, number, registry.versions_dir / str(number), manifest)
