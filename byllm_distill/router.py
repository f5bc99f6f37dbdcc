"""The call-site router: teacher, shadow or student, per site, with fallback.

For each `by llm()` call the router reads the site's registry state (from the store,
cached for at most `STATE_POLL_S` seconds) and picks a route:

* `teacher`: the user's model answers; the call is captured (`source="teacher"`).
  Also used when the site has no active version, is pinned to the teacher, or its
  contract fingerprint differs from the one the active version was trained on (stale).
* `shadow`: the teacher answers; the student answers the same input on a background
  thread, off the caller's path, and that answer is validated and scored for agreement
  (`source="shadow"`). On up to `teacher_repeats` shadow inputs per site the teacher is
  asked the same input a second time, also in the background, so the gate can measure the
  teacher's agreement with itself (the program's answer is the first one). After each
  shadow sample the router asks the lifecycle whether the version may be promoted.
* `student`: the student answers (`source="student"`); the router scores that answer
  itself, inside the call (student_answer.py, through scoring.py), and hands capture the
  scored record. When the site has a wait budget (`max_wait_ms`) and the student is busy
  with calls that would keep this one waiting longer (runtime/load.py), the teacher
  answers instead, and its record says why (`route`). An answer that fails to parse or
  fails a validator falls back to the teacher within the same call; the teacher's answer
  is returned and captured as a new training example. A sampled fraction of served calls
  is also answered by the teacher in the background for comparison. Every
  `LIVE_CHECK_EVERY` served answers the router asks the lifecycle for a live check
  (validity, and agreement and fidelity over the teacher-checked answers); the lifecycle
  rolls back a student that is shown to be worse.

Background work (shadow samples and teacher checks, comparison.py; rollback checks) runs
on one daemon thread (background.py). At interpreter exit the router waits for it at most
`exit_wait` seconds, then flushes capture itself, so what the background work recorded is
written whatever order the exit handlers run in; work still unfinished is given up and
counted as dropped (a logged reason, and in `byllm-distill status`). A program never waits
longer than that.

Contract: the router never changes what a teacher-routed call returns or raises, and any
router failure (state unreadable, student unloadable) routes that call to the teacher
with the reason logged. Routing needs capture on: student answers must be recorded.
"""

from __future__ import annotations

import atexit
import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

from byllm_distill.background import Background
from byllm_distill.capture import Capture
from byllm_distill.comparison import Comparisons
from byllm_distill.config import DistillConfig
from byllm_distill.errors import DistillError
from byllm_distill.registry import (
    ArtifactUnavailable,
    SiteRegistry,
    SiteState,
    Version,
    state_generation,
)
from byllm_distill.sites import CallSite, describe, fresh_run
from byllm_distill.student_answer import over_wait_budget, rejection

log = logging.getLogger("byllm_distill")
LIVE_CHECK_EVERY = 10
# How stale a site's routing state may be: the bound on how long another server's
# promotion, rollback or pin takes to reach this process.
STATE_POLL_S = 2.0
# After a failed download from shared artifacts, the teacher answers for this long before
# this process tries again (so an unreachable store costs one attempt, not every call).
UNAVAILABLE_RETRY_S = 60.0
# Where a student runs native code, plus each loaded student's own module: where the
# background thread is parked when exit gives up on it (see `_drain_at_exit`).
STUDENT_CODE = ("byllm_distill.runtime", "llama_cpp")
# How long exit waits, after giving up, for that thread to finish its current native step.
PARK_WAIT_S = 10.0


@dataclass(frozen=True)
class Route:
    kind: str  # "teacher", "shadow" or "student"
    site: str
    version: int | None = None
    pinned: bool = False
    reason: str = ""


def default_student_loader(site: str, version: Version) -> Any:
    from byllm_distill.runtime.student import student_model

    return student_model(site, version=version.number, folder=version.path)


class Router:
    def __init__(self, capture: Capture, config: DistillConfig,
                 student_loader: Any = default_student_loader) -> None:
        self.capture = capture
        self.config = config
        self.load_student = student_loader
        self._students: dict[tuple[str, int], Any] = {}
        self._states: dict[str, tuple[int, float, SiteState]] = {}
        # Per site: the state and fingerprint a route was decided on, the route and the
        # shadow fraction; decided again when either changes (see `route`).
        self._routes: dict[str, tuple[SiteState, str, Route, float]] = {}
        self._warned: set[str] = set()
        self._unavailable: dict[tuple[str, int], tuple[float, Exception]] = {}
        self._served: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()
        self._background = Background("byllm-distill-router")
        self._exit_hook_registered = False
        self._store_obj: Any = None
        self._compare = Comparisons(capture, config, self._store)

    # -- deciding ----------------------------------------------------------------------

    def registry(self, site: str) -> SiteRegistry:
        return SiteRegistry(self.config, site)

    def _state(self, site: str) -> SiteState:
        """The site's state, re-read from the store at most every `STATE_POLL_S` seconds
        (at once after a change this process made), so a promotion or rollback made on
        another server is obeyed within that bound."""
        now = time.monotonic()
        generation = state_generation()
        cached = self._states.get(site)
        if cached is None or cached[0] != generation or now - cached[1] >= STATE_POLL_S:
            try:
                state = self.registry(site).state()
            except Exception as exc:  # noqa: BLE001 - an unreadable registry means the teacher
                self._warn_once(f"state:{site}", "byllm-distill: cannot read the registry of "
                                "%s (%s); the teacher answers until it can.", site, exc)
                state = SiteState()
            cached = (generation, now, state)
            self._states[site] = cached
        return cached[2]

    def route(self, mt_run: Any) -> Route:
        site = describe(mt_run)
        state = self._state(site.key)
        decided = self._routes.get(site.key)
        if decided is None or decided[0] is not state or decided[1] != site.fingerprint:
            decided = (state, site.fingerprint, self._decide(site, state),
                       self.config.site(site.key).shadow_fraction)
            self._routes[site.key] = decided
        route = decided[2]
        if route.kind == "shadow" and random.random() >= decided[3]:
            return Route("teacher", site.key, reason="shadow sample skipped")
        return route

    def _decide(self, site: CallSite, state: SiteState) -> Route:
        """The route for the site's calls while its state stays `state` ("shadow": a call
        is a shadow sample with the site's `shadow_fraction`, see `route`)."""
        if state.pinned == "teacher":
            return Route("teacher", site.key, reason="pinned to teacher")
        pinned = state.pinned_version()
        version = pinned if pinned is not None else state.active
        if version is None or (pinned is None and state.mode == "teacher"):
            return Route("teacher", site.key, reason="no active student")
        if state.fingerprint is not None and state.fingerprint != site.fingerprint:
            self._warn_once(f"stale:{site.key}", "byllm-distill: %s changed its contract "
                            "since its student was trained; serving it from the teacher "
                            "until it is retrained.", site.key)
            return Route("teacher", site.key, reason="contract changed (stale student)")
        if pinned is not None or state.mode == "student":
            return Route("student", site.key, version, pinned=pinned is not None)
        return Route("shadow", site.key, version)

    # -- serving -----------------------------------------------------------------------

    async def acall(self, model: Any, mt_run: Any) -> Any:
        """Async abilities: the teacher route stays async; a student route (a local,
        blocking model) runs in a worker thread, with a synchronous teacher fallback."""
        import asyncio

        try:
            route = None if mt_run.stream else self.route(mt_run)
        except Exception as exc:  # noqa: BLE001 - routing boundary: fall back to the teacher
            self._warn_once(f"route:{type(exc).__name__}", "byllm-distill: routing failed "
                            "(%s: %s); the teacher answers.", type(exc).__name__, exc)
            route = None
        if route is None or route.kind == "teacher":
            return await self.capture.acall(model, mt_run)
        if route.kind == "shadow":
            shadow_run = fresh_run(mt_run)
            result = await self.capture.acall(model, mt_run)
            self._submit(self._shadow_sample, route, shadow_run, result, model)
            return result
        return await asyncio.to_thread(self._serve_student, model, mt_run, route)

    def call(self, model: Any, mt_run: Any) -> Any:
        if mt_run.stream:
            return self.capture.call(model, mt_run)
        try:
            route = self.route(mt_run)
        except Exception as exc:  # noqa: BLE001 - routing boundary: fall back to the teacher
            self._warn_once(f"route:{type(exc).__name__}", "byllm-distill: routing failed "
                            "(%s: %s); the teacher answers.", type(exc).__name__, exc)
            return self.capture.call(model, mt_run)
        if route.kind == "student":
            return self._serve_student(model, mt_run, route)
        if route.kind == "shadow":
            return self._serve_shadow(model, mt_run, route)
        return self.capture.call(model, mt_run)

    def _student(self, route: Route) -> Any:
        key = (route.site, route.version)
        with self._lock:
            student = self._students.get(key)
            if student is None:
                failed = self._unavailable.get(key)
                if failed is not None and time.monotonic() - failed[0] < UNAVAILABLE_RETRY_S:
                    raise failed[1]
                try:
                    version = self.registry(route.site).verify(route.version)
                except ArtifactUnavailable as exc:
                    self._unavailable[key] = (time.monotonic(), exc)
                    raise
                student = self.load_student(route.site, version)
                self._students[key] = student
        return student

    def _serve_student(self, model: Any, mt_run: Any, route: Route) -> Any:
        try:
            student = self._student(route)
        except Exception as exc:  # noqa: BLE001 - a broken student must not break the call
            self._student_unloadable(route, exc)
            return self.capture.call(model, mt_run)
        busy = over_wait_budget(route.site, self.config.site(route.site).max_wait_ms, student,
                                self._warn_once)
        if busy is not None:
            self._warn_once(f"busy:{route.site}", "byllm-distill: %s: %s; the teacher answers "
                            "such calls (each record says so in `route`).", route.site, busy)
            return self.capture.call(model, mt_run, route=busy)
        saved = list(mt_run.messages)
        outcome = self.capture.run(student, mt_run, source="student", version=route.version,
                                   hand_back=True)
        record = outcome.record
        why = rejection(outcome.error, record, self.capture, self._warn_once)
        if why is not None:
            self._after_student_answer(route)
            log.info("byllm-distill: %s v%s answer rejected (%s); the teacher answers.",
                     route.site, route.version, why)
            mt_run.messages[:] = saved
            return self.capture.call(model, mt_run)
        if random.random() < self.config.site(route.site).check_fraction:
            self._submit(self._compare.teacher_check, model, fresh_run(mt_run),
                         outcome.result, record)
        self._after_student_answer(route)  # after the check: a live check then counts it
        return outcome.result

    def _serve_shadow(self, model: Any, mt_run: Any, route: Route) -> Any:
        shadow_run = fresh_run(mt_run)  # before the teacher's answer is appended
        result = self.capture.call(model, mt_run)
        self._submit(self._shadow_sample, route, shadow_run, result, model)
        return result

    # -- background work -----------------------------------------------------------------

    def _submit(self, fn: Any, *args: Any) -> None:
        def guarded() -> None:
            try:
                fn(*args)
            except Exception as exc:  # noqa: BLE001 - background work must never surface
                self._warn_once(f"bg:{fn.__name__}:{type(exc).__name__}",
                                "byllm-distill: background %s failed: %s: %s", fn.__name__,
                                type(exc).__name__, exc)

        with self._lock:
            if not self._exit_hook_registered:
                atexit.register(self._drain_at_exit)
                self._exit_hook_registered = True
        self._background.submit(guarded)

    def _shadow_sample(self, route: Route, shadow_run: Any, teacher_result: Any,
                       model: Any = None) -> None:
        try:
            student = self._student(route)
        except Exception as exc:  # noqa: BLE001
            self._student_unloadable(route, exc)
            return
        self._compare.shadow_sample(student, route.version, shadow_run, teacher_result, model)
        self.maybe_promote(route.site, route.version)

    def _after_student_answer(self, route: Route) -> None:
        if route.pinned:
            return
        key = (route.site, route.version)
        with self._lock:
            self._served[key] = self._served.get(key, 0) + 1
            due = self._served[key] % LIVE_CHECK_EVERY == 0
        if due:
            self._submit(self.maybe_rollback, route.site, route.version)

    # -- decisions -----------------------------------------------------------------------

    def _store(self) -> Any:
        from byllm_distill.store import Store

        with self._lock:
            if self._store_obj is None:
                self._store_obj = Store(self.config.database_url)
            return self._store_obj

    def maybe_promote(self, site: str, version: int) -> bool:
        """Ask the lifecycle to promote `version` (it decides and logs)."""
        from byllm_distill.lifecycle import promote_if_ready

        self.capture.flush()
        result = promote_if_ready(self._store(), self.config, site, version)
        return bool(result and result.passed)

    def maybe_rollback(self, site: str, version: int) -> bool:
        """Ask the lifecycle for a live check of `version` (it decides and logs)."""
        from byllm_distill.lifecycle import rollback_if_failing

        self.capture.flush()
        result = rollback_if_failing(self._store(), self.config, site, version)
        return bool(result and not result.passed)

    def _student_unloadable(self, route: Route, exc: Exception) -> None:
        self._warn_once(f"load:{route.site}:{route.version}", "byllm-distill: %s v%s cannot "
                        "be loaded (%s); the teacher answers.", route.site, route.version, exc)
        if route.pinned or not isinstance(exc, DistillError) or isinstance(
                exc, ArtifactUnavailable):
            return  # only a version shown to be broken is rolled back, not this machine's access
        from byllm_distill.lifecycle import refuse_unloadable

        refuse_unloadable(self._store(), self.registry(route.site), route.version, str(exc))

    def _warn_once(self, key: str, message: str, *args: Any) -> None:
        with self._lock:
            if key in self._warned:
                return
            self._warned.add(key)
        log.warning(message, *args)

    def pending(self) -> int:
        """Background tasks (shadow samples, checks) not finished yet."""
        return self._background.unfinished()

    def drain(self, timeout: float = 120.0) -> int:
        """Wait up to `timeout` seconds for background shadow samples and checks, then
        flush capture; return how many are still unfinished (tests, demo, exit)."""
        left = self._background.wait(timeout)
        self.capture.flush()
        return left

    def _drain_at_exit(self) -> None:
        """Registered with `atexit` when the first background task is submitted.

        Waits at most `exit_wait` seconds, then parks the background thread in student
        code (see `Background.park`) so no decode step runs while the process tears down,
        then writes what was recorded. Nothing here takes `self._lock`: a parked thread
        may hold it (student loading happens under it)."""
        wait = self.config.exit_wait
        left = self._background.wait_then_park(wait, lambda: STUDENT_CODE + tuple(
            {type(s).__module__ for s in list(self._students.values())}), PARK_WAIT_S)
        self.capture.flush()
        if left:
            self.capture.drops.add(
                "unfinished at exit", left,
                f"{left} background task(s) (shadow samples, teacher or rollback checks) not "
                f"done after exit_wait = {wait:g} s; raise exit_wait "
                "(BYLLM_DISTILL_EXIT_WAIT) to keep them")

    def close(self, timeout: float = 120.0) -> int:
        """Drain, and stop waiting for this router at exit (it is being replaced)."""
        left = self.drain(timeout)
        atexit.unregister(self._drain_at_exit)
        return left


_router: Router | None = None
_router_lock = threading.Lock()


def get_router(capture: Capture) -> Router | None:
    """The process-wide router for `capture`, or None when routing or capture is off."""
    global _router
    if not capture.enabled or not capture.config.routing:
        return None
    router = _router
    if router is not None and router.capture is capture:
        return router
    with _router_lock:
        if _router is None or _router.capture is not capture:
            _router = Router(capture, capture.config)
        return _router


def reset_router() -> None:
    """Drain and forget the process-wide router (tests; config re-read next call)."""
    global _router
    with _router_lock:
        if _router is not None:
            _router.close()
        _router = None
