"""CLI commands for datasets, training and trying a student: `dataset build`, `train`, `try`.

They parse and print; the work is in `byllm_distill.training` and `byllm_distill.runtime`,
imported inside each command so `byllm-distill --help` stays fast.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from byllm_distill.cli_common import (
    field_options,
    friendly_errors,
    get_config,
    open_store,
    progress_bars,
)
from byllm_distill.errors import DistillError
from byllm_distill.training.trainer import TrainConfig


def _dataset_dir(site: str, filtered: bool) -> Path:
    from byllm_distill.registry import site_dirname

    return (get_config().data_dir / "datasets" / site_dirname(site)
            / ("filtered" if filtered else "unfiltered"))


def _parse_json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--input") from exc
    if not isinstance(value, dict):
        raise click.BadParameter("must be a JSON object of argument name → value, e.g. "
                                 '\'{"level": {...}}\'', param_hint="--input")
    return value


def _show(site: str, output: Any) -> str:
    """An answer as its task draws it (tasks.py: a map as tiles), else as JSON."""
    from byllm_distill.tasks import render_text

    text = render_text(site, output)
    if text is not None:
        return text
    return output if isinstance(output, str) else json.dumps(output, indent=2)


def register(main: click.Group) -> None:
    # byllm-distill never downloads weights; this keeps transformers from trying the hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    @main.group()
    def dataset() -> None:
        """Build per-call-site training sets."""

    @dataset.command("build")
    @click.argument("site")
    @click.option("--unfiltered", is_flag=True,
                  help="Use every successful record, not only those passing every validator.")
    @click.option("--out", type=click.Path(file_okay=False, path_type=Path),
                  help="Folder to write (default <data dir>/datasets/<site>/<filtered|...>).")
    @click.option("--holdout", default=0.2, show_default=True, help="Held-out fraction.")
    @click.option("--seed", default=0, show_default=True, help="Split seed.")
    @click.option("--base", help="Base model whose tokenizer counts tokens (default the "
                                 "embedded SmolLM2-135M-Instruct).")
    @click.option("--max-length", default=1024, show_default=True,
                  help="Training tokens per example (the prompt budget derives from it).")
    @friendly_errors
    def dataset_build(site: str, unfiltered: bool, out: Path | None, holdout: float, seed: int,
                      base: str | None, max_length: int) -> None:
        """Write a site's train/held-out JSONL (compact prompts) and manifest."""
        from byllm_distill.training.dataset import build_dataset

        out = out or _dataset_dir(site, not unfiltered)
        settings = get_config().site(site)
        ds = build_dataset(open_store(), site, filtered=not unfiltered, holdout=holdout,
                           seed=seed, out_dir=out, base=base, max_length=max_length,
                           drop_inputs=settings.drop_inputs, keep_last=settings.keep_last,
                           prompt_budget=settings.prompt_budget or None)
        counts, tokens = ds.manifest["counts"], ds.manifest["tokens"]
        click.echo(f"{site}: {counts['train']} train, {counts['heldout']} held-out "
                   f"({counts['records']} records, {counts['duplicates']} duplicates, "
                   f"{counts['other_fingerprints']} from older contracts)")
        inputs = ds.manifest["inputs"]
        click.echo(f"inputs: {inputs['policy']}; {counts['compacted']} record(s) compacted "
                   f"to the budget, {counts['over_budget']} left out as over it")
        for path, how in inputs["chosen"].items():
            proxy = how.get("proxy")
            measured = (f" (proxy agreement whole {proxy['whole']}, share of the prompt "
                        f"{proxy['share']:.0%})" if proxy else "")
            click.echo(f"  {path}: {how['choice']} [{how['by']}]{measured}")
        click.echo(f"prompt tokens per example: teacher {tokens['teacher_prompt']['mean']} "
                   f"(+{tokens['teacher_schema']} schema) → compact "
                   f"{tokens['compact_prompt']['mean']} ({tokens['compaction_ratio']}×, "
                   f"{tokens['compaction_ratio_with_schema']}× counting the schema); "
                   f"answers {tokens['target']['mean']} tokens")
        click.echo(f"content sha256 {ds.content_sha256[:16]}…  wrote {out}")

    @main.command()
    @click.argument("site")
    @field_options(TrainConfig, "qlora", "steps", "epochs", "rank", "alpha", "learning_rate",
                   "max_length", "seed", "device", flags={"learning_rate": "--lr"})
    @click.option("--base", help="Base model: a hub id in the local HF cache (e.g. "
                                 "TinyLlama/TinyLlama-1.1B-Chat-v1.0), a folder or a .gguf; "
                                 "default the embedded SmolLM2-135M-Instruct.")
    @click.option("--quant", type=click.Choice(["Q4_K_M", "Q4_0", "Q8_0", "F16"]),
                  default="Q4_K_M", show_default=True,
                  help="GGUF quantization (Q4_0 serves fastest on AVX2-only CPUs).")
    @click.option("--unfiltered", is_flag=True, help="Train on records that failed validators "
                                                     "too.")
    @click.option("--holdout", default=0.2, show_default=True, help="Held-out fraction.")
    @friendly_errors
    def train(site: str, base: str | None, quant: str, unfiltered: bool, holdout: float,
              **training: Any) -> None:
        """Train, export and register a new student version for a site (--seed seeds the
        held-out split too)."""
        from byllm_distill.training.pipeline import train_site

        if training["steps"] is not None and training["epochs"] is not None:
            raise click.UsageError("give --steps or --epochs, not both.")
        config = TrainConfig(**training)
        trained = train_site(site, config=get_config(), store=open_store(),
                             train_config=config, filtered=not unfiltered, holdout=holdout,
                             seed=config.seed, base=base, quant=quant,
                             progress=progress_bars())
        m = trained.manifest
        t, e = m["training"], m["export"]
        click.echo(f"{site} v{trained.number}: {m['dataset']['counts']['train']} examples, "
                   f"{t['steps']} steps, loss {t['first_loss']} → {t['final_loss']}, "
                   f"{t['tokens_per_s']} tokens/s, {t['seconds']} s, peak RSS "
                   f"{t['peak_rss_mb']:.0f} MB")
        click.echo(f"GGUF {e['quant']} {e['bytes'] / 2**20:.1f} MB (export {e['seconds']} s)"
                   f"  {trained.path}")
        click.echo(f"Not serving yet: try it with `byllm-distill try {site} --input ...`, "
                   f"then `byllm-distill promote {site}`.")

    @main.command("try")
    @click.argument("site")
    @click.option("--input", "input_json", required=True,
                  help='The call\'s arguments as JSON, e.g. \'{"level": {...}}\'.')
    @click.option("--version", type=int, help="Version to try (default active, else newest).")
    @friendly_errors
    def try_student(site: str, input_json: str, version: int | None) -> None:
        """Answer one input with a site's student, next to the nearest teacher record."""
        from byllm_distill.runtime.engine import engine_for
        from byllm_distill.training.dataset import nearest_record

        args = _parse_json_object(input_json)
        engine = engine_for(site, data_dir=get_config().data_dir, version=version)
        generation = engine.generate(args)
        verdicts = "".join("✓" if ok else "✗" for ok in generation.passed)
        click.echo(f"student v{engine.spec.version} ({generation.seconds:.2f} s, "
                   f"{generation.completion_tokens} tokens, {generation.finish_reason}, "
                   f"attempts {verdicts}, {generation.redraws} items redrawn):")
        if generation.output is None:
            why = ("its items kept failing the site's checks, so it stopped"
                   if generation.finish_reason == "rejected" else "it does not decode")
            raise DistillError(f"no usable student answer, {why}:\n{generation.raw}")
        click.echo(_show(site, generation.output))
        near = nearest_record(open_store(), site, args)
        if near is None:
            click.echo("no teacher record to compare with.")
            return
        record, score = near
        click.echo(f"\nnearest teacher record {record.id} (argument similarity {score:.2f}, "
                   f"{record.model}):")
        click.echo(json.dumps(record.args, sort_keys=True))
        click.echo(_show(site, record.output))
