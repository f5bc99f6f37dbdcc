"""Counting records that capture could not store.

When the store is unavailable, locked, full, or a value will not serialize, the record is
dropped (the user's call is untouched) and one JSON line `{"at", "cause", "count", "detail"}` is
appended to `dropped.jsonl` in the data directory (created if missing, as it is where a
PostgreSQL store keeps nothing else), or to a file in the system temp folder when the data
directory itself cannot be written. `byllm-distill status` adds up
both. Each distinct cause is logged once per process as a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger("byllm_distill")


def _fallback_file(data_dir: Path) -> Path:
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"byllm-distill-dropped-{digest}.jsonl"


class DropLog:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    @property
    def files(self) -> list[Path]:
        return [self.data_dir / "dropped.jsonl", _fallback_file(self.data_dir)]

    def add(self, cause: str, count: int = 1, detail: str = "") -> None:
        """Count `count` dropped records under a short `cause`; never raises."""
        line = json.dumps({"at": datetime.now(UTC).isoformat(), "cause": cause, "count": count,
                           "detail": detail})
        with self._lock:
            if cause not in self._warned:
                self._warned.add(cause)
                log.warning("byllm-distill: capture dropped a record (%s%s); the call itself "
                            "was not affected. `byllm-distill status` shows the count.",
                            cause, f": {detail}" if detail else "")
            for path in self.files:
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)  # a remote store's
                    with path.open("a", encoding="utf-8") as fh:  # data dir may not exist yet
                        fh.write(line + "\n")
                    return
                except OSError:
                    continue

    def totals(self) -> dict[str, int]:
        """Dropped-record counts per cause, from both files."""
        out: dict[str, int] = {}
        for path in self.files:
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except OSError:
                continue
            for line in lines:
                try:
                    entry = json.loads(line)
                    out[entry["cause"]] = out.get(entry["cause"], 0) + int(entry["count"])
                except (ValueError, KeyError, TypeError):
                    continue
        return out
