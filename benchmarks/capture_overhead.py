"""Capture overhead: median time per mock `by llm()` call with capture on vs off.

Runs the same Jac program (N calls to a mock-model ability with a structured return) in
two subprocesses, one with BYLLM_DISTILL_CAPTURE=0 and one with capture on, and prints
the medians, their ratio and the added microseconds per call. Target: <= 1 ms added.

    .venv/bin/python benchmarks/capture_overhead.py [--calls 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

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
    for i in range({calls}) {{
        t0 = time.perf_counter();
        make_npc("Oakvale", i);
        times.append(time.perf_counter() - t0);
    }}
    print(json.dumps({{"median_s": statistics.median(times[{warmup}:])}}));
}}
"""


def run(program: Path, capture: bool, home: Path) -> float:
    env = {**os.environ, "BYLLM_DISTILL_CAPTURE": "1" if capture else "0",
           "BYLLM_DISTILL_HOME": str(home), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    jac = Path(sys.executable).parent / "jac"
    out = subprocess.run([str(jac), "run", str(program)], capture_output=True, text=True,
                         env=env, check=True, cwd=program.parent).stdout
    line = [ln for ln in out.splitlines() if ln.startswith("{")][-1]
    return json.loads(line)["median_s"]


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
    print(f"calls per run:          {args.calls}")
    print(f"median per call, off:   {off * 1e6:9.1f} us")
    print(f"median per call, on:    {on * 1e6:9.1f} us")
    print(f"ratio on/off:           {on / off:9.2f}x")
    print(f"added per call:         {(on - off) * 1e6:9.1f} us   (target <= 1000 us)")
    print(f"records stored:         {stored}")


if __name__ == "__main__":
    main()
