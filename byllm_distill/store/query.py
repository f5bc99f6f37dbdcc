"""Which records a query asks for (`RecordFilter`) and what a site summary holds.

`RecordFilter.clauses()` turns the filter into SQL conditions on `records`; `parse_since`
reads the `--since` values the CLI accepts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from byllm_distill.errors import StoreError
from byllm_distill.store import tables

_RELATIVE = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str) -> str:
    """`--since` value → ISO timestamp. Accepts `30m`, `2h`, `7d`, a date or a datetime."""
    match = _RELATIVE.match(text.strip())
    if match:
        delta = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
        return (datetime.now(UTC) - delta).isoformat(timespec="microseconds")
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise StoreError(
            f"--since {text!r} is not understood; use e.g. 30m, 2h, 7d, 2026-11-01 "
            "or 2026-11-01T12:00:00"
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class RecordFilter:
    site: str | None = None
    fingerprint: str | None = None
    model: str | None = None
    source: str | None = None
    status: str | None = None
    since: str | None = None
    ids: Sequence[str] | None = None
    valid: bool | None = None  # True: validated and every verdict passed; False: any failed
    version: int | None = None
    input_hashes: Sequence[str] | None = None  # records answering these inputs
    checked: bool | None = None  # True: an agreement with the teacher was measured

    def clauses(self) -> list[Any]:
        r = tables.records.c
        out: list[Any] = []
        # `records.valid` is written with the verdicts: true when every one passed, false
        # when any failed, NULL when none are stored. `==` rather than IS, which
        # PostgreSQL cannot match against an index.
        if self.valid is not None:
            if self.valid:
                out.extend([r.status == "ok", r.valid == sa.true()])
            else:
                out.append(sa.or_(r.status == "error", r.valid == sa.false()))
        for column, value in (("site", self.site), ("fingerprint", self.fingerprint),
                              ("model", self.model), ("source", self.source),
                              ("status", self.status)):
            if value is not None:
                out.append(getattr(r, column) == value)
        if self.since is not None:
            out.append(r.created_at >= parse_since(self.since))
        if self.ids is not None:
            out.append(r.id.in_(list(self.ids)))
        if self.version is not None:
            out.append(r.version == self.version)
        if self.input_hashes is not None:
            out.append(r.input_hash.in_(list(self.input_hashes)))
        if self.checked is not None:
            out.append(r.agreement.isnot(None) if self.checked else r.agreement.is_(None))
        return out


@dataclass(frozen=True)
class SiteSummary:
    site: str
    fingerprint: str
    records: int
    models: list[str]
    last_seen: str

    def to_dict(self) -> dict[str, Any]:
        return {"site": self.site, "fingerprint": self.fingerprint, "records": self.records,
                "models": self.models, "last_seen": self.last_seen}
