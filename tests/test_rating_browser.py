"""The blind rating tool: a real browser rates and prefers; the token rule; blindness.

The browser test drives Debian's Chromium (package `chromium`) through Selenium and
Debian's ChromeDriver (package `chromium-driver`); it is skipped only when those binaries
are absent. No browser is downloaded.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from eval_fixtures import level_records, map_records, procedural_student

from byllm_distill.errors import DistillError
from byllm_distill.evaluation import answer_with_student
from byllm_distill.evaluation.ratings import criteria_for
from byllm_distill.store import Record, Store
from byllm_distill.web.rating import items_from_store, serve_rating

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1280,1000"]
TOKEN = "correct-horse-battery"

CRITERIA = criteria_for("rpg.create_next_map")  # the RPG task's rubric (rpg/plugin.py)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """Two map inputs answered by the teacher and a student, plus one lone level answer
    (shown as JSON: levels have no renderer). All five: 5 single items and 2 pairs."""
    store = Store(f"sqlite:///{tmp_path / 'rate.db'}")
    teacher = map_records(2, seed=21)
    store.add_records(teacher + level_records(1, seed=22))
    answer_with_student(teacher, procedural_student(3), model="tiny-student-q4", store=store,
                        version=2)
    return store


def _forbidden(records: list[Record]) -> list[str]:
    words = [r"\bteacher\b", r"\bstudent\b", r"\bshadow\b", r"\beval\b"]
    words += [re.escape(r.model) for r in records]
    words += [re.escape(r.id[:12]) for r in records]
    return words


def _assert_blind(page: str, records: list[Record]) -> None:
    for pattern in _forbidden(records):
        assert not re.search(pattern, page, re.IGNORECASE), f"page reveals {pattern!r}"


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, dict]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def _post(url: str, form: dict[str, str], headers: dict[str, str] | None = None) -> int:
    data = urllib.parse.urlencode(form).encode()
    request = urllib.request.Request(url, data=data, headers=headers or {}, method="POST")

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object) -> None:
            return None

    try:
        with urllib.request.build_opener(NoRedirect).open(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_other_addresses_need_a_token_and_requests_without_it_get_403(store: Store) -> None:
    # 127.0.0.2 is loopback, so nothing leaves the machine, but it is not 127.0.0.1.
    with pytest.raises(DistillError, match="needs a token"):
        serve_rating(store, host="127.0.0.2")
    with pytest.raises(DistillError, match="at least 8 characters"):
        serve_rating(store, host="127.0.0.2", token="short")
    with serve_rating(store, host="127.0.0.2", token=TOKEN) as server:
        base = server.url.split("?")[0]
        assert server.url.endswith(f"?token={TOKEN}")
        assert _get(base)[0] == 403
        assert _get(base + "?token=wrong-token-value")[0] == 403
        assert _get(base, {"X-Rating-Token": "wrong-token-value"})[0] == 403
        status, _, headers = _get(base + f"?token={TOKEN}")
        assert status == 200 and "HttpOnly" in headers["Set-Cookie"]
        assert _get(base + "?rater=ann", {"Cookie": f"rating_token={TOKEN}"})[0] == 200
        assert _get(base + "?rater=ann", {"X-Rating-Token": TOKEN})[0] == 200
        handle = next(iter(server.app.items))
        form = {"handle": handle, "rater": "ann", **dict.fromkeys(CRITERIA, "3")}
        assert _post(base + "rate", form) == 403
        assert _post(base + "rate", form, {"X-Rating-Token": "wrong-token-value"}) == 403
    assert store.ratings() == []


def test_forms_reject_bad_input(store: Store) -> None:
    with serve_rating(store) as server:
        base = server.url
        single = next(h for h, item in server.app.items.items() if hasattr(item, "record"))
        bad = {"handle": single, "rater": "ann", **dict.fromkeys(CRITERIA, "9")}
        assert _post(base + "rate", bad) == 400
        assert _post(base + "rate", {**bad, "handle": "nope", "gameplay": "3",
                                     "structure": "3", "adherence": "3"}) == 404
        assert _post(base + "prefer", {"handle": single, "rater": "ann", "choice": "left"}) == 404
        assert _post(base + "rate", {**bad, "rater": "  "}) == 400
        status, page, _ = _get(base + "?rater=" + urllib.parse.quote("<script>x</script>"))
        assert status == 200 and "<script>" not in page and "&lt;script&gt;" in page
    assert store.ratings() == [] and store.preferences() == []


def test_every_page_is_blind_and_skipping_walks_all_items(store: Store) -> None:
    # With student answers present, the default items are the inputs a student answered.
    records = items_from_store(store)
    assert len(records) == 4 and {r.site for r in records} == {"rpg.create_next_map"}
    with serve_rating(store) as server:
        assert len(server.app.items) == 6
        seen = set()
        for _ in range(6):
            status, page, _ = _get(server.url + "?rater=bob")
            assert status == 200
            _assert_blind(page, records)
            handle = re.search(r'name="handle" value="([^"]+)"', page).group(1)
            seen.add(handle)
            assert _post(server.url + "skip", {"handle": handle, "rater": "bob"}) == 303
        assert seen == set(server.app.items)
        assert "All done" in _get(server.url + "?rater=bob")[1]


@pytest.mark.skipif(not CHROMIUM.exists() or not CHROMEDRIVER.exists(),
                    reason="Debian packages chromium and chromium-driver are not installed "
                           "(/usr/bin/chromium, /usr/bin/chromedriver)")
def test_browser_rates_and_prefers_blind(store: Store, tmp_path: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    def submit_and_wait(button_id: str) -> None:
        # A click returns before the next page loads; every page has a new title.
        title = driver.title
        driver.find_element(By.ID, button_id).click()
        WebDriverWait(driver, 10).until(lambda d: d.title != title)

    records = list(store.iter_records())
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    with serve_rating(store, items=records) as server:
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        try:
            driver.get(server.url)
            pages = [driver.page_source]
            driver.find_element(By.ID, "rater").send_keys("alice")
            submit_and_wait("start")
            for _ in range(len(server.app.items)):
                pages.append(driver.page_source)
                assert driver.title.startswith("Item ")
                if driver.find_elements(By.ID, "choice-left"):
                    driver.find_element(By.CSS_SELECTOR, "label[for=choice-left]").click()
                else:
                    for criterion, score in zip(CRITERIA, (4, 5, 3), strict=True):
                        driver.find_element(By.CSS_SELECTOR,
                                            f"label[for={criterion}-{score}]").click()
                    driver.find_element(By.ID, "comment").send_keys("nice & <tidy>")
                submit_and_wait("submit")
            assert driver.title == "All done"
            pages.append(driver.page_source)
        finally:
            driver.quit()
    for page in pages:
        _assert_blind(page, records)
    ratings, preferences = store.ratings(), store.preferences()
    assert len(ratings) == 5 and len(preferences) == 2
    assert {r["record_id"] for r in ratings} == {r.id for r in records}
    assert all(r["rater"] == "alice" and r["scores"] == {"gameplay": 4, "structure": 5,
                                                         "adherence": 3} for r in ratings)
    assert {r["comment"] for r in ratings} == {"nice & <tidy>"}
    by_id = {r.id: r for r in records}
    for pref in preferences:
        left, right = by_id[pref["left_id"]], by_id[pref["right_id"]]
        assert pref["choice"] == "left" and left.args == right.args
        assert {left.source, right.source} == {"teacher", "eval"}
