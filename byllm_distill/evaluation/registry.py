"""Moved to byllm_distill/task_metrics.py (below the gate, which reads its fidelity
distances); kept so plug-ins importing `byllm_distill.evaluation.registry` still load."""

from byllm_distill.task_metrics import MetricRegistry, TaskMetric, registry

__all__ = ["MetricRegistry", "TaskMetric", "registry"]
