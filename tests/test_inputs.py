"""Input policy: which arguments a student reads, the prompt budget, and long records."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest
from student_records import SITE, map_records

from byllm_distill.config import ConfigError, load_config
from byllm_distill.store import Store
from byllm_distill.training import TrainingError
from byllm_distill.training.chat import prompt_format
from byllm_distill.training.dataset import build_dataset
from byllm_distill.training.inputs import InputPolicy, choose
from byllm_distill.training.trainer import encode


@pytest.fixture(scope="module")
def tokenizer():
    from byllm_distill.training.base_model import load_tokenizer, resolve_base

    return load_tokenizer(resolve_base())


def _chars(args: dict) -> int:
    import json

    return len(json.dumps(args))


def test_fit_keeps_the_newest_items_and_says_what_it_did() -> None:
    args = {"self": {"log": list(range(100)), "name": "x"}, "n": 3}
    policy = InputPolicy(budget=200)
    shown, action = policy.fit(args, _chars)
    assert action == "compacted"
    kept = shown["self"]["log"]
    assert kept == list(range(100 - len(kept), 100)) and 0 < len(kept) < 100
    assert _chars(shown) <= 200
    # one more item would not fit: the largest k that fits is kept
    bigger = {**shown, "self": {**shown["self"], "log": list(range(99 - len(kept), 100))}}
    assert _chars(bigger) > 200
    assert args["self"]["log"] == list(range(100))  # the caller's arguments are untouched
    assert policy.fit({"n": 3}, _chars) == ({"n": 3}, "kept")
    shown, action = policy.fit({"text": "y" * 500, "log": [1, 2]}, _chars)
    assert action == "over" and shown["log"] == []


def test_drop_and_keep_last_and_round_trip() -> None:
    policy = InputPolicy(drop=("self/notes",), keep_last={"self/done": 2}, budget=50,
                         chosen={"self/notes": {"choice": "drop", "by": "jac.toml"}})
    args = {"self": {"notes": ["a", "b"], "done": [1, 2, 3, 4], "gold": 5}, "region": "r"}
    assert policy.apply(args) == {"self": {"done": [3, 4], "gold": 5}, "region": "r"}
    assert InputPolicy.from_dict(policy.to_dict()) == policy
    assert InputPolicy.from_dict(None) == InputPolicy()
    assert policy.describe() == "drop self/notes, self/done: last 2, budget 50 tokens"


def _quest_records(n: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Arguments with growing object state and answers that depend only on the newest
    item of `self/done` (the kind cycles) and on `level`; `self/notes` never matters."""
    rng = random.Random(seed)
    args, outputs, done, notes = [], [], [], []
    for i in range(n):
        level = rng.randint(1, 6)
        kind = done[-1]["kind"] % 3 + 1 if done else 1
        args.append({"self": {"done": list(done), "notes": list(notes)}, "level": level})
        outputs.append({"kind": kind, "target": level + 1})
        done.append({"kind": kind, "title": f"quest {i} of the long road north, past the lake"})
        notes.append(f"day {i}: a diary line about the road, the inn, the weather and the "
                     "long way home")
        if i % 15 == 14:
            done, notes = [], []
    return args, outputs


def test_choose_drops_what_the_answers_do_not_depend_on() -> None:
    args, outputs = _quest_records(60)
    policy = choose("s", args, outputs)
    assert "self/notes" in policy.drop
    assert policy.chosen["self/notes"]["by"] == "records"
    # the answer needs the newest item of self/done: it is cut, not dropped
    assert "self/done" not in policy.drop and "self" not in policy.drop
    assert policy.keep_last.get("self/done") in (1, 3)
    report = policy.chosen["self/done"]["proxy"]
    assert report["drop"]["lower_diff"] < -0.05  # measured: dropping it loses agreement
    shown = policy.apply(args[20])
    assert "notes" not in shown["self"]
    assert shown["self"]["done"] == args[20]["self"]["done"][-policy.keep_last["self/done"]:]


def test_users_choice_wins_and_unknown_paths_name_the_key() -> None:
    args, outputs = _quest_records(30)
    policy = choose("s", args, outputs, drop=("self/done",), keep_last={"self/notes": 2})
    assert policy.drop[0] == "self/done" and policy.keep_last["self/notes"] == 2
    assert policy.chosen["self/done"] == {"choice": "drop", "by": "jac.toml"}
    with pytest.raises(TrainingError, match=r"drop_inputs: 'self/nope' is not an argument "
                                            r"path of site 's'.*self/done"):
        choose("s", args, outputs, drop=("self/nope",))
    few = choose("s", args[:5], outputs[:5])  # too few records to measure: everything whole
    assert few.drop == () and few.keep_last == {}


def test_jac_toml_input_settings_are_validated(tmp_path: Path) -> None:
    site = "quest_log.QuestLog.next_quest"
    (tmp_path / "jac.toml").write_text(
        f'[plugins.distill.sites."{site}"]\ndrop_inputs = ["self/notes"]\n'
        'keep_last = {"self/done" = 3}\nprompt_budget = 600\n')
    settings = load_config(tmp_path, environ={}).site(site)
    assert settings.drop_inputs == ("self/notes",)
    assert settings.keep_last == {"self/done": 3} and settings.prompt_budget == 600
    (tmp_path / "jac.toml").write_text(
        f'[plugins.distill.sites."{site}"]\nkeep_last = {{"self/done" = 2.5}}\n')
    with pytest.raises(ConfigError, match=r"'keep_last.self/done' must be a whole number"):
        load_config(tmp_path, environ={})
    (tmp_path / "jac.toml").write_text(
        f'[plugins.distill.sites."{site}"]\nkeep_last = {{"self/done" = 0}}\n')
    with pytest.raises(ConfigError, match=r"'keep_last.self/done' must be a whole number of "
                                          r"1 or more"):
        load_config(tmp_path, environ={})


def test_a_record_over_the_budget_is_compacted_or_left_out_and_counted(
        tmp_path: Path, tokenizer) -> None:
    records = [replace(r, args={**r.args, "history": list(range(3))}) for r in map_records(16)]
    long_one = replace(records[3], args={**records[3].args, "history": list(range(3000))})
    hopeless = replace(records[5], args={**records[5].args, "history": [],
                                         "note": "word " * 3000})
    records[3], records[5] = long_one, hopeless
    store = Store(f"sqlite:///{tmp_path / 'd.db'}")
    store.add_records(records)
    ds = build_dataset(store, SITE, tokenizer=tokenizer, holdout=0.0)
    counts, ids = ds.manifest["counts"], ds.manifest["record_ids"]
    assert counts["compacted"] == 1 and ids["compacted"] == [long_one.id]
    assert counts["over_budget"] == 1 and ids["over_budget"] == [hopeless.id]
    assert counts["train"] == 15 and hopeless.id not in [e.record_id for e in ds.train]
    budget = ds.codec.inputs.budget
    assert budget == ds.manifest["inputs"]["budget"] and 256 <= budget < 1024
    (example,) = [e for e in ds.train if e.record_id == long_one.id]
    assert ",2999]" in example.prompt and "[0," not in example.prompt  # newest items kept
    fmt = prompt_format(tokenizer)
    for e in ds.train:  # every example fits the trainer's length: training goes on
        encoded = encode(tokenizer, fmt, e, 1024)
        assert not encoded.truncated
    assert ds.manifest["tokens"]["compact_prompt"]["max"] <= budget


def test_no_choice_without_signal_or_against_what_the_codec_links(tmp_path: Path,
                                                                  tokenizer) -> None:
    rng = random.Random(1)
    big = [{"state": {"log": [f"entry {j} " * 8 for j in range(rng.randint(5, 12))]},
            "n": rng.randint(1, 9)} for _ in range(40)]
    noise = [{"pick": rng.randint(0, 99), "word": rng.choice("abcdefgh")} for _ in big]
    policy = choose("s", big, noise)  # answers the inputs do not explain: nothing to see
    assert policy.drop == () and policy.keep_last == {}
    assert policy.chosen["state"]["proxy"]["note"] == "no signal"
    copied = [{"state": a["state"], "n": a["n"] + 1} for a in big]
    assert choose("s", big, copied, linked={"state"}).drop == ()
    # The RPG map site: its only input is copied into the answer and bounds its lists.
    ds = build_dataset(_store_of(tmp_path, map_records(40)), SITE, tokenizer=tokenizer)
    assert ds.codec.inputs.drop == () and ds.codec.inputs.keep_last == {}


def _store_of(tmp_path: Path, records: list) -> Store:
    store = Store(f"sqlite:///{tmp_path / 'm.db'}")
    store.add_records(records)
    return store
