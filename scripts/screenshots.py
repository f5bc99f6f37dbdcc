"""Screenshots for docs/evaluation.md, from a real `byllm-distill demo` run, taken with
headless Debian Chromium.

    .venv/bin/byllm-distill demo                      # ~15-26 min; leaves .byllm-distill-demo
    .venv/bin/python scripts/screenshots.py [--home .byllm-distill-demo] [--out docs/images]

Reads the demo's data folder: the map site's trained version, the teacher's held-out maps
and the student's answers to the same inputs (its held-out evaluation and shadow answers,
nothing run again), renders the evaluation report with the gate's criteria, and serves the
rating page over the same answers on 127.0.0.1; then writes `eval_report.png`,
`rating_page.png` (the rubric) and `rating_pair.png` (a side-by-side pair). No ratings are
invented: the report's ratings section says none were given. Needs the Debian package
`chromium` (/usr/bin/chromium).
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]
SITE = "rpg.create_next_map"


def screenshot(url: str, path: Path, size: str, profile: Path) -> None:
    subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", f"--window-size={size}",
                    f"--screenshot={path}", url], check=True, capture_output=True, timeout=120)
    print(f"wrote {path}")


def _post(url: str, form: dict[str, str]) -> None:
    request = urllib.request.Request(url, data=urllib.parse.urlencode(form).encode())
    urllib.request.urlopen(request, timeout=10).close()


def _advance_to(server_url: str, rater: str, want_pair: bool) -> str:
    """Skip items for `rater` until the page is a pair (or a single); return its URL."""
    url = f"{server_url}?rater={rater}"
    for _ in range(200):
        page = urllib.request.urlopen(url, timeout=10).read().decode()
        if ('id="choice-left"' in page) == want_pair:
            return url
        handle = page.split('name="handle" value="', 1)[1].split('"', 1)[0]
        _post(server_url + "skip", {"handle": handle, "rater": rater})
    raise RuntimeError("no such item to show")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=Path(".byllm-distill-demo"),
                        help="The data folder of a finished `byllm-distill demo` run.")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args()
    home = args.home.resolve()
    if not (home / "distill.db").is_file():
        raise SystemExit(f"{home} holds no demo store; run `byllm-distill demo` first "
                         "(or give --home).")
    os.environ["BYLLM_DISTILL_HOME"] = str(home)
    from byllm_distill.config import load_config
    from byllm_distill.evaluation.run import evaluate_site
    from byllm_distill.store import Store
    from byllm_distill.web.rating import items_from_store, serve_rating

    config = load_config()
    store = Store(config.database_url)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="byllm-shots-") as tmp:
        folder = Path(tmp)
        outcome = evaluate_site(store, config.data_dir, SITE, out_dir=folder / "report",
                                settings=config.site(SITE))
        if outcome.answered:
            print(f"note: the student answered {outcome.answered} held-out input(s) anew")
        screenshot(outcome.report.as_uri(), args.out / "eval_report.png", "1200,3600",
                   folder / "p1")
        with serve_rating(store, items=items_from_store(store, SITE, limit=40),
                          rng=random.Random(1)) as server:
            screenshot(_advance_to(server.url, "dana", want_pair=False),
                       args.out / "rating_page.png", "1200,1150", folder / "p2")
            screenshot(_advance_to(server.url, "eli", want_pair=True),
                       args.out / "rating_pair.png", "1200,900", folder / "p3")


if __name__ == "__main__":
    main()
