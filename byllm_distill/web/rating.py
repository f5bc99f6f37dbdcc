"""A blind rating tool in the browser: `serve_rating(store, ...)`.

Contract. Each record to rate gets an opaque handle (random, new every server start), and
each input answered by two or more sources (the teacher, student versions) also gets one
side-by-side pair (which record goes left is random). The mapping from handles to records
lives only in this process: pages show the rendered answer and the call's arguments,
never a source, model, record id or timestamp. Each rater (an id typed on the first page,
or `?rater=`) gets the items in their own random order, minus those they already rated.
Scores go to `Store.add_rating(record_id, rater, {criterion: 1..5}, comment)` and
preferences to `Store.add_preference(rater, left_id, right_id, choice)`.

Access. The server binds to 127.0.0.1 unless told otherwise. Any other address requires a
token (at least 8 characters); without one `serve_rating` refuses to start. With a token,
every request must carry it: `?token=` (the first page then sets a same-site cookie), the
cookie, or an `X-Rating-Token` header; anything else gets 403.
"""

from __future__ import annotations

import base64
import hmac
import logging
import random
import secrets
import socket
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from byllm_distill.errors import DistillError
from byllm_distill.evaluation.pairing import STUDENT_SOURCES, args_key
from byllm_distill.evaluation.ratings import criteria_for, rubric_for, source_label
from byllm_distill.store import RecordFilter, Store
from byllm_distill.store.record import Record
from byllm_distill.task_metrics import registry as metric_registry
from byllm_distill.web import rating_html as html

log = logging.getLogger("byllm_distill")

LOCAL_HOSTS = ("127.0.0.1", "::1", "localhost")
MIN_TOKEN_CHARS = 8
MAX_BODY = 64 * 1024
MAX_RATER_CHARS = 64
COOKIE = "rating_token"


@dataclass(frozen=True)
class Single:
    handle: str
    record: Record


@dataclass(frozen=True)
class Duo:
    handle: str
    left: Record
    right: Record


def items_from_store(store: Store, site: str | None = None, limit: int = 200) -> list[Record]:
    """Successful answers to rate, newest inputs first, at most `limit` records.

    When some student answers exist, only inputs a student answered are kept (with the
    teacher's answers to them), so raters compare like with like.
    """
    records = [r for source in ("teacher", *STUDENT_SOURCES)
               for r in store.iter_records(RecordFilter(site=site, source=source, status="ok"),
                                           with_verdicts=False)]
    groups: dict[str, list[Record]] = {}
    for record in sorted(records, key=lambda r: r.id, reverse=True):
        groups.setdefault(args_key(record), []).append(record)
    if any(r.source != "teacher" for r in records):
        groups = {k: g for k, g in groups.items() if any(r.source != "teacher" for r in g)}
    out: list[Record] = []
    for group in groups.values():
        if out and len(out) + len(group) > limit:
            break
        out.extend(group)
    return out[:limit]


class RatingApp:
    """Handles, per-rater queues and the writes; shared by the server's threads."""

    def __init__(self, store: Store, records: Iterable[Record], token: str | None = None,
                 rng: random.Random | None = None) -> None:
        self.store = store
        self.token = token
        self._rng = rng or random.SystemRandom()
        self._lock = threading.Lock()
        self._tmp = tempfile.TemporaryDirectory(prefix="byllm-rating-")
        self._images: dict[str, str | None] = {}
        self._queues: dict[str, list[str]] = {}
        self._done: dict[str, int] = {}
        self.items: dict[str, Single | Duo] = {}
        records = list(records)
        for record in records:
            self._add(Single(self._handle(), record))
        # One answer per source label: a student's live, shadow and eval answers to the
        # same input are one version, and never a pair with each other.
        groups: dict[str, dict[str, Record]] = {}
        for record in records:
            groups.setdefault(args_key(record), {}).setdefault(source_label(record), record)
        for versions in groups.values():
            if len(versions) >= 2:
                left, right = self._rng.sample(list(versions.values()), 2)
                self._add(Duo(self._handle(), left, right))

    def _handle(self) -> str:
        return secrets.token_urlsafe(12)

    def _add(self, item: Single | Duo) -> None:
        self.items[item.handle] = item

    def close(self) -> None:
        self._tmp.cleanup()

    # -- queues ----------------------------------------------------------------------

    def _queue(self, rater: str) -> list[str]:
        """The rater's remaining handles; built (shuffled) on their first visit."""
        if rater not in self._queues:
            rated = {r["record_id"] for r in self.store.ratings() if r["rater"] == rater}
            preferred = {frozenset((p["left_id"], p["right_id"]))
                         for p in self.store.preferences() if p["rater"] == rater}
            todo = [h for h, item in self.items.items()
                    if not (isinstance(item, Single) and item.record.id in rated)
                    and not (isinstance(item, Duo)
                             and frozenset((item.left.id, item.right.id)) in preferred)]
            self._rng.shuffle(todo)
            self._queues[rater] = todo
            self._done[rater] = len(self.items) - len(todo)
        return self._queues[rater]

    def next_item(self, rater: str) -> tuple[Single | Duo | None, int, int]:
        """(item or None when finished, its 1-based position, total) for the rater."""
        with self._lock:
            queue = self._queue(rater)
            position = self._done[rater] + 1
            return (self.items[queue[0]] if queue else None), position, len(self.items)

    def _finish(self, rater: str, handle: str) -> None:
        with self._lock:
            queue = self._queue(rater)
            if handle in queue:
                queue.remove(handle)
                self._done[rater] += 1

    def single(self, handle: str) -> Single:
        """The rating item `handle` names (LookupError: there is none)."""
        item = self.items.get(handle)
        if not isinstance(item, Single):
            raise LookupError(handle)
        return item

    def rate(self, rater: str, handle: str, scores: dict[str, int], comment: str) -> None:
        self.store.add_rating(self.single(handle).record.id, rater, scores, comment)
        self._finish(rater, handle)

    def prefer(self, rater: str, handle: str, choice: str) -> None:
        item = self.items.get(handle)
        if not isinstance(item, Duo):
            raise LookupError(handle)
        self.store.add_preference(rater, item.left.id, item.right.id, choice)
        self._finish(rater, handle)

    def skip(self, rater: str, handle: str) -> None:
        self._finish(rater, handle)

    # -- rendering -------------------------------------------------------------------

    def _image(self, record: Record) -> str | None:
        """The record's rendered output as a data: URI, cached; None if not drawable.

        The file name is a fresh random name, so nothing about the record leaks through it.
        """
        with self._lock:
            if record.id in self._images:
                return self._images[record.id]
        render = metric_registry.renderer(record.site)
        uri = None
        if render is not None:
            path = render(record.output, Path(self._tmp.name) / f"{secrets.token_hex(8)}.png")
            if path is not None:
                uri = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()
                path.unlink()
        with self._lock:
            self._images[record.id] = uri
        return uri

    def page(self, rater: str) -> str:
        item, position, total = self.next_item(rater)
        if item is None:
            return html.done(rater, total)
        if isinstance(item, Single):
            site, args = item.record.site, item.record.args
            answer = html.answer_view("The answer", self._image(item.record), item.record.output)
            return html.rating_page(item.handle, rater, position, total, args, answer,
                                    metric_registry.legend(site), rubric_for(site))
        site, args = item.left.site, item.left.args
        left = html.answer_view("Left", self._image(item.left), item.left.output)
        right = html.answer_view("Right", self._image(item.right), item.right.output)
        return html.pair_page(item.handle, rater, position, total, args, left, right,
                              metric_registry.legend(site), rubric_for(site))


def clean_rater(value: str | None) -> str | None:
    """The rater id without surrounding spaces or control characters; None if unusable."""
    text = "".join(ch for ch in (value or "") if ch.isprintable()).strip()
    return text if 0 < len(text) <= MAX_RATER_CHARS else None


class _Handler(BaseHTTPRequestHandler):
    server_version = "rating"
    sys_version = ""
    app: RatingApp  # set on the subclass made per server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("rating: " + format, *args)

    def _send(self, status: int, body: str, headers: dict[str, str] | None = None) -> None:
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Security-Policy", "default-src 'none'; img-src data:; "
                         "style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _redirect(self, rater: str) -> None:
        self.send_response(HTTPStatus.SEE_OTHER)
        self.send_header("Location", f"/?rater={quote(rater)}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _authorised(self, query: dict[str, list[str]]) -> tuple[bool, dict[str, str]]:
        """(allowed, extra headers); a valid `?token=` also sets the cookie."""
        token = self.app.token
        if token is None:
            return True, {}
        cookies = SimpleCookie(self.headers.get("Cookie", ""))
        offered = [*query.get("token", []), self.headers.get("X-Rating-Token", "")]
        if COOKIE in cookies:
            offered.append(cookies[COOKIE].value)
        for i, candidate in enumerate(offered):
            if candidate and hmac.compare_digest(candidate.encode(), token.encode()):
                from_query = i < len(query.get("token", []))
                cookie = f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"
                return True, ({"Set-Cookie": cookie} if from_query else {})
        return False, {}

    def _forbidden(self) -> None:
        self._send(HTTPStatus.FORBIDDEN, html.message(
            "Forbidden", "This rating session needs its token: open the exact link that "
                         "`byllm-distill rate` printed."))

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        allowed, headers = self._authorised(query)
        if not allowed:
            return self._forbidden()
        if url.path != "/":
            return self._send(HTTPStatus.NOT_FOUND, html.message("Not found", "No such page."))
        raw = query.get("rater", [None])[0]
        rater = clean_rater(raw)
        if rater is None:
            error = "" if raw is None else "A rater id is 1 to 64 printable characters."
            return self._send(HTTPStatus.OK, html.welcome(error), headers)
        self._send(HTTPStatus.OK, self.app.page(rater), headers)

    do_HEAD = do_GET

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        url = urlsplit(self.path)
        allowed, _ = self._authorised(parse_qs(url.query))
        if not allowed:
            return self._forbidden()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            return self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                              html.message("Too large", "That form is too large."))
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode("utf-8",
                                                                             "replace")).items()}
        rater, handle = clean_rater(form.get("rater")), form.get("handle", "")
        if rater is None:
            return self._send(HTTPStatus.BAD_REQUEST,
                              html.message("Bad request", "The form has no valid rater id."))
        try:
            if url.path == "/rate":
                site = self.app.single(handle).record.site
                scores = {c: int(form.get(c, "")) for c in criteria_for(site)}
                if not all(1 <= s <= 5 for s in scores.values()):
                    raise ValueError("scores are 1 to 5")
                self.app.rate(rater, handle, scores, form.get("comment", "")[:2000])
            elif url.path == "/prefer":
                choice = form.get("choice", "")
                if choice not in ("left", "right", "tie"):
                    raise ValueError("choice is left, right or tie")
                self.app.prefer(rater, handle, choice)
            elif url.path == "/skip":
                self.app.skip(rater, handle)
            else:
                return self._send(HTTPStatus.NOT_FOUND, html.message("Not found", "No such page."))
        except ValueError:
            return self._send(HTTPStatus.BAD_REQUEST, html.message(
                "Bad request", "Give every criterion a score from 1 to 5 (or a preference)."))
        except LookupError:
            return self._send(HTTPStatus.NOT_FOUND, html.message(
                "Unknown item", "That item is not part of this session; reload the page."))
        self._redirect(rater)


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class RatingServer:
    """A running rating server (in a background thread); `close()` stops it."""

    def __init__(self, httpd: ThreadingHTTPServer, app: RatingApp) -> None:
        self.httpd, self.app = httpd, app
        # A short poll interval keeps close() quick; an idle wake-up costs nothing here.
        self._thread = threading.Thread(target=httpd.serve_forever, name="rating-server",
                                        kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        suffix = f"?token={quote(self.app.token)}" if self.app.token else ""
        return f"http://{host}:{port}/{suffix}"

    def wait(self) -> None:
        """Block until interrupted (Ctrl-C), then close."""
        try:
            while self._thread.is_alive():
                time.sleep(0.5)
        finally:
            self.close()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.app.close()

    def __enter__(self) -> RatingServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve_rating(store: Store, host: str = "127.0.0.1", port: int = 0,
                 token: str | None = None, items: Iterable[Record] | None = None,
                 rng: random.Random | None = None) -> RatingServer:
    """Start the rating server on host:port (0: any free port) and return it, running.

    `items` are the records to rate; default `items_from_store(store)`.
    """
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise DistillError(f"the rating token must be at least {MIN_TOKEN_CHARS} characters.")
    if host not in LOCAL_HOSTS and token is None:
        raise DistillError(
            f"refusing to serve ratings on {host}: any address but 127.0.0.1 can be reached "
            "from other machines, so it needs a token. Pass --token SECRET (raters open the "
            "printed link, which carries it) or bind to 127.0.0.1.")
    records = list(items) if items is not None else items_from_store(store)
    if not records:
        raise DistillError("nothing to rate: the store holds no successful answers "
                           "for this selection.")
    app = RatingApp(store, records, token, rng)
    server_cls = _Server6 if ":" in host else _Server
    try:
        httpd = server_cls((host, port), type("Handler", (_Handler,), {"app": app}))
    except OSError as exc:
        app.close()
        raise DistillError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return RatingServer(httpd, app)
