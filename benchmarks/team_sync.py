"""Team mode: how long until another machine obeys a decision, and what a version costs to
share. Two data dirs stand for two machines; they share a throwaway PostgreSQL server
and an S3-compatible server (moto, its own process), both started here.

- decision latency: machine A rolls a site back (or promotes it); machine B's router is
  asked for the site's state in a loop until it sees the change (real clock, real
  polling: `router.STATE_POLL_S`), over `--trials` decisions;
- a version of `--mb` MB (random bytes standing in for a GGUF): upload from A (the files,
  then the manifest), then B's first use (download, sha256 check, rename into place).

    .venv/bin/python benchmarks/team_sync.py [--trials 10] [--mb 100]

Needs PostgreSQL's server programs and the dev extra (moto); prints its figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

SITE = "bench.create_next_map"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--mb", type=int, default=100)
    args = parser.parse_args()

    from postgres_server import PostgresServer
    from s3_server import ENV, S3Server

    pg, s3 = PostgresServer(), S3Server()
    pg.start()
    s3.start()
    try:
        os.environ.update({**ENV, "BYLLM_DISTILL_STORE_URL": pg.create_database(),
                           "BYLLM_DISTILL_ARTIFACTS": s3.bucket(),
                           "BYLLM_DISTILL_ARTIFACTS_ENDPOINT": s3.endpoint})
        run(args)
    finally:
        s3.stop()
        pg.cleanup()


def run(args: argparse.Namespace) -> None:
    from byllm_distill import router as router_mod
    from byllm_distill.capture import Capture
    from byllm_distill.config import load_config
    from byllm_distill.registry import SiteRegistry, file_manifest

    home = Path(tempfile.mkdtemp(prefix="team-sync-"))
    base = load_config()
    a, b = replace(base, home=home / "a"), replace(base, home=home / "b")
    registry_a, registry_b = SiteRegistry(a, SITE), SiteRegistry(b, SITE)

    started = time.perf_counter()
    with registry_a.new_version() as (number, folder):
        with (folder / "model.gguf").open("wb") as fh:
            for _ in range(args.mb):
                fh.write(os.urandom(1 << 20))
        (folder / "manifest.json").write_text(json.dumps(
            {"fingerprint": "fp", "files": file_manifest(folder)}))
    upload_s = time.perf_counter() - started
    started = time.perf_counter()
    registry_b.verify(number)
    download_s = time.perf_counter() - started

    # A's changes bump this process's own change counter, which would refresh B's cache at
    # once; on another machine nothing does, so hold it still.
    router_mod.state_generation = lambda: 0
    router_b = router_mod.Router(Capture(b), b, student_loader=lambda site, version: None)
    registry_a.activate(number, mode="student")
    waits = []
    for trial in range(args.trials):
        router_b._state(SITE)  # B has the current state cached, as a busy app would
        if trial % 2 == 0:
            registry_a.rollback()
            wanted = "teacher"
        else:
            registry_a.activate(number, mode="student")
            wanted = "student"
        decided = time.perf_counter()
        while router_b._state(SITE).mode != wanted:
            time.sleep(0.01)
        waits.append(time.perf_counter() - decided)
        time.sleep(0.37 * (trial % 3))  # decisions land at different points of B's poll

    print(f"version of {args.mb} MB: upload from A {upload_s:.2f} s "
          f"({args.mb / upload_s:.0f} MB/s); first use on B (download + sha256 check) "
          f"{download_s:.2f} s ({args.mb / download_s:.0f} MB/s)")
    print(f"decision made on A obeyed by B's router after: median "
          f"{statistics.median(waits):.2f} s, max {max(waits):.2f} s over {len(waits)} "
          f"decisions (bound: STATE_POLL_S = {router_mod.STATE_POLL_S} s)")


if __name__ == "__main__":
    main()
