"""Whether the router takes a student's answer to a live call, its two checks.

Before the call, `over_wait_budget`: with a wait budget (`max_wait_ms`), a student whose
queue (runtime/load.py) would keep this call waiting longer gives it to the teacher, and
the reason is the record's `route`. After it, `rejection`: the router scores the answer
itself (scoring.py, the one scoring step) and hands capture the scored record to store;
an answer that raised, could not be recorded, could not be validated (the validators
themselves failed: logged, the record stored unvalidated) or failed a validator is
rejected, with the reason, and the teacher answers. The record is stored either way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from byllm_distill.capture import Capture
from byllm_distill.scoring import score
from byllm_distill.store import Record

Warn = Callable[..., None]  # the router's `_warn_once(key, message, *args)`


def over_wait_budget(site: str, budget: float | None, student: Any, warn: Warn) -> str | None:
    """Why the call goes to the teacher under the site's wait budget, or None."""
    expected = getattr(student, "expected_wait_ms", None)
    if not budget or expected is None:
        return None
    try:
        wait = expected()
    except Exception as exc:  # noqa: BLE001 - the student's own call reports real failures
        warn(f"wait:{site}", "byllm-distill: %s: cannot tell how busy the student is "
             "(%s: %s); calls go to it.", site, type(exc).__name__, exc)
        return None
    if wait <= budget:
        return None
    return f"student busy: expected wait {wait:.0f} ms > max_wait_ms {budget:g}"


def rejection(error: BaseException | None, record: Record | None, capture: Capture,
              warn: Warn) -> str | None:
    """Score and store the student's record (from `Capture.run(hand_back=True)`); why its
    answer is rejected, or None when it stands."""
    scored = record is not None and _scored(record, capture, warn)
    if error is not None:
        return f"{type(error).__name__}: {error}"
    if record is None:
        return "not recorded"
    if not scored:
        return "validators could not run"
    if record.valid is False:
        return "; ".join(f"{v.name}: {v.detail}" for v in record.verdicts or [] if not v.passed)
    return None


def _scored(record: Record, capture: Capture, warn: Warn) -> bool:
    try:
        score(record)
    except Exception as exc:  # noqa: BLE001 - a validator failure falls back, logged
        warn(f"score:{record.site}:{type(exc).__name__}", "byllm-distill: validators could "
             "not run on %s (%s: %s); the teacher answers.", record.site,
             type(exc).__name__, exc)
        return False
    finally:
        capture.store(record)
    return True
