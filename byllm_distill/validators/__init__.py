"""Validators: generic checks derived from a call site's output type, plus task checks
registered per call site (see registry.py)."""

from byllm_distill.validators.base import Verdict

__all__ = ["Verdict"]
