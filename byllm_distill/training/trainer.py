"""LoRA / QLoRA fine-tuning of a base model on one call site's dataset.

A plain loop you can read top to bottom: encode the examples (the prompt exactly as the
student runtime will build it, the answer followed by the chat template's end-of-turn
marker), mask the prompt so the loss covers the answer tokens only, then AdamW with a
linear warmup and linear decay for `steps` optimizer steps (or `epochs` passes), shuffled
per epoch from `seed`. Gradient checkpointing stays off: on CPU it halves the speed and
memory is not the constraint at these sizes. QLoRA loads the base in 4-bit nf4 through
bitsandbytes (works on CPU as well as CUDA).

`train(...)` writes its output folder as `<dest>.partial` and renames it to `<dest>` at the
end, so an interrupted run (Ctrl-C, kill) never leaves something that looks like an
adapter; on an exception or Ctrl-C the partial folder is removed. The folder holds the PEFT
adapter (`adapter_config.json`, `adapter_model.safetensors`) and `training.json`: the
config, the base model, the dataset hash and record ids, library versions, final loss,
tokens/s, wall time and peak RSS.
"""

from __future__ import annotations

import json
import math
import os
import random
import resource
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from byllm_distill.progress import Progress, Step, report
from byllm_distill.store.record import utc_now
from byllm_distill.training import TrainingError
from byllm_distill.training.base_model import (
    BaseModelRef,
    load_model,
    load_tokenizer,
    resolve_base,
)
from byllm_distill.training.chat import prompt_format
from byllm_distill.training.dataset import Dataset, Example

ALL_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# The default budget when neither steps nor epochs is given: two passes, at most 800 steps
# (about 25 minutes at ~230 tokens/s on 2 cores for ~340-token examples). See
# benchmarks/train_and_serve.py for what it buys on the RPG map site.
DEFAULT_EPOCHS = 2.0
DEFAULT_MAX_STEPS = 800
IGNORE = -100
DEVICES = ("auto", "cpu", "cuda")


def pick_device(wanted: str) -> str:
    """`wanted` ("auto", "cpu" or "cuda") → the torch device to train on."""
    import torch

    if wanted == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if wanted == "cuda":
        raise TrainingError("device 'cuda' was asked for but torch sees no CUDA GPU here "
                            "(check the driver and a CUDA build of torch), or use "
                            "--device auto.")
    return "cpu"


def budget_help() -> str:
    """The default budget in words, for progress lines and `--help`."""
    return f"{DEFAULT_EPOCHS:g} epochs, at most {DEFAULT_MAX_STEPS} steps"


@dataclass
class TrainConfig:
    rank: int = field(default=16, metadata={"help": "LoRA rank r."})
    alpha: int = field(default=32, metadata={"help": "LoRA alpha (scale = alpha / rank)."})
    dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    target_modules: tuple[str, ...] = field(default=ALL_PROJECTIONS, metadata={
        "help": "Linear layers that get adapters; default every attention and MLP projection."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak AdamW learning rate."})
    steps: int | None = field(default=None, metadata={
        "help": "Optimizer steps; exclusive with epochs."})
    epochs: float | None = field(default=None, metadata={
        "help": f"Passes over the training split (default: {DEFAULT_EPOCHS} passes, at most "
                f"{DEFAULT_MAX_STEPS} steps, when steps is unset too)."})
    warmup_steps: int = field(default=10, metadata={"help": "Linear warmup steps."})
    max_length: int = field(default=1024, metadata={
        "help": "Longest example in tokens; longer answers are cut (and counted)."})
    batch_size: int = field(default=1, metadata={
        "help": "Examples per step. 1 avoids padding, which is faster on CPU."})
    seed: int = field(default=0, metadata={"help": "Seed for LoRA init and data order."})
    qlora: bool = field(default=False, metadata={
        "help": "Load the base in 4-bit nf4 (bitsandbytes) and train LoRA on top."})
    threads: int = field(default=2, metadata={"help": "torch CPU threads."})
    device: str = field(default="auto", metadata={
        "help": "Where to train: cpu, cuda, or auto (cuda when a GPU is visible).",
        "choices": DEVICES})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})

    def __post_init__(self) -> None:
        self.target_modules = tuple(self.target_modules)
        if self.steps is not None and self.epochs is not None:
            raise TrainingError("give either 'steps' or 'epochs', not both.")
        for name in ("rank", "alpha", "max_length", "batch_size", "threads"):
            if getattr(self, name) < 1:
                raise TrainingError(f"'{name}' must be at least 1, got {getattr(self, name)!r}.")
        if self.steps is not None and self.steps < 1:
            raise TrainingError(f"'steps' must be at least 1, got {self.steps!r}.")
        if self.epochs is not None and not self.epochs > 0:
            raise TrainingError(f"'epochs' must be positive, got {self.epochs!r}.")
        if not 0.0 <= self.dropout < 1.0:
            raise TrainingError(f"'dropout' must be in [0, 1), got {self.dropout!r}.")
        if not self.learning_rate > 0:
            raise TrainingError(f"'learning_rate' must be positive, got {self.learning_rate!r}.")
        if self.warmup_steps < 0:
            raise TrainingError(f"'warmup_steps' must be >= 0, got {self.warmup_steps!r}.")
        if not self.target_modules:
            raise TrainingError("'target_modules' must name at least one layer.")
        if self.device not in DEVICES:
            raise TrainingError(f"'device' must be one of {', '.join(DEVICES)}, got "
                                f"{self.device!r}.")

    def total_steps(self, examples: int) -> int:
        if self.steps is not None:
            return self.steps
        if self.epochs is not None:
            return max(1, math.ceil(self.epochs * examples / self.batch_size))
        return max(1, min(DEFAULT_MAX_STEPS,
                          math.ceil(DEFAULT_EPOCHS * examples / self.batch_size)))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["target_modules"] = list(self.target_modules)
        return data


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    truncated: bool


@dataclass
class TrainResult:
    path: Path
    steps: int
    final_loss: float
    tokens_per_s: float
    seconds: float
    peak_rss_mb: float
    manifest: dict[str, Any]


def encode(tokenizer: Any, fmt: dict[str, Any], example: Example, max_length: int) -> Encoded:
    """Token ids and labels (-100 on the prompt) for one example."""
    text = fmt["prefix"] + example.prompt + fmt["suffix"]
    prompt = tokenizer(text, add_special_tokens=False)["input_ids"]
    if fmt.get("add_bos") and tokenizer.bos_token_id is not None:
        prompt = [tokenizer.bos_token_id, *prompt]
    answer = tokenizer(example.target + fmt["answer_suffix"], add_special_tokens=False)[
        "input_ids"]
    ids = prompt + answer
    labels = [IGNORE] * len(prompt) + answer
    truncated = len(ids) > max_length
    if len(prompt) >= max_length:
        raise TrainingError(f"record {example.record_id}: its prompt alone is {len(prompt)} "
                            f"tokens, over max_length {max_length}; raise max_length.")
    return Encoded(ids[:max_length], labels[:max_length], truncated)


def _collate(batch: list[Encoded], pad_id: int, device: str) -> dict[str, Any]:
    import torch

    width = max(len(e.input_ids) for e in batch)
    ids = [e.input_ids + [pad_id] * (width - len(e.input_ids)) for e in batch]
    labels = [e.labels + [IGNORE] * (width - len(e.labels)) for e in batch]
    mask = [[1] * len(e.input_ids) + [0] * (width - len(e.input_ids)) for e in batch]
    return {"input_ids": torch.tensor(ids, device=device),
            "labels": torch.tensor(labels, device=device),
            "attention_mask": torch.tensor(mask, device=device)}


def answer_loss(model: Any, inputs: dict[str, Any]) -> Any:
    """Mean next-token cross-entropy over the answer tokens, as `model(**inputs).loss`, but
    the vocabulary projection runs only where a label is kept: prompt positions (most of a
    short-answer site's tokens) skip the largest matrix of a small model and its softmax."""
    import torch

    core = model.get_base_model() if hasattr(model, "get_base_model") else model
    body, head = getattr(core, "model", None), getattr(core, "lm_head", None)
    if body is None or head is None:  # not a decoder with a separate head: the plain way
        return model(**inputs).loss
    hidden = body(input_ids=inputs["input_ids"],
                  attention_mask=inputs["attention_mask"]).last_hidden_state
    labels = inputs["labels"][:, 1:]
    keep = labels != IGNORE
    logits = head(hidden[:, :-1][keep]).float()
    return torch.nn.functional.cross_entropy(logits, labels[keep])


def batch_loss(model: Any, tokenizer: Any, examples: list[Example], max_length: int = 1024,
               fmt: dict[str, Any] | None = None) -> float:
    """Mean loss per answer token over `examples` (no gradient): the before/after probe."""
    import torch

    fmt = fmt or prompt_format(tokenizer)
    device = next(model.parameters()).device.type
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for example in examples:
            enc = encode(tokenizer, fmt, example, max_length)
            batch = _collate([enc], pad, device)
            n = sum(1 for label in enc.labels[1:] if label != IGNORE)
            total += float(answer_loss(model, batch)) * n
            count += n
    model.train(was_training)
    return total / max(count, 1)


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("byllm-distill", "torch", "transformers", "peft", "bitsandbytes",
                 "accelerate", "llama-cpp-python", "gguf"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / (warmup + 1)
    return max(0.0, (total - step) / max(1, total - warmup))


def make_peft_model(model: Any, config: TrainConfig) -> Any:
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if config.qlora:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                      target_modules=list(config.target_modules), bias="none",
                      task_type="CAUSAL_LM")
    try:
        return get_peft_model(model, lora)
    except ValueError as exc:
        raise TrainingError(f"'target_modules' {list(config.target_modules)} do not match the "
                            f"base model's layers ({exc}).") from exc


def train(dataset: Dataset, dest: Path, config: TrainConfig | None = None,
          base: BaseModelRef | None = None, progress: Progress | None = None) -> TrainResult:
    """Train a LoRA adapter on `dataset.train` and write it to `dest` (see module docstring);
    each step is reported to `progress` (progress.py) with its loss and tokens/s."""
    import torch

    config = config or TrainConfig()
    base = base or resolve_base()
    if not dataset.train:
        raise TrainingError(f"the dataset of {dataset.site} has no training examples; capture "
                            "more calls or lower --holdout.")
    dest = Path(dest)
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    device = pick_device(config.device)

    tokenizer = load_tokenizer(base)
    fmt = prompt_format(tokenizer)
    encoded = [encode(tokenizer, fmt, e, config.max_length) for e in dataset.train]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    model = make_peft_model(load_model(base, qlora=config.qlora, device=device), config)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate,
                                  weight_decay=config.weight_decay)
    total = config.total_steps(len(encoded))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: _lr_factor(s, config.warmup_steps, total))

    order: list[int] = []
    tokens = 0
    losses: list[float] = []
    started = time.perf_counter()
    partial.mkdir(parents=True)
    try:
        for step in range(total):
            batch = []
            while len(batch) < config.batch_size:
                if not order:
                    order = list(range(len(encoded)))
                    rng.shuffle(order)
                batch.append(encoded[order.pop()])
            inputs = _collate(batch, pad, device)
            loss = answer_loss(model, inputs)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            tokens += int(inputs["attention_mask"].sum())
            losses.append(float(loss.detach()))
            rate = tokens / (time.perf_counter() - started)
            report(progress, Step(f"train {dataset.site}", step + 1, total, "step",
                                  {"loss": f"{losses[-1]:.3f}", "tok_s": f"{rate:.0f}"}))
        seconds = time.perf_counter() - started
        model.save_pretrained(partial)
        tail = losses[-max(1, min(10, len(losses))):]
        manifest = {
            "kind": "adapter",
            "created_at": utc_now(),
            "site": dataset.site,
            "fingerprint": dataset.fingerprint,
            "base_model": base.to_dict(),
            "config": config.to_dict(),
            "device": device,
            "dataset": {"content_sha256": dataset.content_sha256,
                        "filtered": dataset.manifest["options"]["filtered"],
                        "train_ids": [e.record_id for e in dataset.train],
                        "heldout_ids": [e.record_id for e in dataset.heldout]},
            "prompt_format": fmt,
            "steps": total,
            "examples": len(encoded),
            "truncated_examples": sum(1 for e in encoded if e.truncated),
            "final_loss": round(sum(tail) / len(tail), 4),
            "first_loss": round(losses[0], 4),
            "tokens": tokens,
            "tokens_per_s": round(tokens / seconds, 1),
            "seconds": round(seconds, 1),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "library_versions": library_versions(),
        }
        (partial / "training.json").write_text(json.dumps(manifest, indent=2))
        if dest.exists():
            shutil.rmtree(dest)
        os.rename(partial, dest)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return TrainResult(dest, total, manifest["final_loss"], manifest["tokens_per_s"],
                       manifest["seconds"], manifest["peak_rss_mb"], manifest)


def load_adapter(base: BaseModelRef, adapter_dir: Path, qlora: bool = False) -> Any:
    """The base model with the adapter in `adapter_dir` applied (not merged)."""
    from peft import PeftModel
    from safetensors import SafetensorError

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise TrainingError(f"{adapter_dir} holds no adapter (adapter_config.json missing); "
                            "retrain with `byllm-distill train SITE`.")
    model = load_model(base, qlora=qlora)
    try:
        return PeftModel.from_pretrained(model, adapter_dir)
    except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as exc:
        raise TrainingError(f"adapter {adapter_dir} is corrupt or does not fit {base.name} "
                            f"({type(exc).__name__}: {exc}); retrain with "
                            "`byllm-distill train SITE`.") from exc
