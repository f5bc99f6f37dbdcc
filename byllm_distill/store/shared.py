"""One `Store` per database URL per process, for code that has a URL but no store.

Opening a store migrates it and builds a connection pool; the registry, read on every
routed call, must not do that each time.
"""

from __future__ import annotations

import threading

from byllm_distill.store.store import Store

_stores: dict[str, Store] = {}
_lock = threading.Lock()


def shared_store(url: str) -> Store:
    with _lock:
        store = _stores.get(url)
        if store is None:
            store = _stores[url] = Store(url)
        return store


def close_shared_stores() -> None:
    """Dispose every shared store's connections (tests, and before a process forks)."""
    with _lock:
        while _stores:
            _stores.popitem()[1].close()
