"""Capture overhead: time per mock `by llm()` call with capture on vs off, in one run.

Runs the same Jac program (N calls to a mock-model ability with a structured return) in
subprocesses, with BYLLM_DISTILL_CAPTURE=0 and with capture on, as `--pairs` off/on pairs
(order alternating, off first in the first pair). Both runs of a pair get the same
PYTHONHASHSEED (pair 0, 1, ...): the mock call's own time moves by tens of microseconds
from one hash seed to another, and from one minute to the next on a shared machine, so
one off run against one on run measured noise as often as capture. It prints, each the
median over the pairs: the median call off and on, their ratio and the added
microseconds per call (target: <= 50 us added to the median call; each pair's own figure
is listed), the CPU time the program's own thread spends per call (median, off and on:
what capture does on the caller's thread), the mean per call, the first call and the
whole run's wall time. The median and mean include the writer thread's work (building,
scoring and writing records), which shares the GIL with the program and runs during some
of the calls; the first call includes capture's start-up (importing it, starting the
writer and waiting for it to load the validators, see capture/writer.py), and the whole
run the final flush at exit. The first 100 calls (a tenth of them when there are fewer
than 1,000) are left out of the median and mean, as before. Run it alone (under the heavy
lock).

    .venv/bin/python benchmarks/capture_overhead.py [--calls 2000] [--pairs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_US = 50

PROGRAM = """
import from byllm.lib {{ Model, MockRawResponse }}
import time;
import statistics;
import json;

obj Pos {{ has x: int, y: int; }}
obj Npc {{ has name: str, level: int, home: Pos; }}

glob llm = Model(model_name="mockllm", config={{"outputs": [
    MockRawResponse(content=json.dumps(
        {{"name": f"npc{{i}}", "level": i, "home": {{"x": i, "y": 1}}}}
    ))
    for i in range({calls})
]}});

\"\"\"Invent a non-player character for the village.\"\"\"
def make_npc(village: str, index: int) -> Npc by llm();

with entry {{
    times = [];
    cpu = [];
    for i in range({calls}) {{
        t0 = time.perf_counter();
        c0 = time.thread_time();
        make_npc("Oakvale", i);
        cpu.append(time.thread_time() - c0);
        times.append(time.perf_counter() - t0);
    }}
    print(json.dumps({{"median_s": statistics.median(times[{warmup}:]),
                       "mean_s": statistics.mean(times[{warmup}:]),
                       "cpu_median_s": statistics.median(cpu[{warmup}:]),
                       "first_s": times[0]}}));
}}
"""


def run(program: Path, capture: bool, home: Path, seed: int) -> dict[str, float]:
    env = {**os.environ, "BYLLM_DISTILL_CAPTURE": "1" if capture else "0",
           "BYLLM_DISTILL_HOME": str(home), "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "PYTHONHASHSEED": str(seed)}
    jac = Path(sys.executable).parent / "jac"
    start = time.perf_counter()
    out = subprocess.run([str(jac), "run", str(program)], capture_output=True, text=True,
                         env=env, check=True, cwd=program.parent).stdout
    line = [ln for ln in out.splitlines() if ln.startswith("{")][-1]
    return {**json.loads(line), "wall_s": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    offs: list[dict[str, float]] = []
    ons: list[dict[str, float]] = []
    stored: list[int] = []
    with tempfile.TemporaryDirectory() as tmp:
        program = Path(tmp) / "bench.jac"
        program.write_text(PROGRAM.format(calls=args.calls, warmup=min(100, args.calls // 10)))
        from byllm_distill.store import Store

        for pair in range(args.pairs):
            home = Path(tmp) / f"home{pair}"
            for capture in ((False, True) if pair % 2 == 0 else (True, False)):
                result = run(program, capture, home, seed=pair)
                (ons if capture else offs).append(result)
            store = Store(f"sqlite:///{home / 'distill.db'}")
            stored.append(store.count())
            store.close()

    def med(runs: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    added = [(on["median_s"] - off["median_s"]) * 1e6 for off, on in zip(offs, ons,
                                                                         strict=True)]
    added_us = statistics.median(added)
    off_s, on_s = med(offs, "median_s"), med(ons, "median_s")
    print(f"calls per run:             {args.calls}, {args.pairs} off/on pairs "
          "(same hash seed within a pair); figures are medians over the pairs")
    print(f"median per call, off:      {off_s * 1e6:9.1f} us")
    print(f"median per call, on:       {on_s * 1e6:9.1f} us")
    print(f"ratio on/off (median):     {on_s / off_s:9.3f}x")
    print(f"added per call (median):   {added_us:9.1f} us   (target <= {TARGET_US} us: "
          f"{'met' if added_us <= TARGET_US else 'NOT met'}; per pair: "
          f"{', '.join(f'{a:+.1f}' for a in added)})")
    cpu_off, cpu_on = med(offs, "cpu_median_s") * 1e6, med(ons, "cpu_median_s") * 1e6
    print(f"caller-thread CPU, median: {cpu_off:9.1f} / {cpu_on:.1f} us   (off / on: added "
          f"{cpu_on - cpu_off:.1f} us of this thread's own work)")
    print(f"mean per call, off / on:   {med(offs, 'mean_s') * 1e6:9.1f} / "
          f"{med(ons, 'mean_s') * 1e6:.1f} us   (mean: with the writer thread's GIL share)")
    print(f"first call, off / on:      {med(offs, 'first_s') * 1e3:9.1f} / "
          f"{med(ons, 'first_s') * 1e3:.1f} ms   (on: capture's start-up, once per process)")
    print(f"whole run, off / on:       {med(offs, 'wall_s'):9.2f} / {med(ons, 'wall_s'):.2f} s"
          "   (process start to exit, flush included)")
    print(f"records stored:            {', '.join(str(n) for n in stored)} "
          f"(per capture-on run; {args.calls} expected each)")


if __name__ == "__main__":
    main()
