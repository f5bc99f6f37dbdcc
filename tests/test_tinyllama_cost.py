"""The TinyLlama cost probe's own path, end to end on a tiny Llama shape (slow: ~1-2 min).

Builds a 2-layer random Llama with a 512-piece synthetic tokenizer, trains LoRA and QLoRA
one step each, exports F16 / Q8_0 / Q4_K_M / Q4_0 and decodes with llama.cpp: every figure
the README table shows is a real measurement (positive, from its own process).
"""

from __future__ import annotations

import sys

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow

sys.path.insert(0, str(ROOT / "benchmarks"))
import tinyllama_cost  # noqa: E402

TINY = {**tinyllama_cost.TINYLLAMA_ARCH, "hidden_size": 256, "intermediate_size": 512,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 512, "max_position_embeddings": 256}


def test_probe_measures_every_figure(tmp_path):
    pytest.importorskip("llama_cpp")
    from byllm_distill.training.export import converter_ready

    if not converter_ready():
        pytest.skip("the HF→GGUF converter is not prepared (scripts/setup.sh prepares it)")
    entry = tinyllama_cost.probe_model("tiny", tmp_path / "tiny", steps=1, seq_len=64,
                                       device="cpu", threads=2, decode_tokens=8, arch=TINY,
                                       corpus_bytes=300_000, say=lambda _: None)
    assert entry["base"]["tokenizer"]["vocab_size"] == 512
    assert entry["base"]["parameters"] > 0
    for method in ("lora", "qlora"):
        run = entry["train"][method]
        assert run["steps"] == 1 and run["tokens"] == 64
        assert run["tokens_per_s"] > 0 and run["process_peak_rss_mb"] > 100
    sizes = {q: entry["export"]["gguf"][q]["bytes"] for q in ("F16", "Q8_0", "Q4_K_M", "Q4_0")}
    assert sizes["F16"] > sizes["Q8_0"] > sizes["Q4_0"] > 0
    for quant in ("Q4_K_M", "Q4_0"):
        run = entry["decode"][quant]
        assert run["tokens"] == 8 and run["ms_per_token"] > 0 and run["rss_mb"] > 0
    assert "random" in entry["base"]["weights"] and "synthetic" in entry["label"]
    rendered = tinyllama_cost.table({"tiny": entry})
    cells = [line.split("|")[1].strip() for line in rendered.splitlines()[2:]]
    assert len(cells) == 14 and "-" not in cells
