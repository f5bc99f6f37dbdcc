"""What of a call's arguments a site's student reads: its input policy.

Contract. An `InputPolicy` is part of a site's codec (`codec.py`), so a version serves with
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

`choose(args, outputs, ...)` decides `drop` / `keep_last` from a site's training records.
It cannot train a student per choice, so it measures with a proxy student that costs
nothing: the nearest other training record's answer (leave one out, similarity over the
argument leaves, lists aligned from their most recent item). It only acts where that is
safe and worth it:

- a candidate path takes at least `MIN_SHARE` of the prompt and `MIN_CHARS` characters on
  average (small inputs cost little, and may be what the answer is computed from);
- a path the codec links answers to (copied into the answer, or bounding a length or a
  number, see codec.py) is never a candidate, nor is anything above or inside it;
- the proxy must see something: with every input whole it must agree with the teacher
  at least `SIGNAL` better than with no inputs at all, else nothing is chosen;
- a choice (leave the path out, else keep its newest 1, else 3 items; the cheapest
  first) is kept only if no answer field loses agreement (per field, paired lower 95%
  bound of the difference above `-MARGIN`).

The measurements go into the policy's `chosen` report, and so into the manifest. Paths
named in `jac.toml` (`drop_inputs`, `keep_last`) are the user's choice and are not measured.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from byllm_distill.training import TrainingError

MIN_SHARE = 0.2  # a path must take at least this share of the prompt to be worth measuring
MIN_CHARS = 400  # ... and about 100 tokens (mean serialised characters)
# Agreement a choice may lose per answer field (lower 95% bound of the paired difference;
# the gate's default agreement margin), and the least the proxy must beat no inputs by.
MARGIN = 0.1
SIGNAL = 0.05
PROXY_RECORDS = 150  # records the proxy student measures on (seeded sample)
MIN_RECORDS = 20  # fewer records than this cannot show what an input is worth
PROXY_ITEMS = 8  # the proxy compares lists by their last few items
KEEP_CHOICES = (1, 3)


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


def object_paths(args: dict[str, Any], path: str = "") -> list[str]:
    out = []
    for key, value in args.items():
        here = f"{path}/{key}" if path else key
        out.append(here)
        if isinstance(value, dict):
            out += object_paths(value, here)
    return out


def check_paths(site: str, paths: list[str], args: list[dict[str, Any]], key: str) -> None:
    """Every configured path must exist in some record; else an error naming `key`."""
    known = sorted({p for a in args for p in object_paths(a)})
    for path in paths:
        if path not in known:
            raise TrainingError(
                f"jac.toml {key}: {path!r} is not an argument path of site {site!r}; its "
                f"paths are {', '.join(known[:40]) or 'none'}.")


def _size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def shares(args: list[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    """(mean share of the serialised arguments, mean characters) each path's value takes."""
    totals: dict[str, list[float]] = {}
    for a in args:
        whole = max(1, _size(a))
        for path in object_paths(a):
            size = _size(get_path(a, path))
            entry = totals.setdefault(path, [0.0, 0.0])
            entry[0] += size / whole
            entry[1] += size
    return {p: (t[0] / len(args), t[1] / len(args)) for p, t in totals.items()}


def _features(value: Any, path: str = "", out: dict[str, Any] | None = None) -> dict[str, Any]:
    """Leaves by path; list items keyed from the end (`-1` is the newest), the last few."""
    out = {} if out is None else out
    if isinstance(value, dict):
        for key, item in value.items():
            _features(item, f"{path}/{key}", out)
    elif isinstance(value, list):
        for back, item in enumerate(reversed(value[-PROXY_ITEMS:]), start=1):
            _features(item, f"{path}/-{back}", out)
        out[f"{path}/#"] = len(value)
    else:
        out[path] = value
    return out


def leaf_similarity(a: dict[str, Any], b: dict[str, Any]) -> float:
    """0..1 between two {path: leaf} maps: shared leaves weighted by closeness (numbers
    by relative difference)."""
    keys = a.keys() | b.keys()
    if not keys:
        return 1.0
    score = 0.0
    for key in a.keys() & b.keys():
        x, y = a[key], b[key]
        if x == y:
            score += 1.0
        elif (isinstance(x, int | float) and isinstance(y, int | float)
              and not isinstance(x, bool) and not isinstance(y, bool)):
            score += 1.0 - min(1.0, abs(x - y) / max(abs(x), abs(y), 1e-9))
    return score / len(keys)


def _field_agreement(a: Any, b: Any) -> dict[str, float]:
    if isinstance(a, dict) and a:
        other = b if isinstance(b, dict) else {}
        return {k: float(a[k] == other.get(k)) for k in a}
    return {"": float(a == b)}


def proxy_agreement(args: list[dict[str, Any]], outputs: list[Any]) -> list[dict[str, float]]:
    """Per record, per answer field: whether its answer agrees with that of the most
    similar other record."""
    feats = [_features(a) for a in args]
    out = []
    for i, mine in enumerate(feats):
        best, best_j = -1.0, -1
        for j, other in enumerate(feats):
            if j != i:
                score = leaf_similarity(mine, other)
                if score > best:
                    best, best_j = score, j
        out.append(_field_agreement(outputs[i], outputs[best_j] if best_j >= 0 else None))
    return out


def _mean(scores: list[dict[str, float]]) -> float:
    return sum(sum(s.values()) / len(s) for s in scores) / len(scores)


def _worst_field(new: list[dict[str, float]], old: list[dict[str, float]]) -> tuple[str, float]:
    """The answer field whose agreement the change hurts most: (field, lower bound)."""
    fields = sorted({k for s in old for k in s})
    bounds = [(f, _paired_lower([s.get(f, 0.0) for s in new], [s.get(f, 0.0) for s in old]))
              for f in fields]
    return min(bounds, key=lambda fb: fb[1])


def _paired_lower(new: list[float], old: list[float]) -> float:
    diffs = [n - o for n, o in zip(new, old, strict=True)]
    mean = sum(diffs) / len(diffs)
    var = sum((d - mean) ** 2 for d in diffs) / max(1, len(diffs) - 1)
    return mean - 1.96 * math.sqrt(var / len(diffs))


def choose(site: str, args: list[dict[str, Any]], outputs: list[Any],
           drop: tuple[str, ...] = (), keep_last: dict[str, int] | None = None,
           seed: int = 0, linked: set[str] | frozenset[str] = frozenset()) -> InputPolicy:
    """The input policy of a site from its training records (see the module docstring);
    `drop` / `keep_last` are the user's settings, applied first and never second-guessed;
    `linked` are the argument paths the codec ties answers to."""
    keep_last = dict(keep_last or {})
    check_paths(site, list(drop), args, "drop_inputs")
    check_paths(site, list(keep_last), args, "keep_last")
    policy = InputPolicy(drop=tuple(drop), keep_last=keep_last)
    for path in drop:
        policy.chosen[path] = {"choice": "drop", "by": "jac.toml"}
    for path, keep in keep_last.items():
        policy.chosen[path] = {"choice": f"last {keep}", "by": "jac.toml"}
    if len(args) < MIN_RECORDS:
        return policy
    picked = sorted(random.Random(seed).sample(range(len(args)), min(PROXY_RECORDS, len(args))))
    sample_args = [policy.apply(args[i]) for i in picked]
    sample_out = [outputs[i] for i in picked]
    candidates = [
        (path, share) for path, (share, chars) in shares(sample_args).items()
        if share >= MIN_SHARE and chars >= MIN_CHARS and path not in policy.chosen
        and not any(p == path or p.startswith(path + "/") or path.startswith(p + "/")
                    for p in linked)]
    if not candidates:
        return policy
    current = proxy_agreement(sample_args, sample_out)
    blind = _mean(proxy_agreement([{} for _ in sample_args], sample_out))
    if _mean(current) - blind < SIGNAL:  # the proxy cannot tell inputs apart here
        for path, share in candidates:
            policy.chosen[path] = {"choice": "whole", "by": "records", "proxy": {
                "share": round(share, 3), "whole": round(_mean(current), 3),
                "no_inputs": round(blind, 3), "note": "no signal"}}
        return policy
    for path, share in sorted(candidates, key=lambda c: (-c[1], c[0])):
        if any(path.startswith(p + "/") for p in policy.drop):
            continue
        is_list = any(isinstance(get_path(a, path), list) for a in sample_args)
        trials: list[tuple[str, InputPolicy]] = [
            ("drop", InputPolicy((*policy.drop, path), dict(policy.keep_last)))]
        if is_list:
            trials += [(f"last {k}", InputPolicy(policy.drop, {**policy.keep_last, path: k}))
                       for k in KEEP_CHOICES]
        report: dict[str, Any] = {"share": round(share, 3), "whole": round(_mean(current), 3),
                                  "no_inputs": round(blind, 3)}
        choice = "whole"
        for name, trial in trials:
            scores = proxy_agreement([trial.apply(a) for a in sample_args], sample_out)
            field, lower = _worst_field(scores, current)
            report[name] = {"agreement": round(_mean(scores), 3), "worst_field": field,
                            "lower_diff": round(lower, 3)}
            if lower >= -MARGIN:
                choice, policy.drop, policy.keep_last = name, trial.drop, trial.keep_last
                current = scores
                break
        policy.chosen[path] = {"choice": choice, "by": "records", "proxy": report}
    return policy
