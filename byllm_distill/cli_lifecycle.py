"""Lifecycle commands: models, promote, rollback, pin, unpin, history, worker.

Added to the main group by `register(main)`; they parse and print, the work is in
registry.py, lifecycle.py and store/events.py.
"""

from __future__ import annotations

import json
import os
from typing import Any

import click

from byllm_distill.cli_common import (
    config_options,
    criteria_lines,
    friendly_errors,
    get_config,
    open_store,
    progress_bars,
)
from byllm_distill.registry import SiteRegistry
from byllm_distill.store.events import site_events


def _registry(site: str) -> SiteRegistry:
    return SiteRegistry(get_config(), site)


def register(main: click.Group) -> None:
    @main.command()
    @click.argument("site")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
    @friendly_errors
    def models(site: str, as_json: bool) -> None:
        """List a site's student versions, which one is active, and their metrics."""
        registry = _registry(site)
        state = registry.state()
        rows = []
        for v in registry.versions():
            training = v.manifest.get("training", {})
            rows.append({
                "version": v.number, "active": v.number == state.active,
                "created_at": v.manifest.get("created_at"),
                "fingerprint": v.manifest.get("fingerprint"),
                "examples": v.manifest.get("dataset", {}).get("counts", {}).get("train"),
                "steps": training.get("steps"), "final_loss": training.get("final_loss"),
                "gguf_mb": round(v.manifest.get("export", {}).get("bytes", 0) / 2**20, 1),
            })
        if as_json:
            click.echo(json.dumps({"state": state.__dict__, "versions": rows}, indent=2))
            return
        click.echo(f"{site}: mode {state.mode}, active "
                   f"{state.active if state.active is not None else '-'}"
                   f"{', pinned to ' + state.pinned if state.pinned else ''}")
        if not rows:
            click.echo(f"No versions yet; run `byllm-distill train {site}` or the worker.")
            return
        click.echo(f"{'VER':>3}  {'CREATED':<19} {'EXAMPLES':>8} {'STEPS':>6} {'LOSS':>7} "
                   f"{'GGUF MB':>7}  FINGERPRINT")
        for r in rows:
            mark = "*" if r["active"] else " "
            loss = f"{r['final_loss']:.3f}" if isinstance(r["final_loss"], float) else "-"
            click.echo(f"{r['version']:>3}{mark} {str(r['created_at'])[:19]:<19} "
                       f"{r['examples'] or '-':>8} {r['steps'] or '-':>6} {loss:>7} "
                       f"{r['gguf_mb']:>7}  {r['fingerprint']}")

    @main.command()
    @click.argument("site")
    @click.argument("version", type=int, required=False)
    @click.option("--shadow", is_flag=True, help="Activate in shadow mode instead of serving.")
    @friendly_errors
    def promote(site: str, version: int | None, shadow: bool) -> None:
        """Serve a site from VERSION (default: the newest), skipping the gate."""
        from byllm_distill.lifecycle import promote_manually

        state = promote_manually(open_store(), _registry(site), version,
                                 mode="shadow" if shadow else "student")
        click.echo(f"{site}: version {state.active} active in {state.mode} mode.")

    @main.command()
    @click.argument("site")
    @friendly_errors
    def rollback(site: str) -> None:
        """Go back to the previous version (or the teacher when there is none)."""
        from byllm_distill.lifecycle import rollback_manually

        state = rollback_manually(open_store(), _registry(site))
        click.echo(f"{site}: now served by "
                   f"{'version ' + str(state.active) if state.active else 'the teacher'}.")

    @main.command()
    @click.argument("site")
    @friendly_errors
    def retry(site: str) -> None:
        """Clear a site's training failures so the worker tries it again now (after fixing
        what `status` says went wrong)."""
        from byllm_distill.store.events import log_event
        from byllm_distill.store.jobs import JobQueue

        store = open_store()
        cleared = JobQueue(store).dismiss_failures(site)
        log_event(store, site, "retry_requested", None, cleared=cleared)
        click.echo(f"{site}: {cleared} failed job(s) cleared; the next worker round trains it "
                   "if it is due.")

    @main.command()
    @click.argument("site")
    @click.argument("target")
    @friendly_errors
    def pin(site: str, target: str) -> None:
        """Pin a site to `teacher` or to a version number; automatic decisions stop."""
        from byllm_distill.lifecycle import set_pin

        if target != "teacher" and not target.isdigit():
            raise click.BadParameter("TARGET is 'teacher' or a version number")
        set_pin(open_store(), _registry(site), target)
        click.echo(f"{site}: pinned to {target}.")

    @main.command()
    @click.argument("site")
    @friendly_errors
    def unpin(site: str) -> None:
        """Remove a pin; the site follows its mode and the gates again."""
        from byllm_distill.lifecycle import set_pin

        registry = _registry(site)
        set_pin(open_store(), registry, None)
        click.echo(f"{site}: unpinned (mode {registry.state().mode}).")

    @main.command()
    @click.argument("site")
    @click.option("--limit", default=50, show_default=True)
    @click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
    @friendly_errors
    def history(site: str, limit: int, as_json: bool) -> None:
        """Every training, promotion, rollback and pin of a site, with its numbers."""
        events = site_events(open_store(), site, limit=limit)
        if not events:
            click.echo(f"No decisions logged for {site} yet.")
        for e in reversed(events):
            if as_json:
                click.echo(json.dumps(e.__dict__))
                continue
            version = f"v{e.version}" if e.version is not None else "-"
            click.echo(f"{e.created_at[:19]}  {e.kind:<16} {version:<5} {_summary(e.details)}")
            for line in criteria_lines(e.details.get("criteria") or []):
                click.echo(f"{'':<43}{line}")

    @main.command()
    @click.option("--once", is_flag=True, help="Run every job that is due now, then exit.")
    @click.option("--poll", default=60.0, show_default=True,
                  help="Seconds between rounds when nothing runs.")
    @click.option("--site", help="Only train this site.")
    @click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]),
                  help="Where to train (default: the config's train_device, auto: cuda when "
                       "a GPU is visible).")
    @click.option("--held-lock", hidden=True,
                  help="Set by auto_train: the store lock this worker holds while it runs.")
    @config_options("retrain_after", "quiet_hours", "max_load", "train_steps")
    @friendly_errors
    def worker(once: bool, poll: float, site: str | None, device: str | None,
               held_lock: str | None, **settings: Any) -> None:
        """Train due sites in quiet windows, one job at a time at low priority."""
        from byllm_distill.lifecycle import JobReport, Worker

        def show(result: Any) -> None:
            if isinstance(result, JobReport):
                if result.error:
                    click.echo(f"{result.job.site}: training failed: {result.error}", err=True)
                    return
                held = result.heldout
                extra = (f"; held-out: {held.passes}/{held.n} pass every validator "
                         f"(lower bound {held.lower_bound:.2f})" if held else "")
                click.echo(f"{result.job.site}: trained version {result.version}, now in "
                           f"shadow mode{extra}")
                gate = result.gate
                if gate is not None and not gate.passed:
                    click.echo(f"  gate (decides again after each shadow answer): refused: "
                               f"{gate.reasons[0]}")
            else:
                click.echo(result)

        config = get_config(**settings, train_device=device)
        worker = Worker(config, progress=progress_bars())
        if held_lock is None:
            worker.run(once=once, poll_s=poll, site=site, on_step=show)
            return
        from byllm_distill.autotrain import hold_lock

        click.echo(f"auto_train worker {held_lock} (pid {os.getpid()}) started")
        with hold_lock(worker.store, held_lock):
            worker.run(once=once, poll_s=poll, site=site, on_step=show)
        click.echo(f"auto_train worker {held_lock} done")


def _summary(details: dict[str, Any]) -> str:
    keys = ("n", "passes", "lower_bound", "to", "manual", "error")
    parts = [f"{k}={details[k]}" for k in keys if details.get(k) not in (None, [], "")]
    reasons = details.get("reasons") or []
    if reasons:
        parts.append(f"refused: {reasons[0]}" + (f" (+{len(reasons) - 1} more)"
                                                 if len(reasons) > 1 else ""))
    held = details.get("heldout")
    if isinstance(held, dict):
        parts.append(f"heldout {held.get('passes')}/{held.get('n')} "
                     f"lb={held.get('lower_bound')}")
    training = details.get("training")
    if isinstance(training, dict):
        parts.append(f"loss {training.get('first_loss')}→{training.get('final_loss')} "
                     f"in {training.get('steps')} steps")
    return ", ".join(parts)
