"""How far is each quant from the model it quantizes? Per-token KL against the F16 export.

A student version's `model.gguf` is its merged LoRA quantized (Q4_K_M by default). A
smaller quant reads fewer bytes per forward pass, and a one-token pass here is mostly
reading the weights, so it is faster; the question is what it costs in fidelity. The
map-level measure (quant_fidelity.py, 2x2 KL from the teacher over 128 maps) cannot tell
Q4_K_M and Q4_0 apart with confidence; this one looks at every token.

It exports the version's adapter once more to F16 (no quantization: the reference), then
quantizes that F16 file to each of `--quants` with llama.cpp, and for each one, teacher-
forced over the version's first `--answers` training answers (`dataset/train.jsonl`,
each after its prompt as the student runtime writes it: the manifest's prompt format
around the user message), prints the KL divergence from the F16
model's next-token distribution at every answer position (whole vocabulary, T=1; mean
and p99), how often the best token is the same, the file's size and the median time of a
one-token forward pass (2 threads, ~150 cells in the cache).

    .venv/bin/python benchmarks/quant_per_token.py VERSION_DIR \\
        [--quants Q4_K_M IQ4_XS IQ4_NL Q4_0 Q8_0] [--answers 24] [--json out.json]

Only the embedded base is supported (the version's manifest must name it). ~3 min on 2
cores, ~0.6 GB of temporary files; run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
PASSES = 40  # one-token passes timed per quant


def log_probs(gguf: Path, examples: list[tuple[str, str]], add_bos: bool
              ) -> tuple[list[Any], float]:
    """Per example, the log-probabilities at each answer position; and the median ms of
    a one-token pass."""
    import llama_cpp
    import numpy as np
    from llama_cpp import Llama

    from byllm_distill.runtime.models import model_params_for_this_cpu

    with model_params_for_this_cpu():
        llama = Llama(model_path=str(gguf), n_ctx=1024, n_threads=2, n_threads_batch=2,
                      logits_all=True, verbose=False)
    try:
        out = []
        for prompt, answer in examples:
            head = llama.tokenize(prompt.encode(), add_bos=add_bos, special=True)
            body = llama.tokenize(answer.encode(), add_bos=False, special=False)
            llama.reset()
            llama.eval(head + body)
            logits = np.array(llama.scores[len(head) - 1:len(head) + len(body) - 1],
                              dtype=np.float64)
            logits -= logits.max(axis=1, keepdims=True)
            out.append(logits - np.log(np.exp(logits).sum(axis=1, keepdims=True)))
        memory = llama_cpp.llama_get_memory(llama.ctx)
        filled = llama.n_tokens
        times = []
        for _ in range(PASSES):
            llama_cpp.llama_memory_seq_rm(memory, 0, filled, -1)
            llama.n_tokens = filled
            started = time.perf_counter()
            llama.eval([llama.token_eos()])
            times.append(time.perf_counter() - started)
        return out, statistics.median(times) * 1000
    finally:
        llama.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("version", type=Path)
    parser.add_argument("--quants", nargs="+", default=["Q4_K_M", "IQ4_XS", "IQ4_NL", "Q4_0",
                                                        "Q8_0"])
    parser.add_argument("--answers", type=int, default=24)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import llama_cpp
    import numpy as np

    from byllm_distill.training.base_model import EMBEDDED, resolve_base
    from byllm_distill.training.export import export_gguf

    manifest = json.loads((args.version / "manifest.json").read_text())
    if manifest["base_model"]["name"] != EMBEDDED:
        raise SystemExit(f"{args.version} is trained on {manifest['base_model']['name']}; "
                         f"this benchmark exports from the embedded base ({EMBEDDED}) only")
    lines = (args.version / "dataset" / "train.jsonl").read_text().splitlines()[:args.answers]
    fmt = manifest["serving"]["prompt_format"]  # what the runtime wraps a prompt in
    examples = [(fmt["prefix"] + m[-2]["content"] + fmt["suffix"], m[-1]["content"])
                for m in (json.loads(line)["messages"] for line in lines)]
    add_bos = bool(fmt.get("add_bos"))
    rows = []
    with tempfile.TemporaryDirectory(prefix="quant-per-token-") as tmp:
        f16 = Path(tmp) / "F16.gguf"
        print(f"exporting {args.version / 'adapter'} to F16 ...", flush=True)
        export_gguf(resolve_base(), args.version / "adapter", f16, "F16")
        reference, f16_ms = log_probs(f16, examples, add_bos)
        print(f"F16: {f16.stat().st_size / 1e6:.1f} MB, one-token pass {f16_ms:.2f} ms",
              flush=True)
        for quant in args.quants:
            path = Path(tmp) / f"{quant}.gguf"
            params = llama_cpp.llama_model_quantize_default_params()
            params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant}")
            params.nthread = 2
            if llama_cpp.llama_model_quantize(str(f16).encode(), str(path).encode(),
                                              ctypes.byref(params)) != 0:
                raise SystemExit(f"quantizing to {quant} failed")
            got, ms = log_probs(path, examples, add_bos)
            kls, same, positions = [], 0, 0
            for ref, mine in zip(reference, got, strict=True):
                kls.extend((np.exp(ref) * (ref - mine)).sum(axis=1))
                same += int((ref.argmax(axis=1) == mine.argmax(axis=1)).sum())
                positions += len(ref)
            row = {"quant": quant, "mb": round(path.stat().st_size / 1e6, 1),
                   "kl_mean": round(float(np.mean(kls)), 4),
                   "kl_p99": round(float(np.quantile(kls, 0.99)), 4),
                   "best_token_same": round(same / positions, 4), "positions": positions,
                   "one_token_pass_ms": round(ms, 2)}
            rows.append(row)
            print(f"{quant}: {row['mb']} MB, KL from F16 per token mean {row['kl_mean']:.4f} "
                  f"(p99 {row['kl_p99']:.4f}), best token same {row['best_token_same']:.1%} "
                  f"of {positions}, one-token pass {ms:.2f} ms", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"version": str(args.version), "answers": len(examples),
                                         "f16_one_token_pass_ms": round(f16_ms, 2),
                                         "rows": rows}, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
