"""The CLI over a store with known records."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

from click.testing import CliRunner

from byllm_distill.cli import main
from byllm_distill.config import load_config
from byllm_distill.store import Record, Store

EXPORT_FIELDS = ["id", "site", "fingerprint", "model", "source", "messages", "schema", "args",
                 "output_raw", "output", "latency_ms", "usage", "cost", "status", "error",
                 "created_at", "version", "agreement", "route", "verdicts"]


def _fill() -> list[Record]:
    store = Store(load_config().database_url)
    records = [
        Record(site="game.make_map", fingerprint="f1", model="gpt-4o", messages=[],
               args={"n": i}, output={"i": i}, output_raw=json.dumps({"i": i}), latency_ms=10.0,
               usage={"total_tokens": 5}, cost=0.001)
        for i in range(3)
    ] + [Record(site="game.name", fingerprint="f2", model="claude", messages=[], args={},
                output="Bob", latency_ms=3.0, status="error", error="boom")]
    store.add_records(records)
    return records


def test_help_on_every_command() -> None:
    runner = CliRunner()
    for args in (["--help"], ["status", "--help"], ["sites", "--help"], ["records", "--help"],
                 ["records", "list", "--help"], ["records", "show", "--help"],
                 ["records", "export", "--help"]):
        result = runner.invoke(main, args)
        assert result.exit_code == 0 and "Usage:" in result.output, args


def test_noun_verb_groups_run_the_same_commands_as_their_flat_aliases(
        distill_home: Path) -> None:
    from byllm_distill.cli_groups import GROUPS, RECORD_VERBS

    _fill()
    runner = CliRunner()
    for noun, (_, verbs) in GROUPS.items():
        for verb, flat in verbs.items():
            grouped = runner.invoke(main, [noun, verb, "--help"])
            assert grouped.exit_code == 0 and f"Usage: main {noun} {verb}" in grouped.output
            assert grouped.output.split("\n", 1)[1] == runner.invoke(
                main, [flat, "--help"]).output.split("\n", 1)[1]  # same options and help
    for verb in RECORD_VERBS:
        assert runner.invoke(main, ["records", verb, "--help"]).exit_code == 0
    assert runner.invoke(main, ["site", "list", "--json"]).output == runner.invoke(
        main, ["sites", "--json"]).output
    assert json.loads(runner.invoke(main, ["site", "list", "--json"]).output)
    listed = runner.invoke(main, ["version", "list", "game.make_map", "--json"])
    assert listed.exit_code == 0 and listed.output == runner.invoke(
        main, ["models", "game.make_map", "--json"]).output
    overview = runner.invoke(main, ["--help"]).output
    commands, aliases = overview.split("Aliases")
    assert all(f"  {noun} " in commands for noun in GROUPS)
    assert "  sites " not in commands and "= site list" in aliases
    assert "= version list" in aliases and "= records validate" in aliases


def test_status_sites_list_show(distill_home: Path) -> None:
    records = _fill()
    runner = CliRunner()
    status = json.loads(runner.invoke(main, ["status", "--json"]).output)
    assert status["records"] == 4 and status["errors"] == 1 and status["sites"] == 2
    assert status["dropped"] == 0
    sites = json.loads(runner.invoke(main, ["sites", "--json"]).output)
    assert {(s["site"], s["records"]) for s in sites} == {("game.make_map", 3), ("game.name", 1)}
    listing = runner.invoke(main, ["records", "list", "--site", "game.make_map"]).output
    assert listing.count("game.make_map") == 3 and "game.name" not in listing
    shown = json.loads(runner.invoke(main, ["records", "show", records[0].id]).output)
    assert shown["args"] == {"n": 0}
    missing = runner.invoke(main, ["records", "show", "nope-nope"])
    assert missing.exit_code == 1 and "does not exist" in missing.output


def test_export_jsonl_stable_fields_and_filters(distill_home: Path, tmp_path: Path) -> None:
    _fill()
    runner = CliRunner()
    out = runner.invoke(main, ["records", "export", "--model", "gpt-4o"]).output
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 3 and list(lines[0]) == EXPORT_FIELDS
    assert lines[0]["output"] == {"i": 0} and lines[0]["usage"] == {"total_tokens": 5}
    target = tmp_path / "out.jsonl"
    result = runner.invoke(main, ["records", "export", "--status", "error", "--out", str(target)])
    assert result.exit_code == 0
    (only,) = [json.loads(line) for line in target.read_text().splitlines()]
    assert only["error"] == "boom"
    bad = runner.invoke(main, ["records", "export", "--since", "someday"])
    assert bad.exit_code == 1 and "not understood" in bad.output


def test_worker_options_come_from_the_config_fields(distill_home: Path) -> None:
    from datetime import datetime

    from byllm_distill.config import DistillConfig

    runner = CliRunner()
    text = runner.invoke(main, ["worker", "--help"]).output
    help_of = {f.name: f.metadata["help"] for f in fields(DistillConfig)}
    flat = " ".join(text.split())
    for name in ("retrain_after", "quiet_hours", "max_load", "train_steps"):
        assert f"--{name.replace('_', '-')}" in text and " ".join(help_of[name].split()) in flat
    hour = datetime.now().hour
    outside = f"{(hour + 2) % 24}-{(hour + 3) % 24}"
    waited = runner.invoke(main, ["worker", "--once", "--quiet-hours", outside])
    assert waited.exit_code == 0 and f"outside quiet hours {outside}" in waited.output
    assert "nothing to do" in runner.invoke(main, ["worker", "--once"]).output
    bad = runner.invoke(main, ["worker", "--once", "--max-load", "lots"])
    assert bad.exit_code == 1 and "--max-load" in bad.output and "must be a number" in bad.output
