"""Capture overhead: time per mock `by llm()` call with capture on vs off, in one run.

Runs the same Jac program (N calls to a mock-model ability with a structured return) in
two subprocesses, one with BYLLM_DISTILL_CAPTURE=0 and one with capture on, and prints
the medians, their ratio and the added microseconds per call (target: <= 50 us added to
the median call), the CPU time the program's own thread spends per call (median, off and
on: what capture does on the caller's thread), plus the mean per call and the whole run's
wall time: those include the writer thread's work (building, scoring, writing records),
which shares the GIL with the program (the median too: the writer runs during many calls),
and the final flush at exit. Run it alone (under the heavy lock).

    .venv/bin/python benchmarks/capture_overhead.py [--calls 2000]
"""

from __future__ import annotations

import argparse
import json
import os
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
                       "cpu_median_s": statistics.median(cpu[{warmup}:])}}));
}}
"""


def run(program: Path, capture: bool, home: Path) -> dict[str, float]:
    env = {**os.environ, "BYLLM_DISTILL_CAPTURE": "1" if capture else "0",
           "BYLLM_DISTILL_HOME": str(home), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    jac = Path(sys.executable).parent / "jac"
    start = time.perf_counter()
    out = subprocess.run([str(jac), "run", str(program)], capture_output=True, text=True,
                         env=env, check=True, cwd=program.parent).stdout
    line = [ln for ln in out.splitlines() if ln.startswith("{")][-1]
    return {**json.loads(line), "wall_s": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        program = Path(tmp) / "bench.jac"
        program.write_text(PROGRAM.format(calls=args.calls, warmup=min(100, args.calls // 10)))
        off = run(program, False, Path(tmp) / "home")
        on = run(program, True, Path(tmp) / "home")
        from byllm_distill.store import Store

        stored = Store(f"sqlite:///{Path(tmp) / 'home' / 'distill.db'}").count()
    added_us = (on["median_s"] - off["median_s"]) * 1e6
    print(f"calls per run:             {args.calls}")
    print(f"median per call, off:      {off['median_s'] * 1e6:9.1f} us")
    print(f"median per call, on:       {on['median_s'] * 1e6:9.1f} us")
    print(f"ratio on/off (median):     {on['median_s'] / off['median_s']:9.3f}x")
    print(f"added per call (median):   {added_us:9.1f} us   (target <= {TARGET_US} us: "
          f"{'met' if added_us <= TARGET_US else 'NOT met'})")
    print(f"caller-thread CPU, median: {off['cpu_median_s'] * 1e6:9.1f} / "
          f"{on['cpu_median_s'] * 1e6:.1f} us   (off / on: added "
          f"{(on['cpu_median_s'] - off['cpu_median_s']) * 1e6:.1f} us of this thread's own work)")
    print(f"mean per call, off / on:   {off['mean_s'] * 1e6:9.1f} / {on['mean_s'] * 1e6:.1f} us"
          "   (mean: with the writer thread's GIL share)")
    print(f"whole run, off / on:       {off['wall_s']:9.2f} / {on['wall_s']:.2f} s"
          "   (process start to exit, flush included)")
    print(f"records stored:            {stored}")


if __name__ == "__main__":
    main()
