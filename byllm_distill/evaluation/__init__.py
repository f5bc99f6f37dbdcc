"""Evaluation: teacher-vs-student metrics and reports per call site (report.py), task
metrics registered per site (registry.py), and the manual-rating rubric (ratings.py)."""

from byllm_distill.evaluation.metrics import compute_metrics
from byllm_distill.evaluation.pairing import (
    EvalData,
    Pair,
    heldout_split,
    pair_records,
)
from byllm_distill.evaluation.report import build_report
from byllm_distill.scoring import StudentAnswer, answer_with_student
from byllm_distill.task_metrics import MetricRegistry, TaskMetric, registry

__all__ = ["EvalData", "MetricRegistry", "Pair", "StudentAnswer", "TaskMetric",
           "answer_with_student", "build_report", "compute_metrics", "heldout_split",
           "pair_records", "registry"]
