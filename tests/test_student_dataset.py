"""Per-site datasets: compact prompts, grammar-ordered targets, dedupe, split, manifest."""

from __future__ import annotations

import inspect
import json
from dataclasses import replace
from pathlib import Path

import pytest
from student_records import FINGERPRINT, SITE, map_records

from byllm_distill.codec.schema import (
    UNBOUNDED,
    bounded_schema,
    max_json_chars,
    ordered,
    response_schema,
)
from byllm_distill.store import RecordFilter, Store
from byllm_distill.store.record import new_record_id
from byllm_distill.training import TrainingError
from byllm_distill.training.chat import prompt_format
from byllm_distill.training.dataset import build_dataset, load_dataset


@pytest.fixture(scope="module")
def tokenizer():
    from byllm_distill.training.base_model import load_tokenizer, resolve_base

    return load_tokenizer(resolve_base())


def _store(tmp_path: Path, records) -> Store:
    store = Store(f"sqlite:///{tmp_path / 'd.db'}")
    store.add_records(records)
    return store


def test_compaction_makes_prompts_smaller(tmp_path: Path, tokenizer) -> None:
    records = map_records(12)
    ds = build_dataset(_store(tmp_path, records), SITE, tokenizer=tokenizer)
    tokens = ds.manifest["tokens"]
    assert tokens["compact_prompt"]["mean"] < tokens["teacher_prompt"]["mean"] / 3
    assert tokens["compaction_ratio"] >= 3
    assert tokens["compaction_ratio_with_schema"] > 10
    assert tokens["teacher_schema"] > 500
    for example in ds.train + ds.heldout:
        assert "This is a task" not in example.prompt and "Lay out" not in example.prompt
        assert example.prompt.startswith("[[") and "width" not in example.prompt
    fmt = prompt_format(tokenizer)
    assert "SmolLM" not in fmt["prefix"]  # the empty system turn replaces the default persona
    assert fmt["answer_suffix"] == "<|im_end|>"


def test_targets_follow_schema_order_and_bounds_are_added() -> None:
    schema = response_schema({"type": "json_schema", "json_schema": {"name": "Map", "schema": {
        "type": "object", "required": ["b", "a"],
        "properties": {"a": {"type": "integer"}, "b": {"$ref": "#/$defs/P"},
                       "c": {"type": "string"}},
        "$defs": {"P": {"type": "object", "properties": {"y": {"type": "integer"},
                                                         "x": {"type": "integer"}},
                        "required": ["y", "x"]},
                  "L": {"type": "array", "items": {"$ref": "#/$defs/P"}}}}}})
    value = {"z": 0, "c": "hi", "a": 1, "b": {"x": 2, "y": 3}}
    assert list(ordered(value, schema)) == ["b", "a", "c", "z"]
    assert list(ordered(value, schema)["b"]) == ["y", "x"]
    bounded = bounded_schema(schema, {"#/properties/c": {"max_length": 10},
                                      "#/$defs/P/properties/x": {"min": 1, "max": 30}})
    assert bounded["properties"]["c"]["maxLength"] == 20
    assert bounded["$defs"]["P"]["properties"]["x"] == {"type": "integer", "minimum": 0,
                                                        "maximum": 60}
    assert bounded["$defs"]["L"]["maxItems"] == 32
    assert "maxLength" not in schema["properties"]["c"]  # the input is not modified
    assert max_json_chars(schema) == UNBOUNDED
    assert max_json_chars(bounded) < 1000


def test_targets_are_compact_tuples_that_decode_to_the_answer(tmp_path: Path,
                                                             tokenizer) -> None:
    records = map_records(12)
    shuffled = [replace(r, output=dict(reversed(list(r.output.items())))) for r in records]
    ds = build_dataset(_store(tmp_path, shuffled), SITE, holdout=0.0, tokenizer=tokenizer)
    assert ds.manifest["codec"]["mode"] == "tuple" and ds.codec.copies == {"level": "level"}
    by_id = {r.id: r for r in records}
    for example in ds.train:
        assert " " not in example.target and "enemies" not in example.target
        record = by_id[example.record_id]
        decoded = ds.codec.decode(example.target, record.args)
        assert decoded == record.output
        assert list(decoded) == ["level", "walls", "small_obstacles", "enemies", "player_pos"]


def test_duplicates_are_dropped(tmp_path: Path, tokenizer) -> None:
    records = map_records(10)
    copies = [replace(r, id=new_record_id()) for r in records[:4]]
    ds = build_dataset(_store(tmp_path, records + copies), SITE, tokenizer=tokenizer)
    counts = ds.manifest["counts"]
    assert counts["records"] == 14 and counts["duplicates"] == 4
    assert counts["train"] + counts["heldout"] == 10
    pairs = [(e.prompt, e.target) for e in ds.train + ds.heldout]
    assert len(pairs) == len(set(pairs))
    assert sorted(ds.manifest["record_ids"]["duplicates"]) == sorted(c.id for c in copies)


def test_split_is_deterministic_disjoint_and_stable(tmp_path: Path, tokenizer) -> None:
    records = map_records(40)
    store = _store(tmp_path, records[:30])
    first = build_dataset(store, SITE, holdout=0.25, seed=3, tokenizer=tokenizer)
    again = build_dataset(store, SITE, holdout=0.25, seed=3, tokenizer=tokenizer)
    assert first.manifest["record_ids"] == again.manifest["record_ids"]
    assert first.content_sha256 == again.content_sha256
    train = set(first.manifest["record_ids"]["train"])
    held = set(first.manifest["record_ids"]["heldout"])
    assert train and held and not train & held
    assert train | held == {r.id for r in records[:30]}
    store.add_records(records[30:])
    grown = build_dataset(store, SITE, holdout=0.25, seed=3, tokenizer=tokenizer)
    assert train <= set(grown.manifest["record_ids"]["train"])
    assert held <= set(grown.manifest["record_ids"]["heldout"])
    other = build_dataset(store, SITE, holdout=0.25, seed=4, tokenizer=tokenizer)
    assert other.manifest["record_ids"]["heldout"] != grown.manifest["record_ids"]["heldout"]


def test_split_follows_the_input_so_a_repeated_input_is_never_on_both_sides(
        tmp_path: Path, tokenizer) -> None:
    records = map_records(12)
    # The same inputs asked again (new ids, other answers): each lands beside its first.
    again = [replace(a, id=new_record_id(), output=b.output, output_raw=b.output_raw)
             for a, b in zip(records, map_records(12, seed=99), strict=True)]
    ds = build_dataset(_store(tmp_path, [*records, *again]), SITE, tokenizer=tokenizer)
    ids = ds.manifest["record_ids"]
    assert ids["heldout"], "12 inputs at the default 20% should hold some out"
    for first, second in zip(records, again, strict=True):
        side = "heldout" if first.id in ids["heldout"] else "train"
        assert first.id in ids[side] and second.id in ids[side]
    heldout_prompts = {e.prompt for e in ds.heldout}
    assert not any(e.prompt in heldout_prompts for e in ds.train)
    # The same corpus captured again (fresh ids) is split the same way.
    fresh = [replace(r, id=new_record_id()) for r in records]
    (tmp_path / "b").mkdir()
    other = build_dataset(_store(tmp_path / "b", fresh), SITE, tokenizer=tokenizer)
    held_inputs = {r.input_hash() for r in records if r.id in ids["heldout"]}
    assert {r.input_hash() for r in fresh
            if r.id in other.manifest["record_ids"]["heldout"]} == held_inputs


def test_manifest_and_jsonl_export(tmp_path: Path, tokenizer) -> None:
    records = map_records(15)
    out = tmp_path / "ds"
    ds = build_dataset(_store(tmp_path, records), SITE, out_dir=out, tokenizer=tokenizer)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["site"] == SITE and manifest["fingerprint"] == FINGERPRINT
    assert manifest["options"] == {"filtered": True, "holdout": 0.2, "seed": 0,
                                   "fingerprint": FINGERPRINT, "enum_names": True}
    ids = manifest["record_ids"]
    assert sorted(ids["train"] + ids["heldout"]) == sorted(r.id for r in records)
    lines = (out / "train.jsonl").read_text().splitlines()
    assert len(lines) == len(ids["train"]) == manifest["counts"]["train"]
    row = json.loads(lines[0])
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
    by_id = {r.id: r for r in records}
    first = by_id[ids["train"][0]]
    assert ds.codec.decode(row["messages"][2]["content"], first.args) == first.output
    assert not (tmp_path / "ds.partial").exists()
    loaded = load_dataset(out)
    assert loaded.train == ds.train and loaded.heldout == ds.heldout
    assert loaded.content_sha256 == ds.content_sha256
    (out / "train.jsonl").write_text("")  # never empty: build refuses an empty train split
    with pytest.raises(TrainingError, match="dataset build"):
        load_dataset(out)


@pytest.mark.skipif("valid" not in inspect.signature(RecordFilter).parameters,
                    reason="RecordFilter has no `valid` field yet")
def test_filtered_uses_only_records_passing_every_validator(tmp_path: Path, tokenizer) -> None:
    records = map_records(10)
    broken = records[0].output | {"enemies": []}
    bad = replace(records[0], id=new_record_id(), output=broken,
                  args={"level": records[0].args["level"] | {"name": "Broken"}})
    from byllm_distill.rpg.checks import check_map

    bad.verdicts = check_map(broken)
    assert not all(v.passed for v in bad.verdicts)
    store = _store(tmp_path, [*records, bad])
    filtered = build_dataset(store, SITE, tokenizer=tokenizer)
    unfiltered = build_dataset(store, SITE, filtered=False, tokenizer=tokenizer)
    every = lambda ds: ds.manifest["record_ids"]["train"] + ds.manifest["record_ids"]["heldout"]  # noqa: E731
    assert bad.id not in every(filtered) and len(every(filtered)) == 10
    assert bad.id in every(unfiltered) and len(every(unfiltered)) == 11
    assert filtered.manifest["options"]["filtered"] is True
    assert unfiltered.manifest["options"]["filtered"] is False


def test_only_the_newest_contract_is_used(tmp_path: Path, tokenizer) -> None:
    old = [replace(r, fingerprint="old-contract") for r in map_records(5, seed=1)]
    ds = build_dataset(_store(tmp_path, old + map_records(6)), SITE, tokenizer=tokenizer)
    assert ds.fingerprint == FINGERPRINT
    assert ds.manifest["counts"]["other_fingerprints"] == 5
    assert ds.manifest["counts"]["train"] + ds.manifest["counts"]["heldout"] == 6


def test_no_records_is_a_clear_error(tmp_path: Path, tokenizer) -> None:
    with pytest.raises(TrainingError, match="no valid records for call site 'rpg.nope'"):
        build_dataset(_store(tmp_path, map_records(2)), "rpg.nope", tokenizer=tokenizer)
    with pytest.raises(TrainingError, match="holdout"):
        build_dataset(_store(tmp_path, []), SITE, holdout=1.0, tokenizer=tokenizer)
