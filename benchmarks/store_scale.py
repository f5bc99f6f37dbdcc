"""Store scale: `status`, `sites`, the due check, export and dataset build at 1,000,000 records.

For each backend, a fresh store is filled by bulk insert (SQLAlchemy Core executemany, in
transactions of 10,000 rows) with `--records` synthetic records spread over `--sites` call
sites, interleaved as live traffic would write them: the shape of a captured
`triage.triage` call (messages, response format, arguments, answer; about 1.5 kB a
record), mostly teacher records plus student, shadow and eval ones, 2% failed calls, two
contract fingerprints per site (the older one for the first 30% of its records), one
validator verdict per successful record (8% failing), and the sites' `sites` rows. Then
it times what a user runs, in this process and through the same code the CLI runs:

- `status` and `sites`: the commands themselves (click's runner; no interpreter start-up);
- the due check: `scheduler.due_info` for one site, `scheduler.due_sites` for all;
- `records export --site` of one site, to a file (records/s);
- `dataset build` of one site, tokenizer loading and token statistics included, the
  import of transformers not (records/s);
- what the promotion gate reads for one decision (`gate.samples.promotion_samples`: the
  version's answers, their teacher references and the teacher's repeats).

Quick operations report the median of three runs. PostgreSQL gets `VACUUM ANALYZE` after
the fill, as autovacuum would give a settled database; SQLite is left as the app leaves it
(no ANALYZE). Without `--postgres-url` a throwaway server is started with
tests/postgres_server.py (needs PostgreSQL's server programs) and removed afterwards; a
given URL must point to an empty database.

    .venv/bin/python benchmarks/store_scale.py [--records 1000000] [--sites 50]
        [--backend sqlite|postgresql|both] [--postgres-url URL] [--json out.json]

Targets: `status` and the due check < 1 s, `records export --site` >= 50k records/s.
Takes ~8 min on 2 cores at 1M records for both backends, most of it the fill; each
store takes a few GB under /tmp while it runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
TESTS = Path(__file__).resolve().parent.parent / "tests"
CHUNK = 10_000

SYSTEM = ("    This is a task you must complete by returning only the output.\n    Do not "
          "include explanations, code, or extra text\u2014only the result.\n    ")
DOC = ("Triage a support ticket: its severity, the team that owns it, how many hours we have"
       "\nto reply, and whether a manager must see it.")
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "Triage", "schema": {
    "title": "Triage",
    "description": "Triage(severity: 'Severity', team: 'str', reply_within_hours: 'int', "
                   "needs_manager: 'bool')",
    "type": "object",
    "properties": {
        "severity": {"description": "\nThe value *should* be one in this list: [1, 2, 3, 4] "
                                    "where the names are [LOW, MEDIUM, HIGH, URGENT].",
                     "type": "integer", "enum": [1, 2, 3, 4]},
        "team": {"type": "string", "title": "Team"},
        "reply_within_hours": {"type": "integer", "title": "Reply Within Hours"},
        "needs_manager": {"type": "boolean", "title": "Needs Manager"}},
    "required": ["severity", "team", "reply_within_hours", "needs_manager"],
    "additionalProperties": False}, "strict": True}}
TEAMS = {"billing": "finance", "app": "mobile", "api": "platform", "website": "frontend",
         "login": "identity"}
SYMPTOMS = {"down": 4, "outage": 4, "crashes": 3, "error": 3, "fails": 3, "slow": 2,
            "confusing": 1, "typo": 1}
EXTRAS = ["since Monday", "for some users", "after the update", "on every page", "again",
          "this morning", "in Europe", "", "when I retry", "for my whole team"]
SOURCES = [("teacher", 0.85), ("student", 0.08), ("shadow", 0.04), ("eval", 0.03)]


def _dumps(value: Any) -> str:
    # As Record.to_row writes JSON columns.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def site_names(n: int) -> list[str]:
    return [f"bench.site_{i:02d}" for i in range(n)]


def fingerprints(site: str) -> tuple[str, str]:
    """(older, current) contract fingerprints of a site."""
    return tuple(hashlib.sha256(f"{site}:{k}".encode()).hexdigest()[:16]  # type: ignore[return-value]
                 for k in ("old", "new"))


def synthetic_rows(n: int, sites: list[str], seed: int = 0
                   ) -> Iterator[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """Chunks of (record rows, verdict rows), oldest first, sites interleaved."""
    from byllm_distill.store.export import verdicts_text
    from byllm_distill.store.record import input_hash
    from byllm_distill.validators.base import Verdict

    rng = random.Random(seed)
    schema = _dumps(RESPONSE_FORMAT)
    start = datetime.now(UTC) - timedelta(days=30)
    step_us = 30 * 86_400 * 1_000_000 // max(n, 1)
    old_until = 0.3 * n / len(sites)
    seen = dict.fromkeys(sites, 0)
    models = {site: ("gpt-4o-mini", "claude-3-5-haiku")[i % 2] for i, site in enumerate(sites)}
    records: list[dict[str, Any]] = []
    verdicts: list[dict[str, Any]] = []
    for i in range(n):
        site = rng.choice(sites)
        old, new = fingerprints(site)
        fingerprint = old if seen[site] < old_until else new
        seen[site] += 1
        moment = start + timedelta(microseconds=i * step_us)
        created_at = moment.isoformat(timespec="microseconds")
        source = rng.choices([s for s, _ in SOURCES], [w for _, w in SOURCES])[0]
        product, symptom = rng.choice(sorted(TEAMS)), rng.choice(sorted(SYMPTOMS))
        ticket = {"title": " ".join(filter(None, [product.capitalize(), symptom,
                                                  rng.choice(EXTRAS)])),
                  "product": product, "customer_tier": rng.randint(1, 3),
                  "hours_open": rng.randint(0, 72)}
        severity = SYMPTOMS[symptom]
        hours = {1: 24, 2: 12, 3: 4}[ticket["customer_tier"]] // (2 if severity >= 3 else 1)
        answer = {"severity": severity, "team": TEAMS[product], "reply_within_hours": hours,
                  "needs_manager": severity == 4 and ticket["customer_tier"] == 3}
        ok = rng.random() >= 0.02
        passed = ok and rng.random() >= 0.08
        detail = "" if passed else "needs_manager: expected boolean"
        record_id = f"{int(moment.timestamp() * 1e9):016x}{i:08x}"
        fields = ", ".join(f"{k}={v!r}" for k, v in ticket.items())
        records.append({
            "id": record_id, "site": site, "fingerprint": fingerprint,
            "model": models[site] if source == "teacher" else f"{site}-student-v1",
            "source": source,
            "messages": _dumps([{"role": "system", "content": SYSTEM}, {"role": "user", "content": [
                {"type": "text", "text": f"{DOC}\n\nticket = (Ticket({fields}), '')"}]}]),
            "schema": schema, "args": _dumps({"ticket": ticket}),
            "output_raw": json.dumps(answer) if ok else None,
            "output": _dumps(answer) if ok else None,
            "latency_ms": round(rng.uniform(200, 1500), 1), "usage": "{}", "cost": 0.0,
            "status": "ok" if ok else "error",
            "error": None if ok else "RateLimitError: rate limit reached",
            "created_at": created_at, "version": None if source == "teacher" else 1,
            "agreement": None, "valid": passed if ok else None,  # as Store.add_records
            "input_hash": input_hash(site, {"ticket": ticket}),
            "verdicts_json": verdicts_text([Verdict("schema", passed, detail)]) if ok else None})
        if ok:
            verdicts.append({"record_id": record_id, "name": "schema", "passed": passed,
                             "detail": detail})
        if len(records) == CHUNK:
            yield records, verdicts
            records, verdicts = [], []
    if records:
        yield records, verdicts


def fill(store: Any, n: int, sites: list[str]) -> float:
    """Bulk-insert the synthetic records, verdicts and site rows; returns seconds."""
    from byllm_distill.store import tables

    started = time.perf_counter()
    first_seen = (datetime.now(UTC) - timedelta(days=30)).isoformat(timespec="microseconds")
    with store.engine.begin() as conn:
        conn.execute(tables.sites.insert(), [
            {"site": site, "fingerprint": fp, "contract": _dumps({"schema": RESPONSE_FORMAT}),
             "first_seen": first_seen, "last_seen": datetime.now(UTC).isoformat()}
            for site in sites for fp in fingerprints(site)])
    done = 0
    for records, verdicts in synthetic_rows(n, sites):
        with store.engine.begin() as conn:
            conn.execute(tables.records.insert(), records)
            if verdicts:
                conn.execute(tables.verdicts.insert(), verdicts)
        done += len(records)
        if done % 100_000 < CHUNK:
            print(f"  {done:>9,} records, {time.perf_counter() - started:6.0f} s", flush=True)
    if store.engine.dialect.name == "postgresql":
        import sqlalchemy as sa

        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM ANALYZE"))
    return time.perf_counter() - started


def timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[float, Any]:
    """Median seconds over `repeat` runs, and the last run's result."""
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def cli(*argv: str) -> str:
    from click.testing import CliRunner

    from byllm_distill.cli import main

    result = CliRunner().invoke(main, list(argv), catch_exceptions=False)
    if result.exit_code != 0:
        raise SystemExit(f"`byllm-distill {' '.join(argv)}` failed: {result.output}")
    return result.output


def measure(backend: str, url: str, home: Path, n: int, n_sites: int) -> list[dict[str, Any]]:
    from byllm_distill import capture, router
    from byllm_distill.config import load_config
    from byllm_distill.gate.samples import promotion_samples
    from byllm_distill.scheduler import due_info, due_sites
    from byllm_distill.store import RecordFilter, Store
    from byllm_distill.training.base_model import load_tokenizer, resolve_base

    os.environ["BYLLM_DISTILL_HOME"] = str(home)
    os.environ["BYLLM_DISTILL_STORE_URL"] = url
    router.reset_router()
    capture.reset_capture()
    config = load_config()
    store = Store(url)
    if store.count():
        raise SystemExit(f"{store.display_url} already holds records; give an empty database.")
    sites = site_names(n_sites)
    print(f"{backend}: filling {store.display_url} with {n:,} records over {n_sites} sites",
          flush=True)
    rows: list[dict[str, Any]] = []

    def row(operation: str, seconds: float, records: int | None = None,
            target: str = "", met: bool | None = None) -> None:
        rate = records / seconds if records and seconds else None
        rows.append({"backend": backend, "operation": operation, "seconds": round(seconds, 4),
                     "records": records, "records_per_s": round(rate) if rate else None,
                     "target": target, "met": met})
        print(f"  {operation:<44} {seconds:9.3f} s"
              + (f"  {rate:>10,.0f} records/s" if rate else "")
              + ("" if met is None else "  target " + ("met" if met else "MISSED")), flush=True)

    row("bulk insert (records + verdicts + sites)", fill(store, n, sites), n)
    site = sites[0]
    in_site = store.count(RecordFilter(site=site))

    seconds, _ = timed(lambda: cli("status"), repeat=3)
    row("status", seconds, target="< 1 s", met=seconds < 1.0)
    seconds, _ = timed(lambda: cli("sites"), repeat=3)
    row("sites", seconds)
    seconds, info = timed(lambda: due_info(store, config, site), repeat=3)
    row(f"due check, one site ({info.new_records:,} new valid)", seconds, target="< 1 s",
        met=seconds < 1.0)
    seconds, _ = timed(lambda: due_sites(store, config), repeat=3)
    row(f"due check, all {n_sites} sites", seconds, target="< 1 s", met=seconds < 1.0)

    out = home / "export.jsonl"
    seconds, _ = timed(lambda: cli("records", "export", "--site", site, "--out", str(out)))
    with out.open(encoding="utf-8") as fh:
        exported = sum(1 for _ in fh)
    if exported != in_site:
        raise SystemExit(f"export wrote {exported} records, the site has {in_site}")
    with out.open(encoding="utf-8") as fh:  # the export's values are Record.to_public()'s
        for line, record in zip(fh, store.iter_records(RecordFilter(site=site)), strict=False):
            if json.loads(line) != record.to_public():
                raise SystemExit(f"export of {record.id} differs from Record.to_public()")
    row("records export --site", seconds, exported, target=">= 50k records/s",
        met=exported / seconds >= 50_000)

    load_tokenizer(resolve_base())  # imports transformers once, outside the timing
    seconds, _ = timed(lambda: cli("dataset", "build", site, "--out", str(home / "dataset")))
    manifest = json.loads((home / "dataset" / "manifest.json").read_text())
    row(f"dataset build ({manifest['counts']['train']:,} train examples)", seconds,
        manifest["counts"]["records"])

    seconds, samples = timed(lambda: promotion_samples(store, site, 1, info.fingerprint))
    row(f"gate inputs, one decision ({len(samples.answers):,} answers, {len(samples.pairs):,} "
        f"pairs, {len(samples.repeats):,} repeats)", seconds)
    store.close()
    return rows


def run_backend(backend: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    home = Path(tempfile.mkdtemp(prefix=f"store-scale-{backend}-"))
    server = None
    try:
        if backend == "sqlite":
            url = f"sqlite:///{home / 'distill.db'}"
        elif args.postgres_url:
            url = args.postgres_url
        else:
            sys.path.insert(0, str(TESTS))
            from postgres_server import PostgresServer

            server = PostgresServer()
            server.start()
            url = server.create_database()
        return measure(backend, url, home, args.records, args.sites)
    finally:
        if server is not None:
            server.cleanup()
        shutil.rmtree(home, ignore_errors=True)


def markdown(rows: list[dict[str, Any]], backends: list[str]) -> str:
    operations = list(dict.fromkeys(r["operation"].split(" (")[0] for r in rows))
    cell = {(r["backend"], r["operation"].split(" (")[0]): r for r in rows}
    out = ["| operation | target | " + " | ".join(backends) + " |",
           "|" + " --- |" * (2 + len(backends))]
    for op in operations:
        target = next((r["target"] for r in rows if r["operation"].startswith(op)), "")
        cells = []
        for backend in backends:
            r = cell.get((backend, op))
            if r is None:
                cells.append("-")
                continue
            text = f"{r['seconds']:.3f} s"
            if r["records_per_s"]:
                text += f", {r['records_per_s']:,} records/s"
            if r["met"] is not None:
                text += " ok" if r["met"] else " **missed**"
            cells.append(text)
        out.append(f"| {op} | {target} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--sites", type=int, default=50)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--postgres-url", help="An empty PostgreSQL database to fill "
                                               "(default: start a throwaway server).")
    parser.add_argument("--json", type=Path, help="Also write the rows here.")
    args = parser.parse_args()
    if args.records < args.sites or args.sites < 1:
        parser.error("--records must be at least --sites, and --sites at least 1")
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    rows = [r for backend in backends for r in run_backend(backend, args)]
    print(f"\n{args.records:,} records over {args.sites} sites\n")
    print(markdown(rows, backends))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(
            {"records": args.records, "sites": args.sites, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
