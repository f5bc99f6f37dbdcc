"""Train and serve a student for `rpg.create_next_map`: the project's core benchmark.

Uses the configured store when it holds at least `--records` valid map records, else
plays the offline teacher into a temporary data folder until it does. Then builds the
dataset (filtered, 20% held-out), trains with the default budget (or `--steps/--epochs`),
exports the GGUF, and answers every held-out input with the student. Prints:

- prompt tokens per example before (teacher messages through the chat template, and with
  the response schema) and after compaction, and the ratio;
- training tokens/s, wall time per epoch, peak RSS of this process;
- export time and GGUF size;
- student p50/p95 latency per map and its generation tokens/s (first call excluded, it
  pages the model in);
- student validity (every `check_map` verdict passes) on the held-out split, next to the
  teacher's on the same inputs: first-attempt validity, and served validity after the
  runtime's validator-checked attempts (the answer a caller gets before any teacher
  fallback), with the mean number of attempts. Latency counts every attempt.

    .venv/bin/python benchmarks/train_and_serve.py [--records 200] [--steps N | --epochs E]
        [--quant Q4_K_M|Q4_0|Q8_0|F16] [--json out.json] [--serve-only VERSION_DIR]
        [--temperature T] [--unguided]

Targets on 2 cores: >= 120 training tokens/s; compact prompts >= 3x smaller; student p50
<= 1.5 s per map; student validity >= 90% after the default training budget.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

SITE = "rpg.create_next_map"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[index]


def ensure_records(wanted: int, seed: int) -> tuple[str, int]:
    """(data dir in use, valid map records there), generating a corpus when short."""
    from byllm_distill.config import load_config
    from byllm_distill.store import RecordFilter, Store

    config = load_config()
    have = Store(config.database_url).count(RecordFilter(site=SITE, status="ok", valid=True))
    if have >= wanted:
        return str(config.data_dir), have
    home = tempfile.mkdtemp(prefix="byllm-distill-bench-")
    os.environ["BYLLM_DISTILL_HOME"] = home
    os.environ.pop("BYLLM_DISTILL_STORE_URL", None)
    from byllm_distill import capture
    from byllm_distill.rpg.corpus import generate_corpus

    capture.reset_capture()
    levels = 5
    print(f"store has {have} valid {SITE} records; generating {wanted} into {home}",
          flush=True)
    generate_corpus(runs=math.ceil(wanted / levels), levels_per_run=levels, seed=seed,
                    progress=False)
    config = load_config()
    return home, Store(config.database_url).count(
        RecordFilter(site=SITE, status="ok", valid=True))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--epochs", type=float)
    parser.add_argument("--quant", default="Q4_K_M", choices=["Q4_K_M", "Q4_0", "Q8_0", "F16"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--serve-only", type=Path, metavar="VERSION_DIR",
                        help="skip training: measure serving of this version folder")
    parser.add_argument("--temperature", type=float,
                        help="sampling temperature (default the version's; 0 is greedy)")
    parser.add_argument("--unguided", action="store_true",
                        help="serve without the item checks of guided decoding (baseline)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(2)
    from byllm_distill.config import load_config
    from byllm_distill.rpg.checks import check_map
    from byllm_distill.runtime.engine import engine_for
    from byllm_distill.store import RecordFilter, Store
    from byllm_distill.training.pipeline import TrainedVersion, train_site
    from byllm_distill.training.trainer import DEFAULT_EPOCHS, DEFAULT_MAX_STEPS, TrainConfig

    train_config = TrainConfig(steps=args.steps, epochs=args.epochs, seed=args.seed)
    if args.serve_only:
        folder = args.serve_only.resolve()
        home = str(folder.parents[3])
        os.environ["BYLLM_DISTILL_HOME"] = home
        store = Store(load_config().database_url)
        available = store.count(RecordFilter(site=SITE, status="ok", valid=True))
        manifest = json.loads((folder / "manifest.json").read_text())
        trained = TrainedVersion(SITE, int(folder.name), folder, manifest)
        pipeline_s = 0.0
    else:
        home, available = ensure_records(args.records, args.seed)
        config = load_config()
        store = Store(config.database_url)
        print(f"data dir {home}: {available} valid {SITE} records", flush=True)
        started = time.perf_counter()
        trained = train_site(SITE, config=config, store=store, train_config=train_config,
                             quant=args.quant, seed=args.seed, progress=True)
        pipeline_s = time.perf_counter() - started
    m = trained.manifest
    tokens, training, export = m["dataset"]["tokens"], m["training"], m["export"]
    examples = training["examples"]
    epochs = training["steps"] * train_config.batch_size / examples
    budget = (f"{training['config']['steps']} steps" if training["config"]["steps"] else
              f"{training['config']['epochs']} epochs" if training["config"]["epochs"] else
              f"default ({DEFAULT_EPOCHS} epochs, <= {DEFAULT_MAX_STEPS} steps)")

    heldout_ids = m["dataset"]["heldout_ids"]
    teacher = {r.id: r for r in store.iter_records(RecordFilter(ids=heldout_ids))}
    engine = engine_for(SITE, folder=trained.path, version=trained.number)
    first = teacher[heldout_ids[0]]
    temperature = args.temperature
    engine.generate(first.args, temperature=temperature)  # warm-up: pages the model in
    per_attempt: list[float] = []
    latencies, rates, student_ok, unparsed, cut, first_ok, attempts = [], [], 0, 0, 0, 0, []
    redraws, rejected = [], 0
    failures: Counter[str] = Counter()
    for rid in heldout_ids:
        record = teacher[rid]
        generation = engine.generate(record.args, temperature=temperature,
                                     seed=args.seed + len(latencies), guided=not args.unguided)
        latencies.append(generation.seconds)
        per_attempt.append(generation.seconds / len(generation.passed))
        rates.append(generation.completion_tokens / generation.seconds)
        cut += generation.finish_reason == "length"
        first_ok += generation.passed[0]
        attempts.append(len(generation.passed))
        redraws.append(generation.redraws)
        rejected += generation.finish_reason == "rejected"
        if generation.output is None:
            unparsed += 1
            continue
        failed = [v.name for v in check_map(generation.output) if not v.passed]
        failures.update(failed)
        student_ok += not failed
    teacher_ok = sum(all(v.passed for v in check_map(teacher[r].output)) for r in heldout_ids)
    n = len(heldout_ids)

    from byllm_distill.training.trainer import peak_rss_mb

    results = {
        "records": available, "train_examples": examples, "heldout": n, "budget": budget,
        "steps": training["steps"], "epochs": round(epochs, 2),
        "prompt_tokens_teacher": tokens["teacher_prompt"]["mean"],
        "schema_tokens_teacher": tokens["teacher_schema"],
        "prompt_tokens_compact": tokens["compact_prompt"]["mean"],
        "compaction_ratio": tokens["compaction_ratio"],
        "compaction_ratio_with_schema": tokens["compaction_ratio_with_schema"],
        "answer_tokens_mean": tokens["target"]["mean"],
        "train_tokens_per_s": training["tokens_per_s"],
        "train_seconds": training["seconds"],
        "seconds_per_epoch": round(training["seconds"] / epochs, 1),
        "first_loss": training["first_loss"], "final_loss": training["final_loss"],
        "peak_rss_mb": round(peak_rss_mb(), 0),
        "export_seconds": export["seconds"], "gguf_mb": round(export["bytes"] / 2**20, 1),
        "quant": export["quant"],
        "pipeline_seconds": round(pipeline_s, 1),
        "latency_p50_s": round(statistics.median(latencies), 2),
        "latency_p95_s": round(_percentile(latencies, 0.95), 2),
        "gen_tokens_per_s": round(statistics.median(rates), 1),
        "attempt_p50_s": round(statistics.median(per_attempt), 2),
        "student_validity": round(student_ok / n, 3),
        "student_first_attempt_validity": round(first_ok / n, 3),
        "mean_attempts": round(statistics.fmean(attempts), 2),
        "mean_item_redraws": round(statistics.fmean(redraws), 2),
        "stopped_by_checks": rejected,
        "student_unparsed": unparsed, "student_cut_at_max_tokens": cut,
        "teacher_validity": round(teacher_ok / n, 3),
        "version_dir": str(trained.path),
        "student_failures": dict(failures.most_common()),
        "temperature": engine.spec.temperature if temperature is None else temperature,
        "guided": not args.unguided,
    }
    rows = [
        ("prompt tokens/example", f"{results['prompt_tokens_teacher']} teacher "
         f"(+{results['schema_tokens_teacher']} schema) → {results['prompt_tokens_compact']} "
         f"compact: {results['compaction_ratio']}× ({results['compaction_ratio_with_schema']}× "
         "with schema)", "≥ 3×"),
        ("training", f"{results['train_tokens_per_s']} tokens/s, {results['seconds_per_epoch']} s"
         f"/epoch, {budget} = {results['steps']} steps on {examples} examples, loss "
         f"{results['first_loss']} → {results['final_loss']}", "≥ 120 tok/s"),
        ("peak RSS", f"{results['peak_rss_mb']:.0f} MB", ""),
        ("export", f"{results['export_seconds']} s, GGUF {results['quant']} "
         f"{results['gguf_mb']} MB", ""),
        ("student latency/map", f"p50 {results['latency_p50_s']} s, p95 "
         f"{results['latency_p95_s']} s (all attempts); one attempt p50 "
         f"{results['attempt_p50_s']} s; {results['gen_tokens_per_s']} tokens/s",
         "p50 ≤ 1.5 s"),
        ("validity (held-out)", f"student {results['student_validity']:.1%} served, "
         f"{results['student_first_attempt_validity']:.1%} first attempt (mean "
         f"{results['mean_attempts']} attempts, {results['mean_item_redraws']} items redrawn, "
         f"temperature {results['temperature']}) vs teacher "
         f"{results['teacher_validity']:.1%} on {n} maps ({unparsed} unparsed: {cut} cut at "
         f"max_tokens, {rejected} stopped by the item checks)", "≥ 90%"),
        ("student failures", ", ".join(f"{k} {v}" for k, v in failures.most_common()) or "none",
         ""),
    ]
    for name, value, target in rows:
        print(f"{name:<22} {value}" + (f"   [target {target}]" if target else ""))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
