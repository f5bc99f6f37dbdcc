"""Durable storage of captured calls (see store.py for the contract)."""

from byllm_distill.store.record import Record
from byllm_distill.store.store import RecordFilter, SiteSummary, Store, parse_since

__all__ = ["Record", "RecordFilter", "SiteSummary", "Store", "parse_since"]
