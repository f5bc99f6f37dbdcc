"""What batching would buy: llama.cpp decode cost for several sequences in one batch.

Loads a version's GGUF (e.g. the demo's map student,
`.byllm-distill-demo/sites/rpg.create_next_map/versions/1/model.gguf`) with the runtime's
CPU settings, gives each of K sequences (K = 1, 2, 4, 8) the same short prompt in its own
KV sequence of one context, then decodes `--tokens` steps in which every sequence adds
one token, all in one `llama_decode` per step, and prints ms per step, ms per token and
the throughput relative to one sequence. This measures the forward passes only (~90% of a
student map's time, see map_latency.py), not sampling, grammar or item checks, which
stay per sequence. It is the ceiling the serving batcher (runtime/batch.py) can reach on
this machine; benchmarks/serving_load.py measures what it reaches.

It prints the same table again with each sequence holding `--cells` KV cells first (a
map's prompt and answer fill ~165): the sequences share one KV cache (kv_unified), so
every token's attention reads all of their cells. And, for the single caller, the cost
of one sequence's pass carrying 1, 2, 4 or 8 tokens (jump-forward and drafts put ~2 in a
pass): the ceiling of the serving ratio "eight callers vs one" is the eight-sequence
step's tokens per second over that of one caller's multi-token passes.

    .venv/bin/python benchmarks/batch_decode.py GGUF [--tokens 48] [--cells 165] \
        [--threads 2] [--json out.json]

~2 min on 2 cores; run it on an otherwise idle machine.
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
    parser.add_argument("--cells", type=int, default=165,
                        help="KV cells each sequence holds in the second table (a map: ~165)")
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
    # A context of its own on the loaded weights, with room for `widths` sequences in one
    # KV cache, as the serving batcher makes it (the `Llama`'s own context holds one).
    params = llama_cpp.llama_context_default_params()
    params.n_ctx, params.n_batch, params.n_ubatch = 4096, 512, 512
    params.n_seq_max, params.kv_unified = max(widths), True
    params.n_threads, params.n_threads_batch = args.threads, args.threads
    ctx, n_vocab = llama_cpp.llama_init_from_model(llama.model, params), llama.n_vocab()
    memory = llama_cpp.llama_get_memory(ctx)
    prompt = llama.tokenize(PROMPT, add_bos=False, special=True)
    batch = llama_cpp.llama_batch_init(512, 0, max(widths))

    def decode(entries: list[tuple[int, int, int, bool]]) -> None:
        batch.n_tokens = len(entries)
        for i, (token, pos, seq, want) in enumerate(entries):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, pos, 1
            batch.seq_id[i][0], batch.logits[i] = seq, want
        code = llama_cpp.llama_decode(ctx, batch)
        if code != 0:
            raise RuntimeError(f"llama_decode failed ({code})")

    def best(row: int) -> int:
        return int(np.argmax(np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, row),
                                                   shape=(n_vocab,))))

    def fill(width: int, cells: int) -> list[int]:
        """Empty the cache, give `width` sequences `cells` tokens each (the prompt, then
        the prompt again as filler); each one's next token."""
        llama_cpp.llama_memory_clear(memory, True)
        text = (prompt * (cells // len(prompt) + 1))[:max(cells, len(prompt))]
        for seq in range(width):
            for start in range(0, len(text), 256):
                chunk = text[start:start + 256]
                decode([(t, start + i, seq, start + i == len(text) - 1)
                        for i, t in enumerate(chunk)])
        return [best(-1)] * width

    def steps(width: int, cells: int) -> dict[str, float]:
        nxt = fill(width, cells)
        start = len(prompt) if cells <= len(prompt) else cells
        started = time.perf_counter()
        for step in range(args.tokens):
            decode([(nxt[s], start + step, s, True) for s in range(width)])
            nxt = [best(s) for s in range(width)]  # greedy, as each caller samples its own
        per_step = (time.perf_counter() - started) / args.tokens * 1000
        return {"sequences": width, "cells_each": start, "ms_per_step": round(per_step, 2),
                "ms_per_token": round(per_step / width, 2)}

    def one_pass(tokens: int, cells: int) -> dict[str, float]:
        """One sequence holding `cells`, passes of `tokens` tokens each (what jump-forward
        and drafts send), each pass written over the last one's positions."""
        nxt = fill(1, cells)
        times = []
        for _ in range(args.tokens):
            llama_cpp.llama_memory_seq_rm(memory, 0, cells, -1)
            started = time.perf_counter()
            decode([(nxt[0], cells + i, 0, i == tokens - 1) for i in range(tokens)])
            times.append(time.perf_counter() - started)
        per_pass = float(np.median(times)) * 1000
        return {"tokens_per_pass": tokens, "cells": cells, "ms_per_pass": round(per_pass, 2),
                "ms_per_token": round(per_pass / tokens, 2)}

    try:
        short = [steps(width, len(prompt)) for width in widths]
        filled = [steps(width, args.cells) for width in widths]
        passes = [one_pass(tokens, args.cells) for tokens in (1, 2, 4, 8)]
    finally:
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_free(ctx)
        llama.close()
    for title, rows in ((f"each sequence holding its prompt ({len(prompt)} cells)", short),
                        (f"each sequence holding {args.cells} cells (a map's)", filled)):
        print(title)
        one = rows[0]["ms_per_token"]
        for row in rows:
            row["throughput_vs_one"] = round(one / row["ms_per_token"], 2)
            print(f"  {row['sequences']} sequence(s): {row['ms_per_step']:6.2f} ms per step, "
                  f"{row['ms_per_token']:5.2f} ms per token, {row['throughput_vs_one']:.2f}x "
                  "the tokens/s of one")
    print(f"one sequence holding {args.cells} cells, several tokens per pass")
    for row in passes:
        print(f"  {row['tokens_per_pass']} token(s): {row['ms_per_pass']:6.2f} ms per pass, "
              f"{row['ms_per_token']:5.2f} ms per token")
    eight = filled[-1]["ms_per_token"]
    for row in passes[1:3]:
        print(f"eight sequences vs one caller whose passes carry {row['tokens_per_pass']} tokens: "
              f"{row['ms_per_token'] / eight:.2f}x the tokens/s")
    if args.json:
        args.json.write_text(json.dumps({"gguf": str(args.gguf), "threads": args.threads,
                                         "tokens": args.tokens, "rows": short,
                                         "rows_filled": filled, "tokens_per_pass": passes},
                                        indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
