"""Drafts: a guess at a call's next token, from the answers the student was trained on.

Contract. `Drafter.from_folder(folder, tokenize)` reads the version's training answers
(`dataset/train.jsonl`, written with the version, so the guesses are the site's own
patterns) and counts, for every run of up to `LONGEST` answer tokens, the token that
followed it. `guess(out)` looks up the longest run ending the answer so far (`out`) seen
at least `MIN_SEEN` times and returns the token that most often followed it, when it
did so at least `MIN_SHARE` of the time; otherwise None. A version without readable
training answers gets no drafter (None): its calls decode as before.

What a guess is for (decode.py): the decoder appends it, with what the grammar forces
after it, to the forward pass it makes anyway, and gets the model's next-token logits
after it too. The decoder still samples every token from the model's own logits; when the
sampled token is the guess, the pass for it is already done and is skipped. So a guess
changes how many passes an answer takes, not which answer is drawn (to the rounding of
a pass of several tokens): a wrong guess costs its tokens and one more row of logits in
a pass made anyway, a right one saves a pass (benchmarks/serving_load.py measures both
ways on the same inputs and seeds).
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("byllm_distill")

LONGEST = 5  # the longest run of answer tokens a guess looks back at
MIN_SEEN = 3  # ... a run seen fewer times in training says too little
MIN_SHARE = 0.3  # a guess is offered only when it followed its run this often


class Drafter:
    def __init__(self, answers: list[list[int]]) -> None:
        follows: dict[tuple[int, ...], Counter[int]] = defaultdict(Counter)
        for tokens in answers:
            for end in range(1, len(tokens)):
                for n in range(1, min(LONGEST, end) + 1):
                    follows[tuple(tokens[end - n:end])][tokens[end]] += 1
        # Keep each run's best follower only: (token, share), runs seen often enough.
        self._best: dict[tuple[int, ...], tuple[int, float]] = {}
        for run, counts in follows.items():
            seen = sum(counts.values())
            if seen >= MIN_SEEN:
                token, times = counts.most_common(1)[0]
                self._best[run] = (token, times / seen)

    @classmethod
    def from_folder(cls, folder: Path, tokenize: Callable[[str], list[int]]
                    ) -> Drafter | None:
        """The drafter of a version folder's training answers, or None (none readable)."""
        path = Path(folder) / "dataset" / "train.jsonl"
        answers = []
        try:
            with path.open(encoding="utf-8") as lines:
                for line in lines:
                    messages = json.loads(line)["messages"]
                    if messages and messages[-1].get("role") == "assistant":
                        answers.append(tokenize(str(messages[-1]["content"])))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("byllm-distill: %s cannot be read (%s); this version decodes "
                        "without drafts.", path, exc)
            return None
        return cls(answers) if answers else None

    def guess(self, out: list[int]) -> int | None:
        """The token likely to follow `out` (see the module docstring), or None."""
        for n in range(min(LONGEST, len(out)), 0, -1):
            best = self._best.get(tuple(out[-n:]))
            if best is not None:
                return best[0] if best[1] >= MIN_SHARE else None
        return None
