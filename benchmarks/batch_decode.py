"""What batching would buy: llama.cpp decode cost for several sequences in one batch.

Loads a version's GGUF (e.g. the demo's map student,
`.byllm-distill-demo/sites/rpg.create_next_map/versions/1/model.gguf`) with the runtime's
CPU settings, gives each of K sequences (K = 1, 2, 4, 8) the same short prompt in its own
KV sequence of one context, then decodes `--tokens` steps in which every sequence adds
one token, all in one `llama_decode` per step, and prints ms per step, ms per token and
the throughput relative to one sequence. This measures the forward passes only (92% of a
student map's time, see map_latency.py), not sampling, grammar or item checks, which
stay per sequence. It is the ceiling the serving batcher (runtime/batch.py) can reach on
this machine; benchmarks/serving_load.py measures what it reaches.

    .venv/bin/python benchmarks/batch_decode.py GGUF [--tokens 48] [--threads 2] [--json out.json]

~1 min on 2 cores; run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
PROMPT = (b"<|im_start|>user\nDraw the map of level 3: 20 x 14 tiles, 6 enemies, 9 walls."
          b"<|im_end|>\n<|im_start|>assistant\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gguf", type=Path)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import llama_cpp
    import numpy as np
    from llama_cpp import Llama

    from byllm_distill.runtime.models import model_params_for_this_cpu

    widths = (1, 2, 4, 8)
    with model_params_for_this_cpu():
        llama = Llama(model_path=str(args.gguf), n_ctx=4096, n_batch=512, n_threads=args.threads,
                      n_threads_batch=args.threads, verbose=False)
    # A context of its own on the loaded weights, with room for `widths` sequences (the
    # `Llama`'s own context holds one).
    params = llama_cpp.llama_context_default_params()
    params.n_ctx, params.n_batch, params.n_ubatch = 4096, 512, 512
    params.n_seq_max, params.n_threads, params.n_threads_batch = (max(widths), args.threads,
                                                                  args.threads)
    ctx, n_vocab = llama_cpp.llama_init_from_model(llama.model, params), llama.n_vocab()
    memory = llama_cpp.llama_get_memory(ctx)
    prompt = llama.tokenize(PROMPT, add_bos=False, special=True)
    batch = llama_cpp.llama_batch_init(512, 0, max(widths))
    rows = []
    try:
        for width in widths:
            llama_cpp.llama_memory_clear(memory, True)

            def decode(entries: list[tuple[int, int, int, bool]]) -> None:
                batch.n_tokens = len(entries)
                for i, (token, pos, seq, want) in enumerate(entries):
                    batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, pos, 1
                    batch.seq_id[i][0], batch.logits[i] = seq, want
                code = llama_cpp.llama_decode(ctx, batch)
                if code != 0:
                    raise RuntimeError(f"llama_decode failed ({code})")

            for seq in range(width):
                decode([(t, p, seq, p == len(prompt) - 1) for p, t in enumerate(prompt)])
            nxt = [int(np.argmax(np.ctypeslib.as_array(
                llama_cpp.llama_get_logits_ith(ctx, -1), shape=(n_vocab,))))] * width
            started = time.perf_counter()
            for step in range(args.tokens):
                decode([(nxt[s], len(prompt) + step, s, True) for s in range(width)])
                for s in range(width):  # greedy per sequence, as each caller samples its own
                    nxt[s] = int(np.argmax(np.ctypeslib.as_array(
                        llama_cpp.llama_get_logits_ith(ctx, s), shape=(n_vocab,))))
            per_step = (time.perf_counter() - started) / args.tokens * 1000
            rows.append({"sequences": width, "ms_per_step": round(per_step, 2),
                         "ms_per_token": round(per_step / width, 2)})
    finally:
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_free(ctx)
        llama.close()
    one = rows[0]["ms_per_token"]
    for row in rows:
        row["throughput_vs_one"] = round(one / row["ms_per_token"], 2)
        print(f"{row['sequences']} sequence(s): {row['ms_per_step']:6.2f} ms per step, "
              f"{row['ms_per_token']:5.2f} ms per token, {row['throughput_vs_one']:.2f}x "
              "the tokens/s of one")
    if args.json:
        args.json.write_text(json.dumps({"gguf": str(args.gguf), "threads": args.threads,
                                         "tokens": args.tokens, "rows": rows}, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
