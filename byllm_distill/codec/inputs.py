"""What of a call's arguments a site's student reads: its input policy.

Contract. An `InputPolicy` is part of a site's codec (`site.py`), so a version serves with
exactly the policy it was trained with. Paths are `/`-separated object keys into the
arguments as capture stores them (`self/prev_levels` for a method's object state).

- `drop`: paths left out of the student's prompt.
- `keep_last`: list paths cut to their last N items (the most recent, as Jac programs
  append).
- `budget`: the most tokens of the student's whole prompt (chat template included).
  `fit(args, count)` applies `drop` and `keep_last`; when the prompt is still over the
  budget, every list in the arguments is cut to its last k items, with the largest k that
  fits ("compacted"); a prompt that does not fit even with every list empty is "over"
  (training leaves that record out, serving lets the teacher answer).

Training decides a policy from a site's records (`training/inputs.py`, `choose`); serving
only applies it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


def get_path(value: Any, path: str) -> Any:
    """The value at a `/`-separated path of object keys, or None."""
    for part in path.split("/"):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _edit(args: dict[str, Any], path: str, change: Callable[[Any], Any]) -> dict[str, Any]:
    """A copy of `args` with the value at `path` replaced by `change(value)` (a special
    `_DROP` removes the key); a missing path leaves `args` as it is."""
    head, _, rest = path.partition("/")
    if not isinstance(args, dict) or head not in args:
        return args
    out = dict(args)
    if rest:
        out[head] = _edit(args[head], rest, change)
    else:
        new = change(args[head])
        if new is _DROP:
            del out[head]
        else:
            out[head] = new
    return out


_DROP = object()


def list_paths(value: Any, path: str = "") -> list[str]:
    """Paths (through object keys) of every list in `value`."""
    out = []
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}/{key}" if path else key
            if isinstance(item, list):
                out.append(here)
            out += list_paths(item, here)
    return out


def _cut_lists(args: dict[str, Any], keep: int) -> dict[str, Any]:
    for path in list_paths(args):
        args = _edit(args, path, lambda v: v[-keep:] if keep else [])
    return args


@dataclass
class InputPolicy:
    drop: tuple[str, ...] = ()
    keep_last: dict[str, int] = field(default_factory=dict)
    budget: int | None = None
    chosen: dict[str, Any] = field(default_factory=dict)

    def apply(self, args: dict[str, Any]) -> dict[str, Any]:
        for path in self.drop:
            args = _edit(args, path, lambda _: _DROP)
        for path, keep in self.keep_last.items():
            args = _edit(args, path, lambda v, k=keep: v[-k:] if isinstance(v, list) else v)
        return args

    def fit(self, args: dict[str, Any], count: Callable[[dict[str, Any]], int]
            ) -> tuple[dict[str, Any], str]:
        """(the arguments the student reads, "kept" | "compacted" | "over"); `count`
        gives the tokens of the student's whole prompt for some arguments."""
        shown = self.apply(args)
        if self.budget is None or count(shown) <= self.budget:
            return shown, "kept"
        longest = max((len(get_path(shown, p)) for p in list_paths(shown)), default=0)
        if not longest or count(_cut_lists(shown, 0)) > self.budget:
            return _cut_lists(shown, 0), "over"
        low, high = 0, longest - 1  # invariant: keeping `low` items fits, `high + 1` does not
        while low < high:
            mid = (low + high + 1) // 2
            if count(_cut_lists(shown, mid)) <= self.budget:
                low = mid
            else:
                high = mid - 1
        return _cut_lists(shown, low), "compacted"

    def describe(self) -> str:
        parts = [f"drop {p}" for p in self.drop]
        parts += [f"{p}: last {k}" for p, k in self.keep_last.items()]
        if self.budget is not None:
            parts.append(f"budget {self.budget} tokens")
        return ", ".join(parts) or "every input, whole"

    def to_dict(self) -> dict[str, Any]:
        return {"drop": list(self.drop), "keep_last": dict(self.keep_last),
                "budget": self.budget, "chosen": self.chosen}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> InputPolicy:
        if not data:
            return cls()
        return cls(drop=tuple(data.get("drop", ())),
                   keep_last={k: int(v) for k, v in data.get("keep_last", {}).items()},
                   budget=None if data.get("budget") is None else int(data["budget"]),
                   chosen=data.get("chosen", {}))


# Choosing from the records ------------------------------------------------------------------
