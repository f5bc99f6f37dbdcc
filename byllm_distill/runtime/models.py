"""Resident llama.cpp models: merged GGUFs, shared base GGUFs, and LoRA adapters over them.

Contract. `weights_for(spec, serving, data_dir)` returns the `Weights` one engine decodes
with (callers hold the engine module's lock):

- "merged": the version's own `model.gguf`, one `Llama` per file, shared by the engines of
  that file. Also what an "adapter" request gets for a version trained before adapters
  existed, or whose shared base is not on this machine or does not match its manifest
  (bases.py says why; the reason is logged once per version).
- "adapter": one `Llama` per shared base GGUF (and context size), shared by every site
  trained on that base, plus the site's `adapter.gguf` loaded on it once
  (`llama_adapter_lora_init`). A file llama.cpp cannot load (a wrong base, a broken file
  that still matches its hash) raises `ArtifactError`; nothing of it stays loaded.

Every `Llama` comes with one `Batcher` (batch.py): its context holds `max_batch`
sequences in one KV cache of `n_ctx` cells, room for one call of the version's own `n_ctx`
(its longest prompt and answer) or for `max_batch` calls of `SEQ_CELLS` each, whichever is
more; the batcher starts a call only when the cells it may fill are free, and the calls
answering share each forward pass. `Weights.activate()`, which the batcher runs before
each step, sets that engine's adapter (or none) on the context, so no sequence ever
decodes with another site's adapter; `Weights.tag` names the weights (the merged file, or
base + adapter). Narrow heads (head.py): a merged model gets one where its site's grammar
is closed; a shared base whenever `narrow_head` is on (for the adapters after it), and a
site's adapter is served with one only where its LoRA leaves the output layer alone
(`Weights.narrow`). `Resident.size_mb` is what `max_resident_mb` counts: weights, KV cache
and adapters. `release(used)` frees adapters and closes every `Llama` no engine uses any
more, once no call answers on it (its batcher ends first, and its adapters are taken off
its context and freed before it closes).

On CPUs with AMX, llama.cpp 0.3.36's AMX buffer type crashes (SIGSEGV) on quantized
tensors, so there every model, base or merged, is loaded without llama.cpp's extra buffer
types.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from byllm_distill.bases import find_base
from byllm_distill.registry import ArtifactError
from byllm_distill.runtime.batch import Batcher
from byllm_distill.runtime.head import CHECK_CHARS, Head, Tap
from byllm_distill.runtime.load import Turns
from byllm_distill.runtime.spec import StudentSpec

log = logging.getLogger("byllm_distill")
SERVING_MODES = ("merged", "adapter")
BASE_N_CTX = 2048  # a shared base's room for one call: most sites' prompt and answer
DEFAULT_SLOTS = 8  # calls answering at once per loaded model (config: max_batch)
SEQ_CELLS = 512  # KV cells per sequence a context is sized for (a map: ~40 + up to 468)


@dataclass
class Resident:
    """One loaded `Llama` with its batcher and the adapters loaded on it."""

    llama: Any
    batcher: Batcher
    n_ctx: int  # KV cells, shared by its sequences: the most one call may fill
    adapters: dict[str, Any] = field(default_factory=dict)  # adapter path -> llama.cpp handle
    # adapter path -> whether it leaves the output layer alone (a narrow head fits it)
    plain: dict[str, bool] = field(default_factory=dict)

    @property
    def turns(self) -> Turns:
        return self.batcher.turns

    @property
    def size_mb(self) -> float:
        """Its weights, KV cache and adapters (what `max_resident_mb` counts)."""
        import llama_cpp

        model = self.llama.model
        layers, heads = llama_cpp.llama_model_n_layer(model), llama_cpp.llama_model_n_head(model)
        kv_heads = llama_cpp.llama_model_n_head_kv(model)
        head_dim = llama_cpp.llama_model_n_embd(model) // max(heads, 1)
        kv = 2 * layers * kv_heads * head_dim * 2 * self.llama.n_ctx()  # K and V, f16
        files = sum(Path(a).stat().st_size for a in self.adapters)
        return (llama_cpp.llama_model_size(model) + kv + files) / 2**20

    def free_adapters(self, paths: list[str]) -> None:
        """Take every adapter off the context (it may point at one of these) and free
        these; callers hold `turns.exclusive()` or own the resident alone."""
        import llama_cpp

        if not paths:
            return
        llama_cpp.llama_set_adapters_lora(self.llama.ctx, None, 0, None)
        for path in paths:
            llama_cpp.llama_adapter_lora_free(self.adapters.pop(path))
            self.plain.pop(path, None)

    def close(self) -> None:
        self.batcher.close()
        self.free_adapters(list(self.adapters))
        self.llama.close()


@dataclass(frozen=True)
class Weights:
    """What one engine decodes with: a resident `Llama` and, served as an adapter, the
    site's LoRA on it."""

    resident: Resident
    key: str  # the resident's key in `_residents`
    adapter: str | None = None  # adapter path, a key of `resident.adapters`

    @property
    def llama(self) -> Any:
        return self.resident.llama

    @property
    def batcher(self) -> Batcher:
        return self.resident.batcher

    @property
    def serving(self) -> str:
        return "adapter" if self.adapter else "merged"

    @property
    def narrow(self) -> bool:
        """Whether its calls may score only a narrow head's tokens (head.py): a site's
        adapter with a LoRA on the output layer changes that layer, which the head reads
        from the base's file."""
        return self.adapter is None or self.resident.plain.get(self.adapter, False)

    @property
    def tag(self) -> str:
        return f"{self.key}+{self.adapter}" if self.adapter else self.key

    def activate(self) -> None:
        """Put this engine's adapter (or none) on the shared context (the batcher does,
        before each step). llama.cpp changes nothing when the set is already the same."""
        import ctypes

        import llama_cpp

        if not self.resident.adapters:
            return
        if self.adapter is None:
            llama_cpp.llama_set_adapters_lora(self.llama.ctx, None, 0, None)
            return
        handles = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(
            self.resident.adapters[self.adapter])
        scales = (ctypes.c_float * 1)(1.0)
        llama_cpp.llama_set_adapters_lora(self.llama.ctx, handles, 1, scales)


_residents: dict[str, Resident] = {}
_fallbacks_logged: set[str] = set()


def threads() -> int:
    explicit = os.environ.get("BYLLM_DISTILL_THREADS")
    if explicit and explicit.isdigit() and int(explicit) > 0:
        return int(explicit)
    return max(1, min(os.cpu_count() or 1, 8))


@contextlib.contextmanager
def model_params_for_this_cpu() -> Iterator[None]:
    """Turn off llama.cpp's extra buffer types (AMX, repack) where AMX is present.

    `Llama()` takes its model parameters from `llama_model_default_params()` with no way to
    pass `use_extra_bufts`, so the default is swapped for the duration of one load (under
    the engine module's lock, so no other load of ours sees it).
    """
    import llama_cpp.llama as llama_module

    low = llama_module.llama_cpp
    if b"AMX_INT8 = 1" not in low.llama_print_system_info():
        yield
        return
    original = low.llama_model_default_params

    def without_extra_buffers() -> Any:
        params = original()
        params.use_extra_bufts = False
        return params

    low.llama_model_default_params = without_extra_buffers
    try:
        yield
    finally:
        low.llama_model_default_params = original


@contextlib.contextmanager
def context_for_sequences(slots: int, tap: Tap | None = None) -> Iterator[None]:
    """Have the next `Llama()` make its context with room for `slots` sequences in one KV
    cache (its `n_ctx` cells are then theirs together), and `tap`'s evaluation callback
    (head.py). Like the model parameters above, the context's come from a default the
    constructor offers no argument for."""
    import llama_cpp.llama as llama_module

    low = llama_module.llama_cpp
    original = low.llama_context_default_params

    def for_sequences() -> Any:
        params = original()
        params.n_seq_max, params.kv_unified = slots, True
        if tap is not None:
            params.cb_eval, params.cb_eval_user_data = tap.callback, None
        return params

    low.llama_context_default_params = for_sequences
    try:
        yield
    finally:
        low.llama_context_default_params = original


def _resident(key: str, path: Path, n_ctx: int, site: str, slots: int,
              chars: frozenset[str] | None = None) -> Resident:
    """The `Llama` under `key`, loaded with `slots` sequences and room for one call of
    `n_ctx` tokens (or as it was loaded first); with `chars` (a merged model whose site's
    grammar writes only those characters), scoring only the tokens made of them where
    that checks out (head.py)."""
    if key in _residents:
        return _residents[key]
    tap = Tap() if chars is not None else None
    llama = _load(path, n_ctx, site, slots, tap)
    head = None
    if tap is not None:
        import llama_cpp

        tap.size(llama_cpp.llama_model_n_embd(llama.model), llama.n_batch)
        head = Head.build(llama, str(path), chars, tap)  # type: ignore[arg-type]
        if head is None:  # the callback would cost every pass for nothing: load again
            llama.close()
            tap, llama = None, _load(path, n_ctx, site, slots, None)
    _residents[key] = Resident(llama, Batcher(llama, slots, head, tap, str(path)),
                               llama.n_ctx())
    return _residents[key]


def _load(path: Path, n_ctx: int, site: str, slots: int, tap: Tap | None) -> Any:
    from llama_cpp import Llama

    try:
        with model_params_for_this_cpu(), context_for_sequences(slots, tap):
            return Llama(model_path=str(path), n_ctx=max(n_ctx, slots * SEQ_CELLS),
                         n_threads=threads(), n_threads_batch=threads(), verbose=False)
    except (ValueError, RuntimeError, OSError) as exc:
        raise ArtifactError(f"{path} cannot be loaded by llama.cpp ({exc}); retrain with "
                            f"`byllm-distill train {site}`.") from exc


def _base_for(spec: StudentSpec, data_dir: Path | None) -> tuple[Path, Path] | None:
    """(the shared base GGUF, the adapter) of `spec`, or None (logged once): serve merged."""
    if spec.adapter is None or spec.base is None:
        return None
    if data_dir is None:
        from byllm_distill.config import load_config

        data_dir = load_config().data_dir
    path, why = find_base(Path(data_dir), spec.base)
    if path is None and str(spec.folder) not in _fallbacks_logged:
        _fallbacks_logged.add(str(spec.folder))
        log.warning("byllm-distill: %s serves its merged model.gguf: %s.", spec.site, why)
    return None if path is None else (path, spec.adapter)


def weights_for(spec: StudentSpec, serving: str = "merged", data_dir: Path | None = None,
                slots: int = DEFAULT_SLOTS, chars: frozenset[str] | None = None,
                narrow_head: bool = False) -> Weights:
    """The weights `spec`'s engine decodes with (see the module docstring); `slots`: the
    calls its model answers at once; `chars`: what the site's grammar writes, if closed.
    With `narrow_head`, a shared base loaded now gets a narrow head (head.py) even where
    this site's grammar is open, for the sites after it whose grammars are closed."""
    if serving not in SERVING_MODES:
        raise ValueError(f"serving must be one of {', '.join(SERVING_MODES)}, not {serving!r}")
    found = _base_for(spec, data_dir) if serving == "adapter" else None
    if found is None:
        key = str(spec.gguf.resolve())
        return Weights(_resident(key, Path(key), spec.n_ctx, spec.site, slots, chars), key)
    import llama_cpp

    base, adapter_file = found
    n_ctx = max(spec.n_ctx, BASE_N_CTX)
    key = f"{base.resolve()}@{n_ctx}"
    resident = _resident(key, base, n_ctx, spec.site, slots,
                         chars or (CHECK_CHARS if narrow_head else None))
    adapter = str(adapter_file.resolve())
    if adapter not in resident.adapters:
        handle = llama_cpp.llama_adapter_lora_init(resident.llama.model, adapter.encode())
        if not handle:  # the engine module releases the base if nothing else uses it
            raise ArtifactError(f"{adapter_file} cannot be loaded by llama.cpp as a LoRA "
                                f"adapter over {base}; retrain with `byllm-distill train "
                                f"{spec.site}`.")
        resident.adapters[adapter] = handle
        resident.plain[adapter] = not lora_on_output(adapter_file)
    return Weights(resident, key, adapter)


def lora_on_output(adapter: Path) -> bool:
    """Whether a LoRA GGUF changes the output layer (or the tied embedding); unreadable
    counts as yes."""
    try:
        from gguf import GGUFReader

        names = [t.name for t in GGUFReader(str(adapter)).tensors]
    except Exception:  # noqa: BLE001 - llama.cpp loaded it; be safe, keep the whole layer
        return True
    return any(n.startswith(("output.", "token_embd.")) for n in names)


def loaded_mb(used: list[Weights]) -> float:
    """What the models under `used` take (each resident counted once)."""
    return sum(r.size_mb for r in {id(w.resident): w.resident for w in used}.values())


def release(used: list[Weights]) -> None:
    """Free the adapters and close the `Llama`s none of `used` decodes with."""
    keys = {w.key for w in used}
    for key in [k for k in _residents if k not in keys]:
        resident = _residents.pop(key)
        with resident.turns.exclusive():  # calls still answering on it finish first
            resident.close()
    for key, resident in _residents.items():
        kept = {w.adapter for w in used if w.key == key and w.adapter}
        unused = [a for a in resident.adapters if a not in kept]
        if unused:
            with resident.turns.exclusive():
                resident.free_adapters(unused)
