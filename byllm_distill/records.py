"""One captured call (`Record`) and a validator's verdict on it (`Verdict`), as stored and as
exported. A leaf module: the store, the validators, capture and the router all read it.

The export format (`records export`) is public and stable: one JSON object per line with
the fields of `Record` in this order; JSON-valued fields are nested objects, not strings;
`verdicts` is a list of `{"name", "passed", "detail"}`, or null if never validated.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any

from byllm_distill.serialize import dumps_canonical

# teacher: the user's model answered. student: a local student served the call.
# shadow: a student answered a live call off the hot path, for scoring only.
# eval: a student answered a held-out teacher input during evaluation.
SOURCES = ("teacher", "student", "shadow", "eval")
STATUSES = ("ok", "error")
JSON_COLUMNS = ("messages", "schema", "args", "output", "usage")  # JSON text in the store


@dataclass(frozen=True)
class Verdict:
    name: str
    passed: bool
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _RandomSuffixes:
    """4 random bytes per id, as hex, from `os.urandom` (what `secrets.token_hex` reads)
    taken 1,024 ids at a time: each `urandom` call releases the GIL, and capture's writer
    thread makes an id per record while the program runs. A forked child draws its own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = -1
        self._hex = ""
        self._next = 0

    def take(self) -> str:
        with self._lock:
            if self._next >= len(self._hex) or self._pid != os.getpid():
                self._hex, self._next, self._pid = os.urandom(4096).hex(), 0, os.getpid()
            start = self._next
            self._next = start + 8
            return self._hex[start:start + 8]


_suffixes = _RandomSuffixes()


def new_record_id(time_ns: int | None = None) -> str:
    """A 24-hex-digit id that sorts by creation time (ns clock, then 4 random bytes);
    `time_ns`: that time (`time.time_ns()`), when it was not now."""
    return f"{time.time_ns() if time_ns is None else time_ns:016x}{_suffixes.take()}"


def input_hash(site: str, args: Any) -> str:
    return hashlib.sha256((site + "\n" + dumps_canonical(args)).encode()).hexdigest()[:32]


def utc_now(time_ns: int | None = None) -> str:
    """Now (or `time_ns`, a `time.time_ns()`) as ISO text with microseconds, UTC."""
    if time_ns is None:
        return datetime.now(UTC).isoformat(timespec="microseconds")
    seconds, ns = divmod(time_ns, 1_000_000_000)
    moment = datetime.fromtimestamp(seconds, UTC).replace(microsecond=ns // 1000)
    return moment.isoformat(timespec="microseconds")


def utc_ago(seconds: float) -> str:
    """`utc_now()` of `seconds` ago, comparable with it as text (heartbeat cutoffs)."""
    return (datetime.now(UTC) - timedelta(seconds=seconds)).isoformat(timespec="microseconds")


@dataclass
class Record:
    site: str
    fingerprint: str
    model: str
    messages: list[Any]
    args: dict[str, Any]
    latency_ms: float
    source: str = "teacher"
    schema: dict[str, Any] | None = None
    output_raw: str | None = None
    output: Any = None
    usage: dict[str, Any] = field(default_factory=dict)
    cost: float | None = None
    status: str = "ok"
    error: str | None = None
    id: str = field(default_factory=new_record_id)
    created_at: str = field(default_factory=utc_now)
    version: int | None = None  # the student version that answered (student/shadow records)
    agreement: float | None = None  # agreement with the teacher's answer, when measured
    # Why the teacher answered a call its site's student would have served (teacher
    # records only; e.g. the student was busy past `max_wait_ms`); None otherwise.
    route: str | None = None
    # Validator verdicts live in their own table; None means "not loaded / not validated".
    verdicts: list[Verdict] | None = field(default=None, compare=False)

    @property
    def valid(self) -> bool | None:
        """True when every verdict passed, False when any failed, None if unvalidated."""
        if self.verdicts is None or not self.verdicts:
            return None
        return all(v.passed for v in self.verdicts)

    def input_key(self) -> str:
        """Identity of the call's input: the site plus its canonical arguments. Two records
        with the same key answered the same question (teacher vs student, or a repeat)."""
        return self.site + "\n" + dumps_canonical(self.args)

    def input_hash(self) -> str:
        """`input_key()` as 32 hex characters (stored in `records.input_hash`)."""
        return input_hash(self.site, self.args)

    def to_public(self) -> dict[str, Any]:
        """The stable export shape: `id` first, then the documented fields."""
        data = asdict(self)
        ordered = ["id", "site", "fingerprint", "model", "source", "messages", "schema",
                   "args", "output_raw", "output", "latency_ms", "usage", "cost", "status",
                   "error", "created_at", "version", "agreement", "route", "verdicts"]
        return {key: data[key] for key in ordered}

    def to_row(self) -> dict[str, Any]:
        """The `records` columns; JSON-valued fields as JSON text."""
        # The fields as they are (no `asdict` deep copy): the JSON columns hold plain JSON
        # values; a dataclass inside one (json.dumps refuses it) goes through `asdict`.
        row = {name: getattr(self, name) for name in _ROW_FIELDS}
        try:
            _dump_json_columns(row)
        except TypeError:
            row = asdict(self)
            del row["verdicts"]
            _dump_json_columns(row)
        return row

    @classmethod
    def from_row(cls, row: Any) -> Record:
        data = dict(row._mapping) if hasattr(row, "_mapping") else dict(row)
        for column in JSON_COLUMNS:
            if data.get(column) is not None:
                data[column] = json.loads(data[column])
        if data.get("usage") is None:
            data["usage"] = {}
        return cls(**data)


_ROW_FIELDS = tuple(f.name for f in fields(Record) if f.name != "verdicts")


def _dump_json_columns(row: dict[str, Any]) -> None:
    for column in JSON_COLUMNS:
        row[column] = None if row[column] is None else json.dumps(
            row[column], ensure_ascii=False, separators=(",", ":"), sort_keys=False
        )
