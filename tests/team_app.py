"""An app server for the team tests: calls the RPG level site in a loop, prints each answer.

    python tests/team_app.py --width 16 --calls 20          # 20 calls, then exit
    python tests/team_app.py --width 18 --until STOP_FILE    # until STOP_FILE exists

Each call's level width is `--width`, so the records of one app can be told from
another's in a shared store. One JSON line per call: the call's index, the time it
returned and the level's name and size (the program's output). The configuration (store,
artifacts, data dir) comes from the environment, as for any Jac app.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--width", type=int, required=True)
    parser.add_argument("--calls", type=int, default=0)
    parser.add_argument("--until", type=Path)
    parser.add_argument("--pause", type=float, default=0.0)
    args = parser.parse_args()

    import byllm_distill
    from byllm_distill.rpg.corpus import load_program

    program = load_program()
    n = 0
    while (n < args.calls) if args.calls else not args.until.exists():
        level = program.create_next_level([], 1 + n % 5, args.width, 12)
        print(json.dumps({"call": n, "t": time.time(), "name": level.name,
                          "size": [level.width, level.height]}), flush=True)
        n += 1
        time.sleep(args.pause)
    byllm_distill.flush(120)


if __name__ == "__main__":
    main()
