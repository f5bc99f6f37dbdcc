"""`auto_train`: the app starts the training worker itself when a site becomes due.

Contract. Off by default. With `auto_train = true`, capture's writer thread (never the
caller's) calls `AutoTrain.check` after it writes records, at most every `CHECK_S`
seconds, and once more when the program exits. When training may start now
(`quiet_hours`, `max_load`: scheduler.quiet_now) and a site is due (scheduler.due_sites,
less sites backing off after failures or already being trained), it takes the store's
`auto-train` lock (store/locks.py) and starts `byllm-distill worker --once` as a detached
process: its own session, so it outlives the app, at low priority as every worker runs,
with the app's environment and working directory, so it reads the same configuration. Its
output goes to `<data dir>/auto-train.log`; `history SITE` lists an `auto_train` event.

The worker renews the lock while it runs (`hold_lock`) and releases it when nothing is
left to do; a worker that dies leaves the lock stale after `stale_after` seconds, and a
later check takes it over. So a store has at most one auto-started worker at a time,
however many app processes or servers share it (workers started by hand do not take the
lock; jobs are claimed one at a time anyway, store/jobs.py). Any failure here is logged
once and never reaches the program.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from byllm_distill.config import DistillConfig
from byllm_distill.errors import DistillError
from byllm_distill.scheduler import quiet_now, trainable_sites
from byllm_distill.store import Store, locks
from byllm_distill.store.events import log_event
from byllm_distill.store.jobs import JobQueue

log = logging.getLogger("byllm_distill")
LOCK = "auto-train"
CHECK_S = 30.0  # how often the writer looks for due sites while the app runs
RENEW_S = 5.0  # how often the worker renews the lock (well inside `stale_after`)


class AutoTrain:
    def __init__(self, config: DistillConfig) -> None:
        self.config = config
        self._checked: float | None = None
        self._warned = False

    def check(self, store: Store, final: bool = False) -> str | None:
        """Start a worker if a site is due and none runs; its lock token, else None."""
        now = time.monotonic()
        if not final and self._checked is not None and now - self._checked < CHECK_S:
            return None
        self._checked = now
        try:
            return self._check(store)
        except Exception as exc:  # noqa: BLE001 - capture boundary: never break the program
            if not self._warned:
                self._warned = True
                log.warning("byllm-distill: auto_train could not start a worker (%s: %s); "
                            "run `byllm-distill worker` yourself.", type(exc).__name__, exc)
            return None

    def _check(self, store: Store) -> str | None:
        if not quiet_now(self.config)[0]:
            return None
        queue = JobQueue(store)
        due = [info.site for info in trainable_sites(store, self.config, queue)
               if not any(job.status == "running" for job in queue.list(site=info.site, limit=5))]
        if not due:
            return None
        token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        if not locks.acquire(store, LOCK, token, self.config.stale_after):
            return None  # a worker is running for this store
        try:
            pid = start_worker(self.config, token)
        except BaseException:
            locks.release(store, LOCK, token)
            raise
        for site in due:
            log_event(store, site, "auto_train", holder=token, pid=pid)
        log.warning("byllm-distill: %s due for training; started a worker (pid %d, output in "
                    "%s).", ", ".join(due), pid, self.config.data_dir / "auto-train.log")
        return token


def start_worker(config: DistillConfig, token: str) -> int:
    """`byllm-distill worker --once` holding the lock `token`, detached; its pid."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    with (config.data_dir / "auto-train.log").open("ab") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "byllm_distill", "worker", "--once", "--held-lock", token],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True)
    return worker.pid


@contextmanager
def hold_lock(store: Store, token: str) -> Iterator[None]:
    """For the worker an app started: keep its lock alive while the block runs, then
    release it. Refuses (DistillError) when the lock is no longer this worker's."""
    if not locks.renew(store, LOCK, token):
        raise DistillError(f"the {LOCK!r} lock is not held by {token!r} (another worker took "
                           "it over); this worker exits.")
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(RENEW_S):
            try:
                locks.renew(store, LOCK, token)
            except Exception as exc:  # noqa: BLE001 - the next beat tries again
                log.info("byllm-distill: could not renew the %s lock: %s", LOCK, exc)

    thread = threading.Thread(target=beat, name="byllm-distill-lock", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        locks.release(store, LOCK, token)
