"""Give back the OpenMP worker threads a thread parked, so other threads' steps stay fast.

torch and llama.cpp share one OpenMP runtime in our process (llama.cpp's CPU backend asks
for `libgomp.so.1` and gets the copy torch brings). libgomp keeps the worker threads of a
finished parallel region parked for the thread that started it, one team per such thread,
and while it manages more threads than there are CPUs it stops spinning at barriers and
sleeps on futexes instead. On 2 cores one extra parked team is enough: every llama.cpp step
then pays futex wake-ups at each barrier, and a map took ~3x as long, measured twice:
- in a process that had trained with torch (the team parked on the training thread):
  3.13x; this is the worker, which evaluates each new version right after training it,
  and the demo;
- in a process serving two sites (each resident model's stepping thread parks its own team
  once it has decoded): 3.18x, an app with several `by llm()` sites on students
(`benchmarks/openmp_threads.py`, one run; 1.05x and 1.02x with the teams given back).

So `train_site` gives its thread's team back when it ends, and each model's stepping thread
gives its team back whenever it runs out of work (runtime/batch.py); llama.cpp or torch
start a new one (a thread start, microseconds) the next time they compute in parallel.
`omp_pause_resource_all(omp_pause_hard)` (OpenMP 5.0) ends the calling thread's team only;
other threads' teams are not touched.
"""

from __future__ import annotations

import ctypes
import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

OMP_PAUSE_HARD = 2  # omp_pause_resource_t in omp.h
RUNTIMES = ("libgomp", "libiomp5", "libomp")
_runtimes: list[str] = []  # the runtimes this process has loaded, once it has one


def loaded_runtimes(maps: Path = Path("/proc/self/maps")) -> list[str]:
    """Paths of the OpenMP runtimes mapped into this process (none off Linux)."""
    try:
        lines = maps.read_text().splitlines()
    except OSError:
        return []
    paths = {line.split()[-1] for line in lines if "/" in line}
    return sorted(p for p in paths if Path(p).name.startswith(RUNTIMES))


def release_openmp_threads() -> int:
    """End the calling thread's parked OpenMP workers; returns how many runtimes agreed.

    Never raises: a runtime without the OpenMP 5.0 call (or one that refuses, as inside a
    parallel region) is logged and left as it is, which costs speed, not correctness.
    """
    if not _runtimes:  # looked up until one is loaded (each look reads the maps: ~1 ms)
        _runtimes[:] = loaded_runtimes()
    released = 0
    for path in _runtimes:
        pause = _pause_call(path)
        if pause is not None and pause(OMP_PAUSE_HARD) == 0:
            released += 1
        elif pause is not None:
            log.info("OpenMP threads kept: %s refused to pause", path)
    return released


def gives_back_openmp_threads[F: Callable[..., Any]](fn: F) -> F:
    """`fn`, giving back the OpenMP threads it parked on its thread when it returns or
    raises (for work that runs torch, then leaves the thread to llama.cpp)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        finally:
            release_openmp_threads()

    return wrapper  # type: ignore[return-value]


@functools.cache
def _pause_call(path: str) -> Any:
    try:
        pause = ctypes.CDLL(path).omp_pause_resource_all
    except (OSError, AttributeError) as exc:
        log.info("OpenMP threads kept: %s has no omp_pause_resource_all (%s)", path, exc)
        return None
    pause.argtypes = [ctypes.c_int]
    pause.restype = ctypes.c_int
    return pause
