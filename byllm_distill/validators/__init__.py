"""Validators: generic checks derived from a call site's output type, plus task checks
registered per call site (see registry.py)."""

from byllm_distill.validators.base import Verdict
from byllm_distill.validators.registry import ValidatorRegistry, registry, validator

__all__ = ["ValidatorRegistry", "Verdict", "registry", "validator"]
