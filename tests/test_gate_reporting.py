"""Every gate decision shows its criteria: the decision log, `status --json`, `history` and
the `eval` report carry each criterion's value, bound, bar and n, and a refusal says in one
line which criterion failed and what would fix it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from conftest import run_cli
from test_gate import TRIAGE_SITE, _as, _triage_records

from byllm_distill.config import load_config
from byllm_distill.evaluation.run import evaluate_site
from byllm_distill.lifecycle import promote_if_ready
from byllm_distill.registry import SiteRegistry, file_manifest
from byllm_distill.store import Store
from byllm_distill.store.events import site_events

TRIAGE_DIR = Path(__file__).resolve().parent.parent / "examples" / "triage"
sys.path.insert(0, str(TRIAGE_DIR))
from rule_teacher import triage  # noqa: E402

KEYS = {"name", "kind", "passed", "value", "bound", "bar", "n", "detail", "baseline", "fix"}


def _setup() -> tuple[Store, int]:
    config = load_config()
    store = Store(config.database_url)
    teacher = _triage_records(40)
    store.add_records(teacher)
    # The student gets one field wrong on a quarter of the inputs; the teacher repeats.
    student = [dict(t.output, team="finance") if i % 4 == 0 else t.output
               for i, t in enumerate(teacher)]
    store.add_records([_as(t, s, "eval") for t, s in zip(teacher, student, strict=True)])
    store.add_records([_as(t, t.output, "teacher", model=t.model) for t in teacher])
    registry = SiteRegistry(config, TRIAGE_SITE)
    with registry.new_version() as (number, folder):
        (folder / "model.gguf").write_text("stand-in")
        manifest = {"fingerprint": "triage-contract", "files": file_manifest(folder),
                    "dataset": {"heldout_ids": [t.id for t in teacher],
                                "train_ids": []}}
        (folder / "manifest.json").write_text(json.dumps(manifest))
    registry.activate(number, mode="shadow")
    return store, number


def test_decision_log_status_history_and_report_carry_every_criterion(tmp_path: Path) -> None:
    store, version = _setup()
    config = load_config()
    result = promote_if_ready(store, config, TRIAGE_SITE)
    assert result is not None and not result.passed
    (event,) = site_events(store, TRIAGE_SITE, kinds=("gate_refused",))
    criteria = {c["name"]: c for c in event.details["criteria"]}
    assert all(set(c) >= KEYS for c in criteria.values())
    assert criteria["agreement:team"]["passed"] is False
    assert criteria["agreement:team"]["baseline"] == 1.0
    assert criteria["shadow"]["passed"] is False  # no live shadow answers yet
    # The same refusal again is not logged twice.
    promote_if_ready(store, config, TRIAGE_SITE)
    assert len(site_events(store, TRIAGE_SITE, kinds=("gate_refused",))) == 1

    status = run_cli("status", "--json")
    assert status.returncode == 0, status.stderr
    site = next(s for s in json.loads(status.stdout)["per_site"] if s["site"] == TRIAGE_SITE)
    gate = site["gate"]
    assert gate["kind"] == "promotion" and not gate["passed"]
    assert {c["name"] for c in gate["criteria"]} == set(criteria)
    assert all(set(c) >= KEYS for c in gate["criteria"])
    assert any(r.startswith("agreement:team:") and "train longer" in r for r in gate["reasons"])

    text = run_cli("status")
    assert "refused: " in text.stdout and "NO  agreement:team" in text.stdout, text.stdout
    history = run_cli("history", TRIAGE_SITE)
    assert "gate_refused" in history.stdout and "NO  agreement:team" in history.stdout
    assert "ok  agreement:severity" in history.stdout
    logged = [json.loads(line) for line in run_cli("history", TRIAGE_SITE,
                                                   "--json").stdout.splitlines()]
    assert any(e["kind"] == "gate_refused" and e["details"]["criteria"] for e in logged)

    outcome = evaluate_site(store, config.data_dir, TRIAGE_SITE, version=version,
                            out_dir=tmp_path / "report", settings=config.site(TRIAGE_SITE),
                            loader=lambda site, v: lambda args: triage(args["ticket"]))
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert outcome.gate is not None and report["gate"]["criteria"]
    assert {c["name"] for c in report["gate"]["criteria"]} == set(criteria)
    html = outcome.report.read_text()
    assert "Promotion gate" in html and "agreement:team" in html and "FAIL" in html


def test_eval_report_draws_the_versions_over_time(tmp_path: Path) -> None:
    """With two versions, the report judges each by the gate over its own answers and draws
    them in order: v1 (a wrong team on a quarter of the inputs) fails agreement:team, v2
    (every field right) clears it."""
    store, first = _setup()
    config = load_config()
    teacher = [r for r in store.iter_records() if r.source == "teacher"][:40]
    registry = SiteRegistry(config, TRIAGE_SITE)
    with registry.new_version() as (second, folder):
        (folder / "model.gguf").write_text("stand-in")
        manifest = {"fingerprint": "triage-contract", "files": file_manifest(folder),
                    "created_at": "2026-12-01T12:00:00+00:00",
                    "dataset": {"heldout_ids": [t.id for t in teacher], "train_ids": []}}
        (folder / "manifest.json").write_text(json.dumps(manifest))
    store.add_records([_as(t, t.output, "eval", version=second) for t in teacher])
    outcome = evaluate_site(store, config.data_dir, TRIAGE_SITE, version=second,
                            out_dir=tmp_path / "report", settings=config.site(TRIAGE_SITE),
                            loader=lambda site, v: lambda args: triage(args["ticket"]))
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    history = report["history"]
    assert [h["version"] for h in history] == [first, second]
    assert history[0]["criteria"]["agreement:team"]["passed"] is False
    assert history[1]["criteria"]["agreement:team"]["passed"] is not False
    assert history[1]["criteria"]["agreement:team"]["value"] == 1.0
    assert "plots/versions.png" in report["plots"]
    assert (tmp_path / "report" / "plots" / "versions.png").read_bytes()[:4] == b"\x89PNG"
    html = outcome.report.read_text()
    assert "Versions over time" in html and "agreement:team" in html
