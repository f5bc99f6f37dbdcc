"""Screenshots for docs/evaluation.md, taken with headless Debian Chromium.

    .venv/bin/python scripts/screenshots.py [--out docs/images]

Builds a demo store in a temporary folder (offline-designer maps as the teacher, a
degraded stand-in student that drops every enemy, two raters), renders the evaluation
report and serves the rating page on 127.0.0.1, then writes `eval_report.png`,
`rating_page.png` (the rubric) and `rating_pair.png` (a side-by-side pair).
Needs the Debian package `chromium` (/usr/bin/chromium).
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the demo data comes from the test fixtures

from eval_fixtures import map_records, procedural_student  # noqa: E402

from byllm_distill.evaluation import answer_with_student, build_report  # noqa: E402
from byllm_distill.store import Store  # noqa: E402
from byllm_distill.web.rating import serve_rating  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]


def screenshot(url: str, path: Path, size: str, profile: Path) -> None:
    subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", f"--window-size={size}",
                    f"--screenshot={path}", url], check=True, capture_output=True, timeout=120)
    print(f"wrote {path}")


def demo_store(folder: Path) -> tuple[Store, list, list, list]:
    store = Store(f"sqlite:///{folder / 'demo.db'}")
    training, teacher = map_records(40, seed=1), map_records(12, seed=2)
    store.add_records(training + teacher)
    student = answer_with_student(teacher, procedural_student(5, drop_enemies=True),
                                  model="smollm2-135m-rpg", store=store, version=3)
    rng = random.Random(0)
    for rater in ("ann", "bob"):
        for t, s in zip(teacher[:6], student[:6], strict=True):
            store.add_rating(t.id, rater, {"gameplay": rng.choice((4, 5)), "structure": 5,
                                           "adherence": rng.choice((4, 5))})
            store.add_rating(s.id, rater, {"gameplay": rng.choice((1, 2)), "structure": 4,
                                           "adherence": rng.choice((1, 2))})
            store.add_preference(rater, t.id, s.id, rng.choice(("left", "left", "tie")))
    return store, teacher, student, training


def _post(url: str, form: dict[str, str]) -> None:
    request = urllib.request.Request(url, data=urllib.parse.urlencode(form).encode())
    urllib.request.urlopen(request, timeout=10).close()


def _advance_to(server_url: str, rater: str, want_pair: bool) -> str:
    """Skip items for `rater` until the page is a pair (or a single); return its URL."""
    url = f"{server_url}?rater={rater}"
    for _ in range(50):
        page = urllib.request.urlopen(url, timeout=10).read().decode()
        if ('id="choice-left"' in page) == want_pair:
            return url
        handle = page.split('name="handle" value="', 1)[1].split('"', 1)[0]
        _post(server_url + "skip", {"handle": handle, "rater": rater})
    raise RuntimeError("no such item to show")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="byllm-shots-") as tmp:
        folder = Path(tmp)
        store, teacher, student, training = demo_store(folder)
        report = build_report(teacher, student, training, folder / "report",
                              title="rpg.create_next_map: teacher vs smollm2-135m-rpg v3",
                              store=store)
        screenshot(report.as_uri(), args.out / "eval_report.png", "1200,3600", folder / "p1")
        with serve_rating(store, items=[*teacher[:3], *student[:3]],
                          rng=random.Random(1)) as server:
            screenshot(_advance_to(server.url, "dana", want_pair=False),
                       args.out / "rating_page.png", "1200,1150", folder / "p2")
            screenshot(_advance_to(server.url, "eli", want_pair=True),
                       args.out / "rating_pair.png", "1200,900", folder / "p3")


if __name__ == "__main__":
    main()
