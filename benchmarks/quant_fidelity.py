"""Is a faster quant (or decoder) as close to the teacher? Two exports of one adapter, or
one served two ways, on the same maps.

`byllm-distill train SITE --quant Q4_0` exports the same LoRA to a smaller, faster GGUF than
the default Q4_K_M. Before a default changes, its answers must be as close to the teacher's
as before on the same inputs. This answers `--calls` maps for fresh levels (seeded, the
inputs of serving_load.py; the offline teacher's maps for the same levels are the
reference) with each version folder, one caller, seed i for input i, and prints per folder:
p50/p95 seconds per map, validity (served answers passing every validator, with a Wilson
95% lower bound) and the 2x2-pattern KL divergence from the teacher's maps (lower is
closer); then the KL difference (second minus first) with a 95% paired bootstrap interval
over the maps (the same resampled maps for both), and the p50 ratio.

    .venv/bin/python benchmarks/quant_fidelity.py Q4_K_M_VERSION_DIR Q4_0_VERSION_DIR \\
        [--calls 128] [--json out.json]

A version folder with another quant of the same adapter: copy the folder, run
`training.export.export_gguf(resolve_base(), DIR / "adapter", DIR / "model.gguf", "Q4_0")`
and rewrite its manifest's `files` (`registry.file_manifest(DIR)`) and `export.sha256`.
With `--whole-layer-first` the first folder is served with llama.cpp's whole output
layer instead of the narrow head (runtime/head.py); give one folder twice to compare the
two heads on the same inputs and seeds. It then also compares them directly: teacher-
forced over the teacher's maps for the first 32 inputs, the KL divergence between the two
heads' next-token distributions at each position (at the version's temperature, over the
tokens the map grammar can write) and how often their best token agrees.
~5 min for 128 maps x 2 on 2 cores; run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
from pathlib import Path
from typing import Any

from serving_load import SITE, _pct, inputs, teacher_maps, whole_output_layer

BOOTSTRAP = 2000


def answer_all(folder: Path, maps: list[dict[str, Any]], whole_layer: bool = False
               ) -> list[Any]:
    from byllm_distill.runtime.engine import engine_for, unload

    with whole_output_layer() if whole_layer else contextlib.nullcontext():
        engine = engine_for(SITE, folder=folder)
    try:
        return [engine.generate(a, seed=i) for i, a in enumerate(maps)]
    finally:
        unload(SITE)


def forced_logits(folder: Path, maps: list[dict[str, Any]], reference: list[Any],
                  whole_layer: bool) -> tuple[list[Any], Any]:
    """Teacher-forced over the teacher's own maps: at each answer position, the logits of
    the tokens the map grammar can write (the narrow head's tokens), and those tokens."""
    import numpy as np

    from byllm_distill.runtime.decode import Eval
    from byllm_distill.runtime.engine import engine_for, site_chars, unload
    from byllm_distill.runtime.head import kept_tokens

    with whole_output_layer() if whole_layer else contextlib.nullcontext():
        engine = engine_for(SITE, folder=folder)
    try:
        chars = site_chars(engine.spec)
        ids = np.asarray(kept_tokens(engine.llama, chars))
        out = []
        for args, answer in zip(maps, reference, strict=True):
            prompt = engine.prompt(args)[1]
            text = engine.spec.codec.encode(answer).encode()
            tokens = engine.llama.tokenize(text, add_bos=False, special=False)

            def loop(prompt=prompt, tokens=tokens):
                rows = [(yield Eval(list(prompt), 0))[ids]]
                for pos, token in enumerate(tokens[:-1], start=len(prompt)):
                    rows.append((yield Eval([token], pos))[ids])
                return rows

            out.append(np.array(engine.batcher.run(
                loop(), engine.weights.tag, engine.weights.activate,
                len(prompt) + len(tokens), chars)))
        return out, engine.spec.temperature
    finally:
        unload(SITE)


def token_divergence(whole: list[Any], narrow: list[Any], temperature: float
                     ) -> dict[str, Any]:
    """Per answer position: KL(whole || narrow) between the two heads' next-token
    distributions over the kept tokens at the serving temperature, and how often their
    best token agrees."""
    import numpy as np

    a, b = np.concatenate(whole), np.concatenate(narrow)
    t = max(temperature, 1e-3)

    def log_softmax(x: Any) -> Any:
        z = x / t - np.max(x / t, axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    la, lb = log_softmax(a), log_softmax(b)
    kl_rows = (np.exp(la) * (la - lb)).sum(axis=1)
    return {"positions": len(a), "temperature": temperature,
            "kl_mean": float(kl_rows.mean()), "kl_p99": float(np.percentile(kl_rows, 99)),
            "kl_max": float(kl_rows.max()),
            "same_best_token": float((a.argmax(axis=1) == b.argmax(axis=1)).mean()),
            "largest_logit_difference": float(np.abs(a - b).max())}


def kl(reference: list[Any], rows: list[Any], picks: list[int]) -> float:
    from byllm_distill.rpg.report_metrics import pattern_distance

    return pattern_distance([reference[i] for i in picks],
                            [rows[i].output for i in picks
                             if rows[i].output is not None])["kl_teacher_student"]


def summary(rows: list[Any], reference: list[Any]) -> dict[str, Any]:
    from byllm_distill.stats import wilson_lower

    valid = sum(bool(g.passed and g.passed[-1]) for g in rows)
    return {"calls": len(rows), "p50_s": _pct([g.seconds for g in rows], 50),
            "p95_s": _pct([g.seconds for g in rows], 95), "valid": valid,
            "valid_lower_95": round(wilson_lower(valid, len(rows)), 3),
            "kl_2x2": round(kl(reference, rows, list(range(len(rows)))), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument("--calls", type=int, default=128)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--whole-layer-first", action="store_true",
                        help="serve the first folder with llama.cpp's whole output layer "
                             "(no narrow head, runtime/head.py): give the same folder twice "
                             "to compare the two heads")
    args = parser.parse_args()
    maps = inputs(args.calls, 11)
    reference = teacher_maps(maps, 11)
    labels = [f"{args.first}" + (" (whole output layer)" if args.whole_layer_first else ""),
              f"{args.second}"]
    rows = [answer_all(args.first, maps, args.whole_layer_first),
            answer_all(args.second, maps)]
    result: dict[str, Any] = {"calls": args.calls}
    for label, answered in zip(labels, rows, strict=True):
        result[label] = summary(answered, reference)
        print(f"{label:>40}: {result[label]}", flush=True)
    rng = random.Random(0)
    diffs = []
    for _ in range(BOOTSTRAP):
        picks = [rng.randrange(args.calls) for _ in range(args.calls)]
        diffs.append(kl(reference, rows[1], picks) - kl(reference, rows[0], picks))
    diffs.sort()
    first, second = result[labels[0]], result[labels[1]]
    result["kl_difference"] = round(second["kl_2x2"] - first["kl_2x2"], 4)
    result["kl_difference_95"] = [round(diffs[int(0.025 * BOOTSTRAP)], 4),
                                  round(diffs[int(0.975 * BOOTSTRAP) - 1], 4)]
    result["p50_ratio"] = round(second["p50_s"] / first["p50_s"], 3)
    print(f"KL second - first: {result['kl_difference']} (95% paired bootstrap "
          f"{result['kl_difference_95']}); p50 second / first: {result['p50_ratio']}x; "
          f"mean of bootstrap differences {statistics.mean(diffs):.4f}")
    if args.whole_layer_first:
        n = min(32, args.calls)
        whole, temperature = forced_logits(args.first, maps[:n], reference[:n], True)
        narrow, _ = forced_logits(args.second, maps[:n], reference[:n], False)
        result["teacher_forced"] = token_divergence(whole, narrow, temperature)
        print(f"teacher-forced over {n} teacher maps, the two heads' next-token "
              f"distributions: {result['teacher_forced']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
