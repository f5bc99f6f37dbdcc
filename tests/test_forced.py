"""Jump-forward (runtime/forced.py) over the embedded model's real vocabulary and a real
llama.cpp grammar: what it forces, and where it refuses to."""

from __future__ import annotations

import pytest
from student_records import map_codec, map_records

from byllm_distill.codec.grammar import call_grammar

llama_cpp = pytest.importorskip("llama_cpp")


@pytest.fixture(scope="module")
def llama(vocab_llama):
    return vocab_llama


@pytest.fixture(scope="module")
def forced(llama):
    from byllm_distill.runtime.forced import Forced

    return Forced(llama)


def _grammar(llama, gbnf: str, written: str):
    """A grammar sampler after the tokens of `written`, and the last of them."""
    vocab = llama_cpp.llama_model_get_vocab(llama.model)
    grammar = llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode(), b"root")
    assert grammar
    tokens = llama.tokenize(written.encode(), add_bos=False, special=False)
    for token in tokens:
        llama_cpp.llama_sampler_accept(grammar, token)
    return grammar, tokens[-1]


def _text(llama, tokens: list[int]) -> str:
    return llama.detokenize(tokens).decode()


PAIRS = 'root ::= "[[" [3-9] "," [3-9] "],[" [3-9] "," [3-9] "]]"'


def test_punctuation_between_numbers_is_forced_as_the_tokenizer_writes_it(llama,
                                                                          forced) -> None:
    grammar, last = _grammar(llama, PAIRS, "[[5")
    tokens, complete = forced.after(grammar, last)
    assert _text(llama, tokens) == "," and not complete
    grammar, last = _grammar(llama, PAIRS, "[[5,6")
    tokens, complete = forced.after(grammar, last)
    assert _text(llama, tokens) == "],[" and not complete
    # What the tokenizer writes for the whole text: the same tokens, in the same places.
    assert llama.tokenize(b"[[5,6],[7", add_bos=False, special=False)[3:5] == [last, *tokens]


def test_the_end_is_forced_and_marked_complete(llama, forced) -> None:
    grammar, last = _grammar(llama, PAIRS, "[[5,6],[7,8")
    tokens, complete = forced.after(grammar, last)
    assert _text(llama, tokens) == "]]" and complete


def test_an_open_choice_or_a_digit_forces_nothing(llama, forced) -> None:
    grammar, last = _grammar(llama, 'root ::= "[" [1-9] ("," [1-9])* "]"', "[5")
    assert forced.after(grammar, last) == ([], False)  # "," or "]"
    grammar, last = _grammar(llama, 'root ::= "[" [1-9] "7]"', "[5")
    assert forced.after(grammar, last) == ([], False)  # a digit is the model's to write
    # A forced "]" before an open choice of "," or "]" is not fed: its token may merge.
    grammar, last = _grammar(llama, 'root ::= "[[" [1-9] "]" ("," "[" [1-9] "]")* "]"',
                             "[[5")
    assert forced.after(grammar, last) == ([], False)


def test_a_map_grammar_forces_about_a_third_of_a_teacher_answer(llama, forced) -> None:
    """Over a real teacher map and its per-call grammar: the tokens jump-forward would
    write without a forward pass of their own, and that feeding them gives back exactly
    the tokenizer's own tokens of the answer."""
    records = map_records(30)
    codec = map_codec(records)
    vocab = llama_cpp.llama_model_get_vocab(llama.model)
    record = records[3]
    text = codec.encode(record.output)
    answer = llama.tokenize(text.encode(), add_bos=False, special=False)
    grammar = llama_cpp.llama_sampler_init_grammar(
        vocab, call_grammar(codec, record.args).encode(), b"root")
    written, steps, i, complete = [], 0, 0, False
    while i < len(answer) and not complete:
        token = answer[i]  # "sampled": the teacher's own next token
        llama_cpp.llama_sampler_accept(grammar, token)
        more, complete = forced.after(grammar, token)
        for extra in more:
            llama_cpp.llama_sampler_accept(grammar, extra)
        written += [token, *more]
        steps += 1
        i += 1 + len(more)
        assert written == answer[:i]
    assert complete and written == answer
    assert steps <= 0.75 * len(answer), (steps, len(answer))
