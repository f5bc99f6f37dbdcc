"""The errors byllm-distill raises.

Every message says what was wrong and what to do about it. Capture and routing never
let these reach a user's `by llm()` call: they are caught at that boundary and logged.
"""


class DistillError(Exception):
    """Base class for every error raised by byllm-distill."""


class ConfigError(DistillError):
    """`jac.toml` `[plugins.distill]` or a `BYLLM_DISTILL_*` variable is invalid."""


class StoreError(DistillError):
    """The record store cannot be opened, migrated, read or written."""


class NotFoundError(DistillError):
    """A record, call site or model version named by the user does not exist."""


class SerializationError(DistillError):
    """A value (argument or output) cannot be turned into JSON for the store."""
