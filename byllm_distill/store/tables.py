"""The current shape of the store's tables, for queries (migrations.py creates them)."""

import sqlalchemy as sa

metadata = sa.MetaData()

records = sa.Table(
    "records",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("site", sa.String(512)),
    sa.Column("fingerprint", sa.String(64)),
    sa.Column("model", sa.String(256)),
    sa.Column("source", sa.String(16)),
    sa.Column("messages", sa.Text),
    sa.Column("schema", sa.Text),
    sa.Column("args", sa.Text),
    sa.Column("output_raw", sa.Text),
    sa.Column("output", sa.Text),
    sa.Column("latency_ms", sa.Float),
    sa.Column("usage", sa.Text),
    sa.Column("cost", sa.Float),
    sa.Column("status", sa.String(16)),
    sa.Column("error", sa.Text),
    sa.Column("created_at", sa.String(40)),
    sa.Column("version", sa.Integer),
    sa.Column("agreement", sa.Float),
    sa.Column("route", sa.Text),
    # Not a Record field: whether every stored verdict passed (None: no verdicts), kept with
    # the verdicts so counts of valid records need no per-record verdict lookup.
    sa.Column("valid", sa.Boolean),
    # sha256 of `Record.input_key()` (site + canonical arguments), 32 hex characters: the
    # gate finds the teacher's answer to a student's input, and inputs the teacher answered
    # twice, by index instead of reading every teacher record.
    sa.Column("input_hash", sa.String(32)),
    # The record's verdicts as `records export` writes them (a JSON list, by name), kept
    # with the verdicts rows so an export reads one table; NULL when there are none.
    sa.Column("verdicts_json", sa.Text),
)

sites = sa.Table(
    "sites",
    metadata,
    sa.Column("site", sa.String(512), primary_key=True),
    sa.Column("fingerprint", sa.String(64), primary_key=True),
    sa.Column("contract", sa.Text),
    sa.Column("first_seen", sa.String(40)),
    sa.Column("last_seen", sa.String(40)),
)

verdicts = sa.Table(
    "verdicts",
    metadata,
    sa.Column("record_id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("passed", sa.Boolean),
    sa.Column("detail", sa.Text),
)

ratings = sa.Table(
    "ratings",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("record_id", sa.String(32)),
    sa.Column("rater", sa.String(128)),
    sa.Column("scores", sa.Text),  # JSON object: rubric criterion -> 1..5
    sa.Column("comment", sa.Text),
    sa.Column("created_at", sa.String(40)),
)

preferences = sa.Table(
    "preferences",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("rater", sa.String(128)),
    sa.Column("left_id", sa.String(32)),
    sa.Column("right_id", sa.String(32)),
    sa.Column("choice", sa.String(8)),  # "left", "right" or "tie"
    sa.Column("created_at", sa.String(40)),
)

site_events = sa.Table(
    "site_events",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("site", sa.String(512)),
    sa.Column("kind", sa.String(32)),
    sa.Column("version", sa.Integer),
    sa.Column("details", sa.Text),  # JSON: the numbers behind the decision
    sa.Column("created_at", sa.String(40)),
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("site", sa.String(512)),
    sa.Column("status", sa.String(16)),  # queued, running, done, failed
    sa.Column("attempts", sa.Integer),
    sa.Column("created_at", sa.String(40)),
    sa.Column("started_at", sa.String(40)),
    sa.Column("finished_at", sa.String(40)),
    sa.Column("heartbeat_at", sa.String(40)),
    sa.Column("pid", sa.Integer),
    sa.Column("progress", sa.Text),  # JSON
    sa.Column("version", sa.Integer),
    sa.Column("error", sa.Text),
)

site_state = sa.Table(
    "site_state",
    metadata,
    sa.Column("site", sa.String(512), primary_key=True),
    sa.Column("mode", sa.String(16)),
    sa.Column("active", sa.Integer),
    sa.Column("pinned", sa.String(16)),
    sa.Column("fingerprint", sa.String(64)),
    sa.Column("previous", sa.Text),  # JSON list
    sa.Column("updated_at", sa.String(40)),
)

versions = sa.Table(
    "versions",
    metadata,
    sa.Column("site", sa.String(512), primary_key=True),
    sa.Column("number", sa.Integer, primary_key=True),
    sa.Column("status", sa.String(16)),
    sa.Column("manifest", sa.Text),
    sa.Column("created_at", sa.String(40)),
)

locks = sa.Table(
    "locks",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("holder", sa.String(128)),
    sa.Column("acquired_at", sa.String(40)),
    sa.Column("heartbeat_at", sa.String(40)),
)

