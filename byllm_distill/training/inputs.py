"""Which of a call's arguments a site's student reads: choosing its input policy.

`choose(args, outputs, ...)` decides the `drop` / `keep_last` of a site's `InputPolicy`
(codec/inputs.py, the contract serving applies) from its training records.
It cannot train a student per choice, so it measures with a proxy student that costs
nothing: the nearest other training record's answer (leave one out, similarity over the
argument leaves, lists aligned from their most recent item). It only acts where that is
safe and worth it:

- a candidate path takes at least `MIN_SHARE` of the prompt and `MIN_CHARS` characters on
  average (small inputs cost little, and may be what the answer is computed from);
- a path the codec links answers to (copied into the answer, or bounding a length or a
  number, see codec/site.py) is never a candidate, nor is anything above or inside it;
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
from typing import Any

from byllm_distill.codec.inputs import InputPolicy, get_path
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
