"""What a validator returns: one named pass/fail verdict with a human-readable detail
(`Verdict`, defined beside `Record` in byllm_distill/records.py)."""

from byllm_distill.records import Verdict

__all__ = ["Verdict"]
