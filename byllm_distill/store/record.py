"""Records and verdicts live in byllm_distill/records.py (a leaf module); this name is kept
for the modules and plug-ins that import them from here."""

from byllm_distill.records import (
    JSON_COLUMNS,
    SOURCES,
    STATUSES,
    Record,
    Verdict,
    input_hash,
    new_record_id,
    utc_ago,
    utc_now,
)

__all__ = ["JSON_COLUMNS", "SOURCES", "STATUSES", "Record", "Verdict", "input_hash",
           "new_record_id", "utc_ago", "utc_now"]
