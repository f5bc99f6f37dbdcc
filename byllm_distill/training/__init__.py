"""Per-call-site training: dataset → LoRA/QLoRA → merge → GGUF.

Modules: `dataset` (compact prompts, dedupe, split, manifest, JSONL), `base_model`
(resolve and cache the base model), `trainer` (the LoRA loop), `export` (merge, convert,
quantize) and `pipeline` (all of it for one site, into a registry version). Importing
this package is cheap; torch, transformers and peft load inside the functions that use them.
"""

from byllm_distill.errors import DistillError


class TrainingError(DistillError):
    """A dataset, base model, training run or export cannot be made as asked."""


__all__ = ["TrainingError"]
