"""Generic teacher-vs-student metrics, for any call site.

All are computed from the pairs of an `EvalData` (pairing.py), so teacher and student are
measured on exactly the same inputs:

- validity: per verdict name, the fraction of answers that passed it, from a fresh
  `validators.registry.validate(record)`. The denominator is every answer, so a check an
  unparseable answer never reached counts as failed. `all_pass` is the fraction of
  answers passing every verdict.
- agreement: `exact_match`, the fraction of pairs whose outputs have identical canonical
  JSON; for dict outputs, per top-level field the fraction of pairs with an identical
  value, and their mean (`field_mean`); `leaf_mean`, the mean fraction of equal leaf
  values (byllm_distill.agreement, the measure the promotion gate uses).
- latency: p50, p95 and mean of `Record.latency_ms`.
- cost per 1,000 calls: teacher, mean recorded `Record.cost` x 1000, priced from litellm's
  bundled price table and the token usage where the cost is missing and litellm knows the
  model; calls that can be priced neither way are counted as `unpriced`. Student: $0, plus
  the process CPU seconds per 1,000 calls measured around each answer (`usage["cpu_s"]`).

`compute_metrics` adds the task metrics registered for the site (registry.py).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from byllm_distill.agreement import agreement as leaf_agreement
from byllm_distill.evaluation.pairing import EvalData, Pair
from byllm_distill.serialize import dumps_canonical
from byllm_distill.stats import percentile
from byllm_distill.store.record import Record
from byllm_distill.task_metrics import MetricRegistry
from byllm_distill.task_metrics import registry as metric_registry
from byllm_distill.validators import registry as validators


def validity(records: Sequence[Record]) -> dict[str, Any]:
    n = len(records)
    passed: dict[str, int] = {}
    all_pass = 0
    for record in records:
        verdicts = validators.validate(record)
        for verdict in verdicts:
            passed[verdict.name] = passed.get(verdict.name, 0) + int(verdict.passed)
        all_pass += int(bool(verdicts) and all(v.passed for v in verdicts))
    return {
        "n": n,
        "all_pass": all_pass / n if n else None,
        "per_validator": {name: k / n for name, k in sorted(passed.items())},
    }


def agreement(pairs: Sequence[Pair]) -> dict[str, Any]:
    n = len(pairs)
    exact = sum(dumps_canonical(p.teacher.output) == dumps_canonical(p.student.output)
                for p in pairs)
    dict_pairs = [p for p in pairs
                  if isinstance(p.teacher.output, dict) and isinstance(p.student.output, dict)]
    names = sorted({k for p in dict_pairs for k in (*p.teacher.output, *p.student.output)})
    fields = {
        name: sum(dumps_canonical(p.teacher.output.get(name))
                  == dumps_canonical(p.student.output.get(name)) for p in dict_pairs)
        / len(dict_pairs)
        for name in names
    }
    leaves = [leaf_agreement(p.teacher.output, p.student.output) for p in pairs]
    return {
        "n": n,
        "exact_match": exact / n if n else None,
        "fields": fields,
        "field_mean": sum(fields.values()) / len(fields) if fields else None,
        "leaf_mean": sum(leaves) / n if n else None,
    }


def latency(records: Sequence[Record]) -> dict[str, Any]:
    values = [r.latency_ms for r in records if r.latency_ms is not None]
    return {
        "n": len(values),
        "p50_ms": percentile(values, 50),
        "p95_ms": percentile(values, 95),
        "mean_ms": sum(values) / len(values) if values else None,
    }


def litellm_price(model: str, usage: dict[str, Any]) -> float | None:
    """USD for one call from token usage and litellm's bundled price table, None if unknown.

    The table is read directly: litellm's helpers print a banner for unknown models.
    """
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    # Without this litellm fetches its price list from the internet at import.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    for name in (model, model.split("/", 1)[-1]):
        price = litellm.model_cost.get(name)
        if isinstance(price, dict) and "input_cost_per_token" in price:
            return (prompt * float(price["input_cost_per_token"])
                    + completion * float(price.get("output_cost_per_token") or 0.0))
    return None


def teacher_cost(records: Sequence[Record]) -> dict[str, Any]:
    costs, from_litellm = [], 0
    for record in records:
        if record.cost is not None:
            costs.append(record.cost)
        elif (price := litellm_price(record.model, record.usage or {})) is not None:
            costs.append(price)
            from_litellm += 1
    return {
        "usd_per_1k_calls": 1000 * sum(costs) / len(costs) if costs else None,
        "priced_calls": len(costs),
        "priced_from_litellm": from_litellm,
        "unpriced_calls": len(records) - len(costs),
    }


def student_cost(records: Sequence[Record]) -> dict[str, Any]:
    cpu = [r.usage["cpu_s"] for r in records
           if isinstance((r.usage or {}).get("cpu_s"), int | float)]
    return {
        "usd_per_1k_calls": 0.0,
        "cpu_s_per_1k_calls": 1000 * sum(cpu) / len(cpu) if cpu else None,
        "measured_calls": len(cpu),
    }


def compute_metrics(data: EvalData, registry: MetricRegistry | None = None) -> dict[str, Any]:
    """Every generic metric for teacher and student, then the site's task metrics."""
    teacher, student = data.teacher, data.student
    return {
        "site": data.site,
        "pairs": len(data.pairs),
        "training_records": len(data.training),
        "teacher_models": sorted({r.model for r in teacher}),
        "student_models": sorted({r.model for r in student}),
        "validity": {"teacher": validity(teacher), "student": validity(student)},
        "agreement": agreement(data.pairs),
        "latency": {"teacher": latency(teacher), "student": latency(student)},
        "cost": {"teacher": teacher_cost(teacher), "student": student_cost(student)},
        "task": (registry or metric_registry).compute(data),
    }
