"""A published Nemotron-NAS config.json is read per layer everywhere a parent or child config is read.

tests/data/nemotron-super-49b-config.json is nvidia/Llama-3_3-Nemotron-Super-49B-v1's config.json (no weights),
rebuilt from the copy NVIDIA's Megatron-Bridge tests embed ("Config copy from https://huggingface.co/nvidia/
Llama-3_3-Nemotron-Super-49B-v1/blob/main/config.json", LLAMA_33_NEMOTRON_SUPER_49B_HETEROGENEOUS_CONFIG):
80 layers, ffn entries with `ffn_mult` and no width, top-level num_key_value_heads and intermediate_size null.
Rebuilt with json.dumps(indent=2, sort_keys=True), every character offset of the source's pages matched, and its
parameter count is the model card's 49.9B (below).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from transformers import AutoConfig

from puzzle import blocks, cost_model
from puzzle.nemotron_nas import DeciLMConfig

PUBLISHED = Path(__file__).parent / "data" / "nemotron-super-49b-config.json"
# (KV heads, FFN width) per layer, counted by hand from the file: 49 GQA layers with 8 KV heads, 31 without
# attention; widths from ffn_mult at hidden 8192 (5.25 -> 28672, 3.28125 -> 17920, 2.625 -> 14336,
# 1.3125 -> 7168, 1.0 -> 5632, 0.5 -> 2816).
LAYERS = Counter({(8, 28672): 48, (8, 14336): 1, (0, 28672): 1, (0, 17920): 1, (0, 14336): 5, (0, 7168): 10,
                  (0, 5632): 8, (0, 2816): 6})


def published() -> dict:
    return json.loads(PUBLISHED.read_text())


def test_the_fixture_is_the_published_shape():
    cfg = published()
    assert cfg["num_key_value_heads"] is None and cfg["intermediate_size"] is None
    assert all("ffn_mult" in b["ffn"] and "intermediate_size" not in b["ffn"] for b in cfg["block_configs"])
    assert len(cfg["block_configs"]) == cfg["num_hidden_layers"] == 80


def test_decilm_config_reads_80_heterogeneous_layers(tmp_path):
    (tmp_path / "config.json").write_text(PUBLISHED.read_text())
    config = AutoConfig.from_pretrained(tmp_path)  # `import puzzle` registered nemotron-nas
    assert type(config) is DeciLMConfig
    shapes = Counter((config.num_key_value_heads_of(i), config.intermediate_size_of(i)) for i in range(80))
    assert shapes == LAYERS
    assert config.block_configs[6].attention.no_op and config.block_configs[0].ffn.ffn_mult == 2.625
    assert config.to_dict()["block_configs"] == published()["block_configs"]  # every published field back
    config.save_pretrained(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())
    changed = {k for k in published().keys() | saved.keys() if published().get(k) != saved.get(k)}
    # transformers drops _name_or_path and stamps its version; we write head_dim and dtype beside torch_dtype
    assert changed == {"_name_or_path", "transformers_version", "head_dim", "dtype"}
    assert saved["head_dim"] == 128 and saved["dtype"] == saved["torch_dtype"] == "bfloat16"


def test_parent_shape_reads_each_layer():
    shape = blocks.ParentShape.from_config(published())
    assert (shape.num_key_value_heads, shape.intermediate_size) == (8, 28672)  # the reference block: the widest
    assert Counter((b.attention.num_key_value_heads(64), b.ffn.width(8192)) for b in shape.blocks()) == LAYERS
    # The search's block_configs for variants of this parent land on the published widths.
    assert [blocks.ffn_config(f"ffn_{p}", shape).ffn_mult for p in (50, 25)] == [2.625, 1.3125]
    assert (
        blocks.ffn_config("ffn_20", shape).width(8192) == 5632
        and blocks.ffn_config("ffn_10", shape).width(8192) == 2816
    )
    assert blocks.attention_config("attn_kv8", shape).n_heads_in_group == 8


def test_cost_model_sums_the_layers_it_has():
    arch = cost_model.Arch.from_config(published())
    assert len(arch.layers) == 80 and arch.head_dim == 128
    params, kv = cost_model.memory_needed(
        arch, batch=1, input_len=1, output_len=0, place=cost_model.Placement("bfloat16", 1)
    )
    h, vocab = 8192, 128256
    attention = 2 * h * h + 2 * h * 8 * 128 + h  # q, o; k, v at 8 KV heads; input norm
    by_width = sum(n * (3 * h * width + h) for (_, width), n in LAYERS.items())
    assert params == 2 * (2 * vocab * h + h + 49 * attention + by_width)
    assert params // 2 == 49_867_145_216  # the model card's 49.9B
    assert kv == 49 * 2 * 8 * 128 * 2  # K and V of 8 heads of 128 in bf16, in the 49 layers with attention
