"""Durable storage of captured calls (see store.py for the contract)."""

from byllm_distill.store.query import RecordFilter, SiteSummary, parse_since
from byllm_distill.store.record import Record
from byllm_distill.store.store import Store

__all__ = ["Record", "RecordFilter", "SiteSummary", "Store", "parse_since"]
