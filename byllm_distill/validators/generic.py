"""Validators derived from the output type, for every call site.

`parses`: the call succeeded and produced a value. `matches_schema`: the value satisfies
the JSON schema byLLM sent as `response_format` (types, required fields, enums, and any
ranges the schema states). Records of `str` sites have no schema and get `parses` only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jsonschema

from byllm_distill.validators.base import Verdict

if TYPE_CHECKING:
    from byllm_distill.records import Record


def output_schema(record: Record) -> dict | None:
    """The JSON schema of the output, unwrapped from byLLM's response_format."""
    fmt = record.schema
    if not isinstance(fmt, dict):
        return None
    inner = fmt.get("json_schema", fmt)
    return inner.get("schema", inner) if isinstance(inner, dict) else None


def generic_verdicts(record: Record) -> list[Verdict]:
    if record.status != "ok" or record.output is None:
        return [Verdict("parses", False, record.error or "no parsed output")]
    verdicts = [Verdict("parses", True)]
    schema = output_schema(record)
    if schema is not None:
        errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(record.output),
                        key=lambda e: list(e.path))
        detail = "; ".join(
            f"{'/'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in errors[:3]
        )
        verdicts.append(Verdict("matches_schema", not errors, detail))
    return verdicts
