"""Give back the OpenMP worker threads torch leaves parked on the thread that trained.

torch and llama.cpp share one OpenMP runtime in our process (llama.cpp's CPU backend asks
for `libgomp.so.1` and gets the copy torch already loaded). libgomp keeps the worker threads
of a finished parallel region parked for the thread that started it, and while it manages
more threads than there are CPUs it stops spinning at barriers and sleeps on futexes
instead. On 2 cores, the team torch parks on the training thread is enough to tip it over:
every llama.cpp step afterwards pays futex wake-ups at each barrier, and a map took 3.2x as
long in a process that had trained (`benchmarks/decode_after_torch.py`). That process is
the worker's, which evaluates each new version on held-out inputs right after training it,
and the demo's, which serves shadow answers after training.

`omp_pause_resource_all(omp_pause_hard)` (OpenMP 5.0) ends the calling thread's parked team;
torch starts a new one the next time it computes in parallel. Other threads' teams (a
llama.cpp stepping thread serving at the same time) are not touched.
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path

log = logging.getLogger(__name__)

OMP_PAUSE_HARD = 2  # omp_pause_resource_t in omp.h
RUNTIMES = ("libgomp", "libiomp5", "libomp")


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
    released = 0
    for path in loaded_runtimes():
        try:
            pause = ctypes.CDLL(path).omp_pause_resource_all
        except (OSError, AttributeError) as exc:
            log.info("OpenMP threads kept: %s has no omp_pause_resource_all (%s)", path, exc)
            continue
        pause.argtypes = [ctypes.c_int]
        pause.restype = ctypes.c_int
        if pause(OMP_PAUSE_HARD) == 0:
            released += 1
        else:
            log.info("OpenMP threads kept: %s refused to pause", path)
    return released
