"""Train → export → serve, for real, on the embedded SmolLM2-135M base (slow: minutes).

One LoRA run (a few steps on ~30 offline-teacher map records) is shared by the module; the
QLoRA, interruption and corruption tests make their own small artifacts.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from student_records import SITE, map_records

from byllm_distill.config import DistillConfig
from byllm_distill.registry import ArtifactError, SiteRegistry
from byllm_distill.store import Store
from byllm_distill.training import TrainingError
from byllm_distill.training.base_model import load_model, load_tokenizer, resolve_base
from byllm_distill.training.dataset import load_dataset
from byllm_distill.training.export import convert_to_gguf, merge_adapter, prepare_converter
from byllm_distill.training.export import quantize as quantize_gguf
from byllm_distill.training.pipeline import train_site
from byllm_distill.training.trainer import TrainConfig, batch_loss, load_adapter, train

pytestmark = pytest.mark.slow
TRAINING_STEPS: list = []  # what the fixture's training reported to its progress callback


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """A store with 30 map records and version 1 of their student (12 LoRA steps)."""
    prepare_converter()
    home = tmp_path_factory.mktemp("student-home")
    config = DistillConfig(home=home)
    store = Store(config.database_url)
    store.add_records(map_records(30))
    version = train_site(SITE, config=config, store=store,
                         train_config=TrainConfig(steps=12, learning_rate=2e-3),
                         progress=TRAINING_STEPS.append)
    return config, store, version


@pytest.fixture(scope="module")
def base():
    return resolve_base()


def test_version_folder_is_complete_and_traceable(trained) -> None:
    config, store, version = trained
    assert version.number == 1
    assert [(s.task, s.done, s.total) for s in TRAINING_STEPS] == [
        (f"train {SITE}", n, 12) for n in range(1, 13)]
    assert all(float(s.note["loss"]) > 0 and float(s.note["tok_s"]) > 0 for s in TRAINING_STEPS)
    folder = version.path
    assert folder == config.data_dir / "sites" / SITE / "versions" / "1"
    assert not list(folder.parent.glob("*.partial"))
    assert (folder / "adapter" / "adapter_model.safetensors").is_file()
    assert (folder / "model.gguf").read_bytes()[:4] == b"GGUF"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest == version.manifest
    SiteRegistry(config, SITE).verify(1)  # every listed file's sha256 matches
    assert "model.gguf" in manifest["files"] and "adapter/adapter_config.json" in manifest[
        "files"]
    dataset = load_dataset(folder / "dataset")
    assert manifest["dataset"]["content_sha256"] == dataset.content_sha256
    assert sorted(manifest["dataset"]["train_ids"] + manifest["dataset"]["heldout_ids"]) == \
        sorted(r.id for r in store.iter_records())
    assert manifest["training"]["steps"] == 12 and manifest["training"]["tokens_per_s"] > 0
    assert manifest["export"]["quant"] == "Q4_K_M"
    assert manifest["export"]["bytes"] == (folder / "model.gguf").stat().st_size
    assert {"torch", "transformers", "peft", "llama-cpp-python"} <= set(
        manifest["library_versions"])
    codec = manifest["serving"]["codec"]
    assert codec["mode"] == "tuple" and codec["copies"] == {"level": "level"}
    assert codec["lengths"]["enemies"]["arg"] == "level/num_enemies"
    assert manifest["serving"]["attempts"] >= 1


def test_training_lowers_the_loss_on_a_fixed_batch(trained, base) -> None:
    _, _, version = trained
    batch = load_dataset(version.path / "dataset").train[:3]
    tokenizer = load_tokenizer(base)
    before = batch_loss(load_model(base), tokenizer, batch)
    after = batch_loss(load_adapter(base, version.path / "adapter"), tokenizer, batch)
    assert after < before * 0.8, (before, after)


def test_answer_loss_equals_the_models_own_loss(trained, base) -> None:
    """The trainer's loss (vocabulary projection on answer positions only) is the same
    number as transformers' full-sequence loss, with and without an adapter, padded."""
    import torch

    from byllm_distill.training.chat import prompt_format
    from byllm_distill.training.trainer import _collate, answer_loss, encode

    _, _, version = trained
    examples = load_dataset(version.path / "dataset").train[:2]
    tokenizer = load_tokenizer(base)
    fmt = prompt_format(tokenizer)
    batch = _collate([encode(tokenizer, fmt, e, 1024) for e in examples], 0, "cpu")
    for model in (load_model(base), load_adapter(base, version.path / "adapter")):
        model.eval()
        with torch.no_grad():
            assert abs(float(answer_loss(model, batch)) - float(model(**batch).loss)) < 1e-4


def test_student_answers_parse_into_map_through_byllm(trained) -> None:
    """The student serves the real Jac program's call site; byLLM parses its answer."""
    import byllm_distill
    from byllm_distill.config import load_config
    from byllm_distill.rpg.corpus import load_program
    from byllm_distill.runtime.engine import unload
    from byllm_distill.runtime.student import student_model

    config, store, version = trained
    rpg = load_program()
    teacher = rpg.llm
    level = store.get_record(version.manifest["dataset"]["heldout_ids"][0]).args["level"]
    rpg.llm = student_model(SITE, folder=version.path, version=version.number)
    try:
        game_map = rpg.create_next_map(rpg.Level(**level))
    finally:
        rpg.llm = teacher
        unload(SITE)
    assert isinstance(game_map, rpg.Map)
    assert isinstance(game_map.level, rpg.Level) and isinstance(game_map.player_pos,
                                                                rpg.Position)
    assert all(isinstance(w, rpg.Wall) for w in game_map.walls)
    byllm_distill.flush(30)
    captured = [r for r in Store(load_config().database_url).iter_records()
                if r.model.startswith("student:")]
    assert len(captured) == 1
    assert json.loads(captured[0].output_raw) == captured[0].output
    assert captured[0].usage["completion_tokens"] > 10


def test_trained_student_differs_from_the_base_model(trained, base, tmp_path: Path) -> None:
    from byllm_distill.runtime.engine import Engine, StudentSpec, unload
    from byllm_distill.runtime.models import weights_for

    config, store, version = trained
    args = store.get_record(version.manifest["dataset"]["heldout_ids"][0]).args
    spec = StudentSpec.from_folder(SITE, version.path, version=1)
    # The base is served from Q4_0 (the student from the default Q4_K_M): both load.
    base_gguf = quantize_gguf(convert_to_gguf(base.path, tmp_path / "base-f16.gguf"),
                              tmp_path / "base.gguf", "Q4_0")
    base_spec = replace(spec, gguf=base_gguf)
    try:
        student = Engine(spec, weights_for(spec))
        untrained = Engine(base_spec, weights_for(base_spec))
        first = student.generate(args, temperature=0.0)
        other = untrained.generate(args, temperature=0.0)
        sampled = [student.generate(args, seed=7).text for _ in range(2)]
    finally:
        unload()
    json.loads(first.text)
    assert first.text != other.text
    assert sampled[0] == sampled[1]  # a seeded draw is reproducible
    json.loads(sampled[0])


@pytest.mark.parametrize("coordinate", ["x", "y"])
def test_guided_decoding_redraws_items_that_fail_a_prefix_check(
        trained, coordinate: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A prefix-closed check on enemies makes the student draw a failing enemy again as
    soon as it is written; without the guide, the same draws break the rule. An odd `x`
    (not the item's last number) needs the whole enemy redrawn; an odd `y` (its last
    number) is redrawn alone, among the values that pass."""
    from byllm_distill.runtime.engine import engine_for, unload
    from byllm_distill.validators import registry
    from byllm_distill.validators.base import Verdict

    def even_columns(record):
        odd = [e for e in record.output["enemies"] if e[coordinate] % 2]
        return [Verdict("enemies_on_even_columns", not odd, f"{len(odd)} on odd places")]

    registry.for_site(SITE)  # entry points load now, so the patch below is what stays
    monkeypatch.setattr(registry, "_by_pattern", [(SITE, even_columns)])
    monkeypatch.setattr(registry, "_prefix_closed",
                        {even_columns: frozenset({"enemies_on_even_columns"})})
    config, store, version = trained
    args = store.get_record(version.manifest["dataset"]["heldout_ids"][0]).args
    engine = engine_for(SITE, folder=version.path, version=1)
    try:
        guided = [engine.generate(args, seed=s, attempts=1) for s in range(4)]
        unguided = [engine.generate(args, seed=s, attempts=1, guided=False) for s in range(4)]
    finally:
        unload(SITE)
    assert sum(g.redraws for g in guided) > 0
    assert all(g.redraws == 0 for g in unguided)
    assert all(g.output is not None for g in guided)  # the last attempt always finishes
    assert sum(g.passed[0] for g in guided) > sum(g.passed[0] for g in unguided)
    assert sum(g.passed[0] for g in guided) >= 3


def test_qlora_trains_on_cpu_and_its_adapter_merges(trained, base, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    _, _, version = trained
    dataset = load_dataset(version.path / "dataset")
    result = train(replace(dataset, train=dataset.train[:4]), tmp_path / "qlora",
                   TrainConfig(steps=3, qlora=True, learning_rate=2e-3), base=base,
                   progress=False)
    meta = json.loads((result.path / "training.json").read_text())
    assert meta["config"]["qlora"] is True and meta["steps"] == 3
    merged = merge_adapter(base, result.path, tmp_path / "merged")
    before = load_file(base.path / "model.safetensors")
    after = load_file(merged / "model.safetensors")
    name = "model.layers.0.self_attn.q_proj.weight"
    assert after[name].dtype == torch.float32
    assert not torch.equal(before[name], after[name])
    assert (after[name] - before[name]).abs().max() < 0.5


def test_interrupted_training_leaves_no_artifact(trained, base, tmp_path: Path) -> None:
    _, _, version = trained
    dataset = load_dataset(version.path / "dataset")
    dest = tmp_path / "adapter"
    partial = tmp_path / "adapter.partial"
    stop = threading.Event()

    def interrupt_once_training() -> None:
        while not stop.is_set() and not partial.exists():
            stop.wait(0.1)
        # A step or two into the loop, as a user's Ctrl-C would be; again each second
        # while training goes on: a KeyboardInterrupt raised inside a finalizer (`__del__`,
        # run by the garbage collector mid-step) is swallowed by Python, and one such lost
        # Ctrl-C once left this test training for half an hour.
        while not stop.wait(1.0):
            os.kill(os.getpid(), signal.SIGINT)

    raised: list[float] = []

    def ctrl_c_in_training(signum: int, frame: object) -> None:
        """Ctrl-C raises only while `train` runs (not after it, in this test's own code),
        and again only if training still goes on 5 s later (not in its clean-up)."""
        if raised and time.monotonic() - raised[-1] < 5.0:
            return
        while frame is not None:
            if frame.f_code is train.__code__:  # type: ignore[attr-defined]
                raised.append(time.monotonic())
                raise KeyboardInterrupt
            frame = frame.f_back  # type: ignore[attr-defined]

    # A shell starts background jobs with SIGINT ignored (`pytest &`); Ctrl-C must reach us.
    previous = signal.signal(signal.SIGINT, ctrl_c_in_training)
    watcher = threading.Thread(target=interrupt_once_training)
    watcher.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            train(dataset, dest, TrainConfig(steps=10_000), base=base, progress=False)
    finally:
        stop.set()
        watcher.join()
        signal.signal(signal.SIGINT, previous)
    assert not dest.exists() and not partial.exists()


def _copy(version_path: Path, tmp_path: Path) -> Path:
    target = tmp_path / "v"
    shutil.copytree(version_path, target)
    return target


def test_corrupt_or_missing_artifacts_are_refused(trained, tmp_path: Path) -> None:
    from byllm_distill.runtime.engine import engine_for, loaded_sites, unload

    _, store, version = trained
    good = engine_for(SITE, folder=version.path, version=1)
    args = store.get_record(version.manifest["dataset"]["heldout_ids"][0]).args
    assert SITE in loaded_sites() and "root ::=" in good.gbnf(args)

    folder = _copy(version.path, tmp_path)
    gguf = folder / "model.gguf"
    data = bytearray(gguf.read_bytes())
    data[len(data) // 2] ^= 0xFF
    gguf.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"model\.gguf does not match its manifest.*"
                                            r"byllm-distill train rpg\.create_next_map"):
        engine_for(SITE, folder=folder)
    assert SITE not in loaded_sites()

    gguf.unlink()
    with pytest.raises(ArtifactError, match=r"model\.gguf is missing.*byllm-distill train"):
        engine_for(SITE, folder=folder)
    assert SITE not in loaded_sites()

    # A file that matches its manifest but is not a model: llama.cpp refuses, we say why.
    gguf.write_bytes(b"GGUF" + b"\0" * 4096)
    manifest = json.loads((folder / "manifest.json").read_text())
    from byllm_distill.registry import file_manifest

    manifest["files"] = file_manifest(folder)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=r"model\.gguf cannot be loaded.*byllm-distill "
                                            "train"):
        engine_for(SITE, folder=folder)
    assert SITE not in loaded_sites()
    unload()


def test_corrupt_adapter_is_refused(trained, base, tmp_path: Path) -> None:
    from byllm_distill.runtime.engine import engine_for, loaded_sites

    _, _, version = trained
    folder = _copy(version.path, tmp_path)
    weights = folder / "adapter" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ArtifactError, match=r"adapter_model\.safetensors does not match"):
        engine_for(SITE, folder=folder)
    assert SITE not in loaded_sites()
    with pytest.raises(TrainingError, match=r"adapter .* is corrupt.*byllm-distill train"):
        load_adapter(base, folder / "adapter")
    (folder / "adapter" / "adapter_config.json").unlink()
    with pytest.raises(TrainingError, match="adapter_config.json missing"):
        merge_adapter(base, folder / "adapter", tmp_path / "merged")


def test_cli_dataset_build_and_try(trained, monkeypatch: pytest.MonkeyPatch) -> None:
    from byllm_distill.cli import main
    from byllm_distill.runtime.engine import unload

    config, store, version = trained
    monkeypatch.setenv("BYLLM_DISTILL_HOME", str(config.data_dir))
    runner = CliRunner()
    result = runner.invoke(main, ["dataset", "build", SITE])
    assert result.exit_code == 0, result.output
    counts = version.manifest["dataset"]["counts"]
    assert f"{counts['train']} train, {counts['heldout']} held-out" in result.output
    assert (config.data_dir / "datasets" / SITE / "filtered" / "train.jsonl").is_file()

    record = store.get_record(version.manifest["dataset"]["heldout_ids"][1])
    try:
        result = runner.invoke(main, ["try", SITE, "--input", json.dumps(record.args)])
    finally:
        unload()
    assert result.exit_code == 0, result.output
    assert "student v1" in result.output and "nearest teacher record" in result.output
    assert f"nearest teacher record {record.id} (argument similarity 1.00" in result.output

    result = runner.invoke(main, ["try", SITE, "--input", "[1]"])
    assert result.exit_code != 0 and "JSON object" in result.output
    result = runner.invoke(main, ["train", SITE, "--steps", "0"])
    assert result.exit_code == 1 and "'steps' must be at least 1" in result.output


def test_unknown_base_model_names_the_fix() -> None:
    with pytest.raises(TrainingError, match=r"'byllm-distill-test/absent' is not in the local "
                                            r"Hugging Face cache.*huggingface-cli download"):
        resolve_base("byllm-distill-test/absent")
    with pytest.raises(TrainingError, match="does not exist"):
        resolve_base("/nowhere/model.gguf")


def test_train_config_validation_names_the_field() -> None:
    with pytest.raises(TrainingError, match="'rank' must be at least 1"):
        TrainConfig(rank=0)
    with pytest.raises(TrainingError, match="either 'steps' or 'epochs'"):
        TrainConfig(steps=3, epochs=1.0)
    with pytest.raises(TrainingError, match="'dropout'"):
        TrainConfig(dropout=1.5)
    assert TrainConfig(epochs=2.0).total_steps(10) == 20
    assert TrainConfig().total_steps(100) == 200 and TrainConfig().total_steps(5000) == 800
    assert TrainConfig(epochs=1.0).total_steps(5000) == 5000
    assert TrainConfig(batch_size=4).total_steps(10) == 5


def test_a_record_over_the_prompt_budget_trains(base, tmp_path: Path) -> None:
    """One record whose list argument is far over the budget: it is compacted (newest items
    kept), counted, and the site trains; its loss falls like the others'."""
    from byllm_distill.training.dataset import build_dataset

    records = [replace(r, args={**r.args, "history": [1, 2]}) for r in map_records(12)]
    long_one = replace(records[2], args={**records[2].args, "history": list(range(4000))})
    records[2] = long_one
    store = Store(f"sqlite:///{tmp_path / 'd.db'}")
    store.add_records(records)
    tokenizer = load_tokenizer(base)
    dataset = build_dataset(store, SITE, tokenizer=tokenizer, holdout=0.0)
    assert dataset.manifest["record_ids"]["compacted"] == [long_one.id]
    result = train(dataset, tmp_path / "adapter", TrainConfig(steps=12, learning_rate=2e-3),
                   base=base, progress=False)
    assert result.steps == 12 and result.manifest["truncated_examples"] == 0
    batch = [e for e in dataset.train if e.record_id == long_one.id]
    before = batch_loss(load_model(base), tokenizer, batch)
    after = batch_loss(load_adapter(base, tmp_path / "adapter"), tokenizer, batch)
    assert after < before * 0.8, (before, after)


def test_serving_fits_long_inputs_to_the_budget_and_evaluates_a_prompt_once(trained) -> None:
    from byllm_distill.runtime.engine import PromptOverBudget, engine_for, unload

    _, store, version = trained
    record = store.get_record(version.manifest["dataset"]["heldout_ids"][0])
    try:
        engine = engine_for(SITE, folder=version.path)
        budget = engine.spec.codec.inputs.budget
        assert budget and engine.n_ctx >= budget + engine.spec.max_tokens
        assert engine.spec.n_ctx < 2048  # n_ctx follows the budget, not a fixed 2048
        long_args = {**record.args, "history": list(range(5000))}
        text, tokens = engine.prompt(long_args)
        assert len(tokens) <= budget and ",4999]" in text and "[0," not in text
        with pytest.raises(PromptOverBudget, match="over the student's budget"):
            engine.prompt({**record.args, "note": "word " * 5000})

        evals = engine.prompt_evals
        first = engine.generate(record.args, temperature=0.0)
        again = engine.generate(record.args, temperature=0.0)
        assert first.raw == again.raw and first.output is not None
        assert engine.prompt_evals == evals + 2  # one evaluation per call
        # Sampled answers with up to three validator-checked attempts: still one prompt
        # evaluation per call, and the same seed draws the same answer each time.
        drawn = [engine.generate(record.args, seed=7, attempts=3) for _ in range(3)]
        assert engine.prompt_evals == evals + 5
        assert len({g.raw for g in drawn}) == 1
    finally:
        unload()


def test_concurrent_callers_each_get_an_answer_to_their_own_input(trained) -> None:
    """Callers on threads share one engine and are decoded together, one forward pass per
    step (guided decoding, redraws and jump-forward included): each gets an answer that
    passes the validators for its own input, and, teacher-forced on its own greedy
    answer, picks what it picks alone at >= 90% of the positions (the batch changes the
    rounding, not the answer; a sequence fed another's logits or positions would not
    come close)."""
    import threading

    import numpy as np

    from byllm_distill.runtime.decode import Eval
    from byllm_distill.runtime.engine import engine_for, unload

    _, store, version = trained
    inputs = [store.get_record(rid).args for rid in version.manifest["dataset"]["heldout_ids"]]
    inputs = inputs[:4]
    assert len({json.dumps(a, sort_keys=True) for a in inputs}) == len(inputs) >= 3
    try:
        engine = engine_for(SITE, folder=version.path)
        assert engine.batcher.slots >= len(inputs)
        prompts = [engine.prompt(a)[1] for a in inputs]
        answers = [engine.llama.tokenize(engine.generate(a, temperature=0.0, check=False)
                                         .raw.encode(), add_bos=False, special=True)
                   for a in inputs]

        def picks(i: int):
            logits = yield Eval(list(prompts[i]), 0)
            out = [int(np.argmax(logits))]
            for pos, token in enumerate(answers[i][:-1], start=len(prompts[i])):
                logits = yield Eval([token], pos)
                out.append(int(np.argmax(logits)))
            return out

        def forced_picks(i: int, need: int | None = None) -> list[int]:
            return engine.batcher.run(picks(i), engine.weights.tag, engine.weights.activate,
                                      need)

        alone = [forced_picks(i) for i in range(len(inputs))]
        together: dict[int, tuple] = {}
        errors: list[BaseException] = []

        def call(i: int) -> None:
            try:
                together[i] = (engine.generate(inputs[i], seed=i), forced_picks(i, 1024))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(inputs))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=600)
        assert not errors and len(together) == len(inputs)
        for i, (generation, forced) in together.items():
            assert generation.passed and generation.passed[-1], i  # valid for its input
            same = sum(x == y for x, y in zip(forced, alone[i], strict=True)) / len(alone[i])
            assert same >= 0.9, (i, same)
        assert engine.expected_wait_ms() == 0.0  # nobody waiting once all have answered
    finally:
        unload()


def test_a_draft_is_read_only_in_a_pass_of_its_own_call(trained) -> None:
    """Drafts (runtime/draft.py): alone, a request's draft is read in its pass and its
    logits are those the model gives after the draft decoded on its own; beside another
    call the draft is left out (one row back). Served answers read drafts and keep
    passing, scored by the narrow head."""
    import numpy as np

    from byllm_distill.runtime import batch as batch_module
    from byllm_distill.runtime.decode import Eval
    from byllm_distill.runtime.engine import engine_for, unload

    _, store, version = trained
    args = store.get_record(version.manifest["dataset"]["heldout_ids"][0]).args
    try:
        engine = engine_for(SITE, folder=version.path)
        assert engine._decoder.drafter is not None  # from the version's training answers
        batcher, tag, activate = engine.batcher, engine.weights.tag, engine.weights.activate
        prompt = engine.prompt(args)[1]
        first, second = engine.llama.tokenize(b"[[1", add_bos=False, special=False)[:2]

        def with_draft(out: list):
            yield Eval(list(prompt), 0)
            out.append((yield Eval([first], len(prompt), (second,))))

        def one_by_one(out: list):
            yield Eval(list(prompt), 0)
            yield Eval([first], len(prompt))
            out.append((yield Eval([second], len(prompt) + 1)))

        alone: list = []
        batcher.run(with_draft(alone), tag, activate, 1024)
        reference: list = []
        batcher.run(one_by_one(reference), tag, activate, 1024)
        assert alone[0].shape == (2, engine.llama.n_vocab())
        # Same tokens, same positions: the draft's row is the model's next-token logits
        # after it (to the rounding of a two-token pass; another token's would differ).
        assert np.argmax(alone[0][1]) == np.argmax(reference[0])
        assert np.corrcoef(alone[0][1], reference[0])[0, 1] > 0.99

        beside: list = []
        with batcher.turns.exclusive():  # both start in the same step
            calls = [batch_module._Call(with_draft(beside), tag, activate, 0, 1024),
                     batch_module._Call(with_draft([]), tag, activate, 1, 1024)]
            with batcher._cond:
                batcher._incoming += calls
            batcher.drive(lambda: all(c.done.done() for c in calls))
        assert all(c.done.exception() is None for c in calls)
        assert beside[0].shape == (engine.llama.n_vocab(),)  # the draft was left out

        engine._decoder.drafts = engine._decoder.drafts_taken = 0
        narrow = batcher.narrow_steps
        generation = engine.generate(args, seed=3)
        assert generation.passed and generation.passed[-1]
        assert engine._decoder.drafts_taken > 0
        # A map's grammar writes digits, brackets and commas: the merged student scores
        # only those tokens (runtime/head.py), drafts' rows included.
        assert engine.batcher.head is not None and batcher.narrow_steps > narrow
    finally:
        unload()


def test_drafts_and_the_narrow_head_can_be_turned_off(trained, monkeypatch) -> None:
    """`drafts = false` / `narrow_head = false` (here through the environment): the site
    loads without a drafter and with llama.cpp's whole output layer, and still answers."""
    from byllm_distill.runtime.engine import engine_for, unload

    _, store, version = trained
    args = store.get_record(version.manifest["dataset"]["heldout_ids"][0]).args
    unload()
    monkeypatch.setenv("BYLLM_DISTILL_DRAFTS", "false")
    monkeypatch.setenv("BYLLM_DISTILL_NARROW_HEAD", "false")
    try:
        engine = engine_for(SITE, folder=version.path)
        assert engine._decoder.drafter is None and engine.batcher.head is None
        assert engine.generate(args, seed=1).passed
        assert engine._decoder.drafts == 0 and engine.batcher.narrow_steps == 0
    finally:
        unload()


def test_a_sequence_decodes_the_same_whatever_another_sequence_holds(trained) -> None:
    """No cross-talk in a batch: a sequence, teacher-forced, decoded in lockstep beside
    another sequence that holds different tokens (the batch's shape the same), gets
    exactly the same logits. A sequence that read the other's KV entries would not."""
    import numpy as np

    from byllm_distill.runtime import batch as batch_module
    from byllm_distill.runtime.decode import Eval
    from byllm_distill.runtime.engine import engine_for, unload

    _, store, version = trained
    args = store.get_record(version.manifest["dataset"]["heldout_ids"][0]).args
    try:
        engine = engine_for(SITE, folder=version.path)
        batcher, tag, activate = engine.batcher, engine.weights.tag, engine.weights.activate
        prompt = engine.prompt(args)[1]
        answer = engine.llama.tokenize(engine.generate(args, temperature=0.0, check=False)
                                       .raw.encode(), add_bos=False, special=True)[:40]

        def forced(tokens: list[int], out: list):
            logits = yield Eval(list(tokens[:len(prompt)]), 0)
            out.append(logits)
            for pos in range(len(prompt), len(tokens)):
                logits = yield Eval([tokens[pos]], pos)
                out.append(logits)

        def beside(other: list[int]):
            mine: list = []
            with batcher.turns.exclusive():  # no caller's call can start meanwhile
                calls = [batch_module._Call(forced(prompt + answer, mine), tag, activate, 0,
                                            1024),
                         batch_module._Call(forced(other, []), tag, activate, 1, 1024)]
                with batcher._cond:
                    batcher._incoming += calls
                # Both start in the same step and run in lockstep.
                batcher.drive(lambda: all(c.done.done() for c in calls))
            assert all(c.done.exception() is None for c in calls)
            return np.array(mine)

        rng = np.random.default_rng(0)
        n = len(prompt) + len(answer)
        first = beside([int(t) for t in rng.integers(100, 20000, n)])
        second = beside([int(t) for t in rng.integers(100, 20000, n)])
        assert first.shape == (len(answer) + 1, engine.llama.n_vocab())
        assert np.array_equal(first, second)
    finally:
        unload()


STEPPING_CHILD = """
import json, os, sys, threading, time
from pathlib import Path
from byllm_distill.runtime.engine import engine_for

def threads():
    return len(os.listdir("/proc/self/task"))

engine = engine_for(sys.argv[1], folder=Path(sys.argv[2]))
caller = threading.Thread(target=lambda: engine.generate(json.loads(sys.argv[3]), seed=0))
before = threads()
caller.start()
most = before
while caller.is_alive():
    most = max(most, threads())
    time.sleep(0.002)
deadline = time.monotonic() + 10
while threads() > before and time.monotonic() < deadline:
    time.sleep(0.01)
print(json.dumps({"before": before, "most": most, "after": threads()}))
"""


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="llama.cpp starts no OpenMP team on 1 CPU")
def test_a_stepping_thread_out_of_work_keeps_no_openmp_threads(trained) -> None:
    """While a call decodes, llama.cpp's OpenMP worker runs beside the stepping thread; once
    the call is answered it is given back (a parked one made every other resident model's
    steps ~3x slower: byllm_distill/openmp.py). A fresh process: nothing else starts threads."""
    import subprocess
    import sys

    _, store, version = trained
    args = store.get_record(version.manifest["dataset"]["heldout_ids"][0]).args
    out = subprocess.run([sys.executable, "-c", STEPPING_CHILD, SITE, str(version.path),
                          json.dumps(args)], check=True, capture_output=True, text=True,
                         timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["most"] >= seen["before"] + 2, f"no OpenMP worker seen while decoding: {seen}"
    assert seen["after"] == seen["before"], f"an OpenMP worker stayed parked: {seen}"
