"""Sites served as LoRA adapters over one shared base GGUF (slow: two small trainings).

Two map sites are trained for a few steps each on different records; each version holds
`model.gguf` (merged) and `adapter.gguf`, and both name the one base GGUF the data dir
built for them. Served as adapters, both sites decode on one base `Llama`, each with its
own adapter, and answer what their merged versions answer.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from student_records import SITE, map_records

from byllm_distill.config import DistillConfig, load_config
from byllm_distill.registry import ArtifactError, SiteRegistry, file_manifest
from byllm_distill.store import Store
from byllm_distill.training.export import prepare_converter
from byllm_distill.training.pipeline import train_site
from byllm_distill.training.trainer import TrainConfig

pytestmark = pytest.mark.slow

OTHER = "other.create_next_map"  # the rpg map validators apply to `*.create_next_map`


@pytest.fixture(scope="module")
def two_sites(tmp_path_factory: pytest.TempPathFactory):
    """Version 1 of SITE (12 steps, records of seed 0) and of OTHER (8 steps, seed 1)."""
    prepare_converter()
    home = tmp_path_factory.mktemp("adapter-home")
    config = DistillConfig(home=home)
    store = Store(config.database_url)
    store.add_records(map_records(24))
    store.add_records([replace(r, site=OTHER) for r in map_records(24, seed=1)])
    first = train_site(SITE, config=config, store=store, progress=False,
                       train_config=TrainConfig(steps=12, learning_rate=2e-3))
    second = train_site(OTHER, config=config, store=store, progress=False,
                        train_config=TrainConfig(steps=8, learning_rate=3e-3, seed=1))
    args = store.get_record(first.manifest["dataset"]["heldout_ids"][0]).args
    return config, first, second, args


def _forced_logits(engine, prompt: list[int], answer: list[int], need: int | None = None,
                   chars: frozenset[str] | None = None) -> list:
    """The next-token logits at each position of `answer` (teacher-forced) under `engine`'s
    weights, decoded by its batcher like any call (`need`: its KV cells; default all, so
    it decodes alone); with `chars`, scored by the narrow head for them (head.py)."""
    from byllm_distill.runtime.decode import Eval

    def loop():
        out = [(yield Eval(list(prompt), 0))]
        for pos, token in enumerate(answer[:-1], start=len(prompt)):
            out.append((yield Eval([token], pos)))
        return out

    return engine.batcher.run(loop(), engine.weights.tag, engine.weights.activate, need,
                              chars)


def _forced_picks(engine, prompt: list[int], answer: list[int],
                  need: int | None = None) -> list[int]:
    """The greedy pick at each position of `answer` (teacher-forced), see _forced_logits."""
    import numpy as np

    return [int(np.argmax(logits)) for logits in _forced_logits(engine, prompt, answer, need)]


def _at_once(engines: list, prompt: list[int], answer: list[int]) -> dict:
    """`_forced_picks` of each engine, all running at once (threads, one batcher)."""
    picks: dict = {}
    threads = [threading.Thread(target=lambda e=e: picks.__setitem__(
        e, _forced_picks(e, prompt, answer, need=1024))) for e in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    return picks


def test_versions_carry_an_adapter_over_one_shared_base(two_sites) -> None:
    config, first, second, _ = two_sites
    bases = list((config.data_dir / "bases").iterdir())
    assert len(bases) == 1  # built once, reused by the second site
    for version in (first, second):
        serving = version.manifest["adapter_serving"]
        assert serving["adapter"] == "adapter.gguf"
        assert "adapter.gguf" in version.manifest["files"]
        assert (version.path / "adapter.gguf").read_bytes()[:4] == b"GGUF"
        assert serving["base"]["key"] == bases[0].name
        assert serving["base"]["quant"] == version.manifest["export"]["quant"] == "Q4_K_M"
    base_json = json.loads((bases[0] / "base.json").read_text())
    assert base_json["sha256"] == first.manifest["adapter_serving"]["base"]["sha256"]


def test_two_sites_share_one_base_and_answer_with_their_own_adapter(two_sites) -> None:
    from byllm_distill.runtime.engine import engine_for, unload

    config, first, second, args = two_sites
    try:
        merged = {v.site: engine_for(v.site, folder=v.path, version=1, serving="merged")
                  for v in (first, second)}
        a = engine_for(SITE, folder=first.path, version=1, serving="adapter",
                       data_dir=config.data_dir)
        b = engine_for(OTHER, folder=second.path, version=1, serving="adapter",
                       data_dir=config.data_dir)
        assert a.weights.serving == b.weights.serving == "adapter"
        assert a.llama is b.llama and a.batcher is b.batcher  # one resident base
        assert merged[SITE].llama is not a.llama
        # Alternating sites on the shared context: each call decodes under its own adapter.
        a1 = a.generate(args, temperature=0.0).text
        b1 = b.generate(args, temperature=0.0).text
        a2 = a.generate(args, temperature=0.0).text
        b2 = b.generate(args, temperature=0.0).text
        assert a1 == a2 and b1 == b2
        assert a1 != b1  # each site answers with its own adapter
        json.loads(a1), json.loads(b1)
        # Merged-then-quantized weights and a quantized base + f16 adapter are not the same
        # numbers, so free-running greedy answers drift apart once two picks are close.
        # Teacher-forced on each merged answer, a site's adapter picks the merged model's
        # token at >= 0.92 of positions here (measured: 0.92-1.0; the other site's
        # adapter 0.76-0.91), so: >= 0.9, and closer than the other site's adapter. Each
        # site's two sequences run at once on the shared context, which takes turns
        # between the adapters step by step (batch.py).
        for site, own, other in ((SITE, a, b), (OTHER, b, a)):
            prompt = merged[site].prompt(args)[1]
            raw = merged[site].generate(args, temperature=0.0, check=False).raw
            answer = merged[site].llama.tokenize(raw.encode(), add_bos=False, special=True)
            ref = _forced_picks(merged[site], prompt, answer)
            picks = _at_once([own, other], prompt, answer)
            agree = {e: sum(x == y for x, y in zip(ref, picks[e], strict=True)) / len(ref)
                     for e in (own, other)}
            assert agree[own] >= 0.9 and agree[own] > agree[other] + 0.03, (site, agree)
    finally:
        unload()


def test_sites_served_as_adapters_score_only_what_their_grammar_writes(two_sites,
                                                                      monkeypatch) -> None:
    """The shared base gets a narrow head, checked at load; each site's calls use it with
    their own adapter on, and its logits are the output layer's on the kept tokens. An
    adapter with a LoRA on the output layer keeps the whole layer."""
    import numpy as np

    from byllm_distill.runtime import models
    from byllm_distill.runtime.engine import engine_for, site_chars, unload

    config, first, second, args = two_sites
    try:
        a = engine_for(SITE, folder=first.path, version=1, serving="adapter",
                       data_dir=config.data_dir)
        b = engine_for(OTHER, folder=second.path, version=1, serving="adapter",
                       data_dir=config.data_dir)
        chars = site_chars(a.spec)
        head = a.batcher.head_for(chars)
        assert a.weights.narrow and b.weights.narrow and head is not None
        before = a.batcher.narrow_steps
        a.generate(args, temperature=0.0), b.generate(args, temperature=0.0)
        assert a.batcher.narrow_steps > before
        for engine in (a, b):
            prompt = engine.prompt(args)[1]
            raw = engine.generate(args, temperature=0.0, check=False).raw
            answer = engine.llama.tokenize(raw.encode(), add_bos=False, special=True)
            narrow = _forced_logits(engine, prompt, answer, chars=chars)
            full = _forced_logits(engine, prompt, answer)
            gaps = [float(np.max(np.abs(n[head.ids] - f[head.ids])))
                    for n, f in zip(narrow, full, strict=True)]
            same = [int(np.argmax(n)) == int(head.ids[np.argmax(f[head.ids])])
                    for n, f in zip(narrow, full, strict=True)]
            assert max(gaps) < 1.0 and sum(same) >= 0.95 * len(same), (max(gaps), same)
        unload()
        monkeypatch.setattr(models, "lora_on_output", lambda path: True)
        a = engine_for(SITE, folder=first.path, version=1, serving="adapter",
                       data_dir=config.data_dir)
        assert not a.weights.narrow
        before = a.batcher.narrow_steps
        assert a.generate(args, temperature=0.0).output is not None
        assert a.batcher.narrow_steps == before
    finally:
        unload()


def test_without_an_adapter_or_its_base_a_version_serves_merged(two_sites,
                                                                  tmp_path: Path) -> None:
    from byllm_distill.runtime.engine import engine_for, unload

    config, first, _, args = two_sites
    old = tmp_path / "old"
    shutil.copytree(first.path, old)
    (old / "adapter.gguf").unlink()
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["adapter_serving"]
    manifest["files"] = file_manifest(old)
    (old / "manifest.json").write_text(json.dumps(manifest))
    try:
        engine = engine_for(SITE, folder=old, serving="adapter", data_dir=config.data_dir)
        assert engine.weights.serving == "merged" and engine.weights.adapter is None
        no_base = engine_for(SITE, folder=first.path, serving="adapter",
                             data_dir=tmp_path / "empty")
        assert no_base.weights.serving == "merged"
        assert no_base.generate(args, temperature=0.0).output is not None
    finally:
        unload()


def test_a_file_that_is_no_adapter_is_refused_by_name(two_sites, tmp_path: Path) -> None:
    from byllm_distill.runtime.engine import engine_for, loaded_sites, unload

    config, first, _, _ = two_sites
    wrong = tmp_path / "wrong"
    shutil.copytree(first.path, wrong)
    shutil.copyfile(wrong / "model.gguf", wrong / "adapter.gguf")  # a model, not a LoRA
    manifest = json.loads((wrong / "manifest.json").read_text())
    manifest["files"] = file_manifest(wrong)
    (wrong / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="adapter.gguf cannot be loaded by llama.cpp as a "
                                            "LoRA adapter"):
        engine_for(SITE, folder=wrong, serving="adapter", data_dir=config.data_dir)
    assert loaded_sites() == []
    unload()


def test_max_resident_mb_unloads_the_least_recently_used_student(
        two_sites, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under a memory budget that holds one merged model but not two, loading the second
    unloads the first (the least recently used), which loads again when called; the same
    two sites as adapters over one base fit the same budget together."""
    from byllm_distill.runtime.engine import engine_for, loaded_sites, unload
    from byllm_distill.runtime.models import loaded_mb

    config, first, second, args = two_sites
    try:
        one = engine_for(SITE, folder=first.path, version=1, serving="merged")
        budget = int(loaded_mb([one.weights]) * 1.5)
        unload()
        monkeypatch.setenv("BYLLM_DISTILL_MAX_RESIDENT_MB", str(budget))
        engine_for(SITE, folder=first.path, version=1, serving="merged")
        other = engine_for(OTHER, folder=second.path, version=1, serving="merged")
        assert loaded_sites() == [OTHER]  # the first was unloaded to make room
        assert loaded_mb([other.weights]) <= budget
        again = engine_for(SITE, folder=first.path, version=1, serving="merged")
        assert loaded_sites() == [SITE]
        assert again.generate(args, temperature=0.0).output is not None
        unload()
        a = engine_for(SITE, folder=first.path, version=1, serving="adapter",
                       data_dir=config.data_dir)
        b = engine_for(OTHER, folder=second.path, version=1, serving="adapter",
                       data_dir=config.data_dir)
        assert loaded_sites() == [SITE, OTHER]  # one base and two adapters fit
        assert loaded_mb([a.weights, b.weights]) <= budget
    finally:
        unload()


def test_a_version_pulled_from_the_team_store_serves_over_the_downloaded_base(
        two_sites, team_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Machine A publishes the trained version to the team's stores (PostgreSQL, moto);
    machines B and C start with empty data dirs. B downloads the version and, served as an
    adapter, its base; C finds the base corrupted in the store, refuses it by name and
    serves the version merged."""
    import fsspec

    from byllm_distill.runtime.engine import engine_for, unload

    config, first, _, args = two_sites
    for key, value in team_env.items():
        monkeypatch.setenv(key, value)
    team = load_config()
    a = replace(team, home=tmp_path / "a")
    shutil.copytree(config.data_dir / "bases", a.data_dir / "bases")  # as training left it
    with SiteRegistry(a, SITE).new_version() as (number, folder):
        shutil.copytree(first.path, folder, dirs_exist_ok=True)
    base = first.manifest["adapter_serving"]["base"]
    try:
        reference = engine_for(SITE, folder=first.path, version=1, serving="adapter",
                               data_dir=config.data_dir).generate(args, temperature=0.0).text
        unload()
        b = (tmp_path / "b").resolve()
        served = engine_for(SITE, data_dir=b, version=number, serving="adapter")
        assert served.weights.serving == "adapter"  # over B's own copy of the base:
        assert (b / "bases" / base["key"] / "model.gguf").stat().st_size == base["bytes"]
        assert served.spec.folder == b / "sites" / SITE / "versions" / str(number)
        assert served.generate(args, temperature=0.0).text == reference
        unload()

        remote = f"{team.artifacts}/bases/sha256-{base['sha256']}.gguf"
        fs = fsspec.filesystem("s3", client_kwargs={"endpoint_url": team.artifacts_endpoint})
        data = bytearray(fs.cat_file(remote))
        data[len(data) // 2] ^= 0xFF
        fs.pipe_file(remote, bytes(data))
        c = (tmp_path / "c").resolve()
        with caplog.at_level(logging.WARNING, logger="byllm_distill"):
            fallback = engine_for(SITE, data_dir=c, version=number, serving="adapter")
        assert fallback.weights.serving == "merged"
        assert f"{remote} does not match its sha256" in caplog.text
        assert not (c / "bases" / base["key"]).exists()
        assert fallback.generate(args, temperature=0.0).output is not None
    finally:
        unload()


def test_a_corrupt_adapter_is_refused_and_the_other_site_keeps_serving(two_sites) -> None:
    """Runs last: it damages the second site's adapter file."""
    from byllm_distill.runtime.engine import engine_for, loaded_sites, unload

    config, first, second, args = two_sites
    try:
        a = engine_for(SITE, folder=first.path, version=1, serving="adapter",
                       data_dir=config.data_dir)
        before = a.generate(args, temperature=0.0).text
        path = second.path / "adapter.gguf"
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
        with pytest.raises(ArtifactError, match=r"adapter\.gguf does not match its manifest"):
            engine_for(OTHER, folder=second.path, version=1, serving="adapter",
                       data_dir=config.data_dir)
        assert loaded_sites() == [SITE]
        assert a.generate(args, temperature=0.0).text == before
    finally:
        unload()
