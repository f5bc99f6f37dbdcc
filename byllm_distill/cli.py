"""The `byllm-distill` command line. It parses and prints; the work is in library modules.

Every command's one-line docstring is its `--help` summary.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from byllm_distill.cli_common import criteria_lines, friendly_errors, get_config, open_store
from byllm_distill.cli_groups import MainGroup
from byllm_distill.drops import DropLog
from byllm_distill.errors import StoreError
from byllm_distill.store import RecordFilter, Store


def record_filters(func: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed([
        click.option("--site", help="Only this call site (module.qualname)."),
        click.option("--model", help="Only records answered by this model."),
        click.option("--source", type=click.Choice(["teacher", "student", "shadow", "eval"]),
                     help="Only records from this source."),
        click.option("--status", type=click.Choice(["ok", "error"]),
                     help="Only successful or failed calls."),
        click.option("--since", help="Only records newer than this: 30m, 2h, 7d or an ISO date."),
        click.option("--valid-only", "valid", flag_value=True, default=None,
                     help="Only records that passed every validator."),
        click.option("--invalid-only", "valid", flag_value=False,
                     help="Only records that failed a validator (or the call failed)."),
    ]):
        func = option(func)
    return func


def _filter(site: str | None, model: str | None, source: str | None, status: str | None,
            since: str | None, valid: bool | None) -> RecordFilter:
    return RecordFilter(site=site, model=model, source=source, status=status, since=since,
                        valid=valid)


@click.group(cls=MainGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="byllm-distill")
def main() -> None:
    """Capture byLLM calls per call site and distil them into small local models."""
    # litellm otherwise tries to fetch its price list from the internet on first use.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@friendly_errors
def status(as_json: bool) -> None:
    """Show where data lives, whether capture is on, record and dropped counts."""
    config = get_config()
    from byllm_distill.autotrain import LOCK
    from byllm_distill.lifecycle import site_status
    from byllm_distill.store import locks

    dropped = DropLog(config.data_dir).totals()
    info: dict[str, Any] = {
        "capture": config.capture,
        "data_dir": str(config.data_dir),
        "store": config.database_url,
        "store_error": None,
        "dropped": sum(dropped.values()),
        "dropped_by_cause": dropped,
        "attached": _attached(),
        "auto_train": {"on": config.auto_train, "worker": None},
    }
    try:
        store = Store(config.database_url)
    except StoreError as exc:
        # Status must still report drops when the store itself is what is broken.
        info["store_error"] = str(exc)
    else:
        with store.reading():
            tally = store.tally()
            sites = store.site_names()
            per_site = [site_status(store, config, site) for site in sites]
            held = locks.holder(store, LOCK)
        info.update({
            "store": store.display_url,
            "records": sum(tally.values()),
            "records_by_source": {s: sum(n for (source, _), n in tally.items() if source == s)
                                  for s in ("teacher", "student", "shadow", "eval")},
            "errors": sum(n for (_, status), n in tally.items() if status == "error"),
            "sites": len(sites),
            "per_site": per_site,
        })
        info["auto_train"]["worker"] = {"holder": held[0], "heartbeat_at": held[1]} if held \
            else None
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    attached = ("the jaclang hook (and any distill()-wrapped model)"
                if info["attached"]["hook"] else "distill()-wrapped models only")
    click.echo(f"capture:  {'on' if config.capture else 'off'}; attached through {attached}")
    if info["attached"]["fix"]:
        click.echo(f"          warning: {info['attached']['fix']}")
    worker = info["auto_train"]["worker"]
    click.echo(f"auto_train: {'on' if config.auto_train else 'off'}" + (
        f"; worker {worker['holder']} running (heartbeat {worker['heartbeat_at'][:19]})"
        if worker else ""))
    click.echo(f"data dir: {info['data_dir']}")
    click.echo(f"store:    {info['store']}")
    if info["store_error"]:
        click.echo(f"          cannot be opened: {info['store_error']}")
    else:
        click.echo(f"records:  {info['records']} ({info['errors']} failed calls) "
                   f"across {info['sites']} call sites")
    click.echo(f"dropped:  {info['dropped']} records could not be stored")
    for cause, count in sorted(dropped.items(), key=lambda kv: -kv[1]):
        click.echo(f"  {count:>6}  {cause}")
    for site in info.get("per_site", []):
        click.echo(_site_line(site))


def _attached() -> dict[str, Any]:
    """Whether this environment's jaclang calls byllm-distill's hook (it imports jaclang)."""
    from byllm_distill.attach import attachment

    attached = attachment()
    return {"hook": attached["hook"], "fix": attached["fix"]}


def _site_line(site: dict[str, Any]) -> str:
    records = site["records"]
    line = (f"\n{site['site']}\n  mode {site['mode']}"
            f"{' (pinned ' + site['pinned'] + ')' if site['pinned'] else ''}, active version "
            f"{site['active'] if site['active'] is not None else '-'}, versions "
            f"{site['versions'] or '-'}\n  records: {records['teacher']} teacher "
            f"({site['valid_teacher_records']} valid), {records['student']} student, "
            f"{records['shadow']} shadow, {records['eval']} eval")
    gate = site["gate"]
    if gate:
        live = gate["kind"] == "live"
        if gate["passed"]:
            verdict = "holds" if live else "passes"
        else:
            verdict = ("fails: " if live else "refused: ") + gate["reasons"][0]
        line += (f"\n  {gate['kind']} gate: {gate['passes']}/{gate['n']} valid, lower bound "
                 f"{gate['lower_bound']:.3f} ({verdict})")
        line += "".join(f"\n    {text}" for text in criteria_lines(gate.get("criteria") or []))
    tokens = site.get("prompt_tokens")
    if tokens:
        billed = (f", billed {tokens['teacher_billed']:g}" if tokens["teacher_billed"]
                  else "")
        line += (f"\n  prompt tokens per call: teacher {tokens['teacher']:g} (+"
                 f"{tokens['teacher_schema']} schema{billed}), student {tokens['student']:g} "
                 f"(max {tokens['student_max']:g}; inputs: {tokens['inputs'] or 'whole'}; "
                 f"v{tokens['version']})")
    due = site["next_due"]
    line += (f"\n  next training: {due['new_valid_records']}/{due['needed']} new valid "
             f"records{' (due)' if due['due'] else ''}")
    job = site["job"]
    if job and job["status"] in ("queued", "running", "failed"):
        line += f"\n  job: {job['status']} {job['progress'] or ''} {job['error'] or ''}"
    retry = site.get("retry") or {}
    if retry.get("needs_attention"):
        line += (f"\n  training failed {retry['failures']} times in a row; not retried until "
                 f"`byllm-distill retry {site['site']}` (fix first: {retry['reason']})")
    elif retry.get("failures"):
        line += (f"\n  training failed ({retry['failures']}x), next try after "
                 f"{retry['retry_at'][:19]}: {retry['reason']}")
    return line


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@friendly_errors
def sites(as_json: bool) -> None:
    """List call sites: key, contract fingerprint, record count, models, last seen."""
    summaries = open_store().site_summaries()
    if as_json:
        click.echo(json.dumps([s.to_dict() for s in summaries], indent=2))
        return
    if not summaries:
        click.echo("No call sites captured yet. Run a Jac program that uses `by llm()`.")
        return
    click.echo(f"{'SITE':<40} {'FINGERPRINT':<16} {'RECORDS':>7}  {'LAST SEEN':<26} MODELS")
    for s in summaries:
        click.echo(f"{s.site:<40} {s.fingerprint:<16} {s.records:>7}  {s.last_seen[:26]:<26} "
                   f"{', '.join(s.models)}")


@main.group()
def records() -> None:
    """List, show, export and re-validate captured records."""


@records.command("list")
@record_filters
@click.option("--limit", default=50, show_default=True, help="At most this many, newest first.")
@friendly_errors
def records_list(limit: int, **filters: Any) -> None:
    """List records, newest first."""
    rows = list(open_store().iter_records(_filter(**filters), limit=limit, newest_first=True))
    if not rows:
        click.echo("No records match.")
        return
    click.echo(f"{'ID':<24} {'CREATED':<19} {'SITE':<32} {'MODEL':<18} {'SOURCE':<7} "
               f"{'STATUS':<6} {'VALID':<5} {'MS':>8}")
    for r in rows:
        valid = {True: "yes", False: "no", None: "-"}[r.valid]
        click.echo(f"{r.id:<24} {r.created_at[:19]:<19} {r.site[:32]:<32} {r.model[:18]:<18} "
                   f"{r.source:<7} {r.status:<6} {valid:<5} {r.latency_ms:>8.1f}")


@records.command("show")
@click.argument("record_id")
@friendly_errors
def records_show(record_id: str) -> None:
    """Print one record (full id or a unique prefix) as JSON."""
    click.echo(json.dumps(open_store().get_record(record_id).to_public(), indent=2,
                          ensure_ascii=False))


@records.command("export")
@record_filters
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to this file instead of standard output.")
@friendly_errors
def records_export(out: Path | None, **filters: Any) -> None:
    """Export records as JSONL, one record per line, oldest first."""
    lines = open_store().iter_export_lines(_filter(**filters))
    if out is None:
        n = _write_lines(lines, sys.stdout)
    else:
        tmp = out.with_name(out.name + ".partial")
        with tmp.open("w", encoding="utf-8") as fh:
            n = _write_lines(lines, fh)
        tmp.replace(out)
        click.echo(f"Wrote {n} records to {out}", err=True)


@main.command()
@record_filters
@friendly_errors
def validate(**filters: Any) -> None:
    """Re-run the validators on stored records (after adding or changing a validator)."""
    from byllm_distill.validators import registry

    store = open_store()
    fresh = {r.id: registry.validate(r) for r in store.iter_records(_filter(**filters))}
    store.replace_verdicts(fresh)
    failed = sum(1 for verdicts in fresh.values() if not all(v.passed for v in verdicts))
    click.echo(f"Validated {len(fresh)} records: {len(fresh) - failed} pass every validator, "
               f"{failed} fail at least one.")


def _write_lines(lines: Iterator[str], fh: Any) -> int:
    n = 0
    for line in lines:
        fh.write(line + "\n")
        n += 1
    return n


# Command families kept in their own modules (they import this one's helpers).
from byllm_distill import tasks as _tasks  # noqa: E402
from byllm_distill.cli_eval import register as _register_eval  # noqa: E402
from byllm_distill.cli_groups import register as _register_groups  # noqa: E402
from byllm_distill.cli_lifecycle import register as _register_lifecycle  # noqa: E402
from byllm_distill.cli_student import register as _register_student  # noqa: E402

_register_eval(main)
_register_lifecycle(main)
_register_student(main)
for _command in _tasks.load().commands:  # task plug-ins' own commands (`rpg`)
    main.add_command(_command)
_register_groups(main)  # last: the groups reuse the commands above

if __name__ == "__main__":
    main()
