"""Drafts (runtime/draft.py): the guesses, and the token loop reading ahead with them.

The loop is driven by a stand-in model over the embedded model's real vocabulary, a real
map grammar and the map site's real item checks: its logits are a fixed function of
exactly the tokens its sequence holds, so a loop that used a draft's logits at the wrong
place, or kept them after writing over the draft, would draw another answer."""

from __future__ import annotations

import json
import logging
import zlib
from collections import Counter, defaultdict

import pytest
from student_records import RESPONSE_FORMAT, SITE, map_codec, map_records

from byllm_distill.codec.grammar import call_grammar
from byllm_distill.runtime.draft import MIN_SEEN, Drafter

llama_cpp = pytest.importorskip("llama_cpp")
np = pytest.importorskip("numpy")


def test_a_guess_is_what_most_often_followed_the_longest_run_seen_enough() -> None:
    drafter = Drafter([[1, 2, 3], [1, 2, 3], [1, 2, 3], [9, 2, 4], [9, 2, 4], [9, 2, 4],
                       [7, 2, 4]])
    assert drafter.guess([1, 2]) == 3  # the run (1, 2) was followed by 3 three times
    assert drafter.guess([9, 2]) == 4
    assert drafter.guess([5, 2]) == 4  # (5, 2) unseen: (2,) was followed by 4 four times
    assert drafter.guess([8]) is None  # never seen
    assert drafter.guess([]) is None


def test_no_guess_for_runs_seen_too_rarely_or_without_a_clear_follower() -> None:
    rare = Drafter([[1, 2]] * (MIN_SEEN - 1))
    assert rare.guess([1]) is None
    split = Drafter([[1, 2], [1, 3], [1, 4], [1, 5], [1, 6]])  # each follower 1/5
    assert split.guess([1]) is None


def test_a_version_without_readable_training_answers_gets_no_drafter(tmp_path, caplog) -> None:
    assert Drafter.from_folder(tmp_path, str.split) is None  # no dataset/
    (tmp_path / "dataset").mkdir()
    (tmp_path / "dataset" / "train.jsonl").write_text("{not json\n")
    with caplog.at_level(logging.WARNING, logger="byllm_distill"):
        assert Drafter.from_folder(tmp_path, str.split) is None
    assert "without drafts" in caplog.text
    line = {"messages": [{"role": "user", "content": "q"},
                         {"role": "assistant", "content": "a b c"}]}
    (tmp_path / "dataset" / "train.jsonl").write_text(json.dumps(line) + "\n")
    drafter = Drafter.from_folder(tmp_path, lambda text: [ord(w) for w in text.split()])
    assert drafter is not None and drafter.guess([ord("a")]) is None  # seen once


@pytest.fixture(scope="module")
def llama(vocab_llama):
    return vocab_llama


class StandIn:
    """Logits that depend on exactly the tokens the sequence holds: the teacher's bigram
    counts (so answers look like maps and drafts are often right) plus noise seeded by
    the whole sequence."""

    def __init__(self, answers: list[list[int]], n_vocab: int) -> None:
        follows: dict[int, Counter] = defaultdict(Counter)
        for tokens in answers:
            for a, b in zip(tokens, tokens[1:], strict=False):
                follows[a][b] += 1
        self.follows, self.n_vocab = follows, n_vocab

    def __call__(self, held: list[int]) -> object:
        rng = np.random.default_rng(zlib.crc32(np.asarray(held, dtype=np.int32).tobytes()))
        logits = rng.normal(0.0, 1.0, self.n_vocab).astype(np.float32)
        for token, times in self.follows[held[-1]].items():
            logits[token] += 2.0 * np.log1p(times)
        return logits


def _drive(loop, prompt: list[int], model: StandIn, read_drafts: bool):
    """Run the loop as the batcher would, on the stand-in: (its result, passes made)."""
    held, passes = list(prompt), 0
    request = next(loop)
    try:
        while True:
            assert request.pos <= len(held)  # never a gap in the sequence
            held = held[:request.pos] + list(request.tokens)
            passes += 1
            logits = model(held)
            if read_drafts and request.draft:
                held += list(request.draft)
                logits = np.stack([logits, model(held)])
            request = loop.send(logits)
    except StopIteration as stop:
        return stop.value, passes


def test_reading_drafts_saves_passes_and_never_changes_the_answer(llama) -> None:
    from byllm_distill.runtime.decode import Decoder
    from byllm_distill.runtime.guide import guide_for

    records = map_records(30)
    codec = map_codec(records)
    answers = [llama.tokenize(codec.encode(r.output).encode(), add_bos=False, special=False)
               for r in records]
    model = StandIn(answers, llama.n_vocab())
    vocab = llama_cpp.llama_model_get_vocab(llama.model)
    prompt = llama.tokenize(b"[[the level]]", add_bos=False, special=False)
    decoder = Decoder(llama, max_tokens=400)
    decoder.drafter = Drafter(answers)
    runs = {}
    for read in (False, True):
        rows = []
        for i, record in enumerate(records[:6]):
            grammar = llama_cpp.llama_sampler_init_grammar(
                vocab, call_grammar(codec, record.args).encode(), b"root")
            try:
                loop = decoder.attempt(len(prompt), model(prompt), grammar, 0.8, 0.95,
                                       np.random.default_rng(i),
                                       guide_for(SITE, codec, record.args, RESPONSE_FORMAT))
                rows.append(_drive(loop, prompt, model, read))
            finally:
                llama_cpp.llama_sampler_free(grammar)
        runs[read] = rows
    assert sum(r[0][2] for r in runs[False]) > 0  # item redraws (rollbacks) happened
    assert [r[0] for r in runs[True]] == [r[0] for r in runs[False]]  # same answers
    saved = sum(r[1] for r in runs[False]) - sum(r[1] for r in runs[True])
    assert saved == decoder.drafts_taken > 0
    assert decoder.drafts > decoder.drafts_taken  # some guesses were wrong, and cost nothing
