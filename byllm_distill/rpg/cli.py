"""The showcase's own commands, added to the command line by the RPG task plug-in
(plugin.py): `byllm-distill demo` (the whole loop, demo.py) and `byllm-distill rpg ...`
(corpus runs, map rendering)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from byllm_distill.cli_common import field_options, friendly_errors, open_store, progress_bars
from byllm_distill.rpg.demo import DemoOptions


@click.command()
@field_options(DemoOptions, "home", "runs", "steps", "shadow_runs", "serve_runs", "seed",
               "teacher_errors")
@friendly_errors
def demo(**options: object) -> None:
    """Run the whole loop offline on both RPG sites: capture, train, shadow, gate,
    serve, compare."""
    from byllm_distill.rpg.demo import run_demo

    run_demo(DemoOptions(**options), say=click.echo, progress=progress_bars())  # type: ignore[arg-type]


@click.group()
def rpg() -> None:
    """The RPG level-generation showcase: corpus runs and map rendering."""


@rpg.command("generate")
@click.option("--runs", default=20, show_default=True, help="Independent runs (games).")
@click.option("--levels-per-run", default=5, show_default=True,
              help="Levels per run; difficulty rises 1, 2, 3, ... within a run.")
@click.option("--seed", default=0, show_default=True,
              help="Seed for sizes and the offline teacher.")
@click.option("--teacher", help="litellm model name (e.g. gpt-4o) instead of the offline "
                                "designer; needs that provider's API key in the environment.")
@click.option("--teacher-errors", type=click.FloatRange(0.0, 1.0), default=None,
              help="Simulation: give this seeded fraction of the offline designer's answers "
                   "a mistake hosted models make (e.g. 0.15); validators flag each one.")
@friendly_errors
def rpg_generate(runs: int, levels_per_run: int, seed: int, teacher: str | None,
                 teacher_errors: float | None) -> None:
    """Fill the store with a corpus of captured levels and maps, then summarise it."""
    from byllm_distill.rpg.corpus import generate_corpus

    if runs < 1 or levels_per_run < 1:
        raise click.BadParameter("--runs and --levels-per-run must be at least 1")
    if teacher and teacher_errors:
        raise click.BadParameter("--teacher-errors simulates mistakes of the offline "
                                 "designer; a hosted --teacher makes its own.")
    summary = generate_corpus(runs, levels_per_run, seed=seed, teacher=teacher,
                              teacher_errors=teacher_errors, progress=progress_bars())
    for line in summary.lines():
        click.echo(line)


@rpg.command("show")
@click.argument("record_id")
@click.option("--png", type=click.Path(dir_okay=False, path_type=Path),
              help="Also draw the map to this PNG file.")
@friendly_errors
def rpg_show(record_id: str, png: Path | None) -> None:
    """Render a captured map (or print a captured level) from the store."""
    from byllm_distill.rpg.render import to_ascii, to_png

    record = open_store().get_record(record_id)
    output = record.output
    if not isinstance(output, dict) or "player_pos" not in output:
        click.echo(json.dumps(output, indent=2))
        if png is not None:
            raise click.ClickException(f"record {record.id} is a {record.site} answer, not a "
                                       "map; pick a create_next_map record for --png.")
        return
    level = output.get("level", {})
    click.echo(f"{record.site}  {record.id}  ({record.source}, {record.model})")
    click.echo(f"{level.get('name', '?')}: difficulty {level.get('difficulty')}, "
               f"{len(output.get('enemies', []))} enemies, {len(output.get('walls', []))} walls")
    click.echo(to_ascii(output))
    for verdict in record.verdicts or []:
        if not verdict.passed:
            click.echo(f"FAILED {verdict.name}: {verdict.detail}")
    if png is not None:
        click.echo(f"wrote {to_png(output, png)}")
