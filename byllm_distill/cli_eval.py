"""`byllm-distill eval` and `byllm-distill rate`: evaluation commands, added to the main
group by `register(main)` (called at the end of cli.py). They parse and print; the work is
in byllm_distill.evaluation and byllm_distill.web.rating."""

from __future__ import annotations

from pathlib import Path

import click

from byllm_distill.cli_common import criteria_lines, friendly_errors, get_config, open_store


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.1f} ms"


@click.command("eval")
@click.argument("site")
@click.option("--version", type=int,
              help="Student version to evaluate; default the active one, else the newest.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Report folder; default <data dir>/reports/<site>-<time>.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True,
              help="At most this many held-out inputs.")
@click.option("--student-records", is_flag=True,
              help="Use student answers already in the store instead of running the student.")
@friendly_errors
def eval_command(site: str, version: int | None, out: Path | None, limit: int,
                 student_records: bool) -> None:
    """Compare a site's student with its teacher on held-out inputs; write a report."""
    from byllm_distill.evaluation.run import evaluate_site
    from byllm_distill.store import Store

    config = get_config()
    outcome = evaluate_site(Store(config.database_url), config.data_dir, site, version=version,
                            out_dir=out, limit=limit, use_student_records=student_records,
                            settings=config.site(site))
    m = outcome.metrics
    reused = m["pairs"] - outcome.answered
    click.echo(f"{site}: teacher vs {outcome.student} on {m['pairs']} held-out inputs"
               + (f" ({reused} answers reused from the store)" if reused else ""))
    click.echo(f"  pass every validator  teacher {_pct(m['validity']['teacher']['all_pass'])}"
               f"   student {_pct(m['validity']['student']['all_pass'])}")
    click.echo(f"  exact match with the teacher  {_pct(m['agreement']['exact_match'])}")
    click.echo(f"  latency p50           teacher {_ms(m['latency']['teacher']['p50_ms'])}"
               f"   student {_ms(m['latency']['student']['p50_ms'])}")
    cost = m["cost"]["teacher"]["usd_per_1k_calls"]
    click.echo(f"  teacher cost          {'n/a' if cost is None else f'${cost:,.2f}'} per "
               "1,000 calls (student: $0)")
    if outcome.gate is not None:
        gate = outcome.gate
        click.echo("  promotion gate        " + ("passes" if gate["passed"] else
                                                 f"refuses: {gate['reasons'][0]}"))
        for line in criteria_lines(gate["criteria"]):
            click.echo(f"    {line}")
    click.echo(f"report: {outcome.report}")


@click.command("rate")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but 127.0.0.1 needs --token.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="Port to listen on (0: any free port).")
@click.option("--token", help="Secret every request must carry (the printed link has it).")
@click.option("--site", help="Only answers of this call site.")
@click.option("--limit", type=click.IntRange(min=1), default=200, show_default=True,
              help="At most this many answers to rate.")
@friendly_errors
def rate_command(host: str, port: int, token: str | None, site: str | None,
                 limit: int) -> None:
    """Serve the blind rating page: score answers on the rubric, compare pairs."""
    from byllm_distill.web.rating import items_from_store, serve_rating

    store = open_store()
    server = serve_rating(store, host=host, port=port, token=token,
                          items=items_from_store(store, site=site, limit=limit))
    click.echo(f"Rating {len(server.app.items)} items at {server.url}")
    click.echo("Press Ctrl-C to stop; ratings are saved as they are submitted.")
    try:
        server.wait()
    except KeyboardInterrupt:
        click.echo("stopped")


def register(main: click.Group) -> None:
    """Add `eval` and `rate` to the `byllm-distill` command group."""
    main.add_command(eval_command)
    main.add_command(rate_command)
