"""A tiny random Llama parent, a valid shard and a block library built here (no dependency on the
bld stage): parent copies, K/V-pooled attention, channel-pruned FFN copies, random linear
replacements and empty no-op files. Used by tests/test_scoring.py and benchmarks/bench_scoring.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

SPACE = {
    "attention": {"kv_heads": [1], "linear": True, "no_op": True},
    "ffn": {"ratios": [0.5], "multiple_of": 8, "linear": True, "no_op": True},
}


def make_parent(
    out: Path, layers: int = 3, hidden: int = 32, heads: int = 4, kv: int = 2, inter: int = 64,
    vocab: int = 96, seed: int = 0,
) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=512,
        tie_word_embeddings=True, rms_norm_eps=1e-5,
    )
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # larger weights than the 0.02 init: blocks then matter and KLs spread
        for name, p in model.named_parameters():
            if p.dim() == 2 and "embed" not in name:
                p.normal_(0, 1.5 / p.shape[1] ** 0.5)
    model.save_pretrained(out)
    return out


def make_shard(data_dir: Path, corpus: str, n_tokens: int, vocab: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    d = data_dir / corpus
    d.mkdir(parents=True, exist_ok=True)
    # A little structure (runs of repeated tokens) so a trained-like parent is not needed for nonzero KL.
    tokens = rng.integers(4, vocab, size=n_tokens).astype(np.uint16)
    tokens[1::3] = tokens[0::3][: len(tokens[1::3])]
    tokens.tofile(d / "valid.bin")
    (d / "meta.json").write_text(json.dumps({"dtype": "uint16", "vocab_size": vocab}))
    return d / "valid.bin"


def make_library(parent_dir: Path, library_dir: Path, space: dict = SPACE, seed: int = 1) -> Path:
    """Decoupled library of `space` for every layer of the parent: parent copies, K/V heads
    mean-pooled, FFN channels kept in order (the first ones), random linear maps, empty no-ops."""
    from safetensors.torch import save_file
    from transformers import LlamaForCausalLM

    from puzzle import blocks

    model = LlamaForCausalLM.from_pretrained(parent_dir)
    c = model.config
    shape = blocks.ParentShape.from_config(c.to_dict())
    attns, ffns = blocks.search_space(shape, space)
    hd, kv, h = c.hidden_size // c.num_attention_heads, c.num_key_value_heads, c.hidden_size
    g = torch.Generator().manual_seed(seed)
    for i, layer in enumerate(model.model.layers):
        d = library_dir / f"layer_{i}"
        d.mkdir(parents=True, exist_ok=True)
        sd = {k: v.detach().clone() for k, v in layer.state_dict().items()}
        attn = {k: v for k, v in sd.items() if k.startswith(("input_layernorm.", "self_attn."))}
        ffn = {k: v for k, v in sd.items() if k.startswith(("post_attention_layernorm.", "mlp."))}
        for a in attns:
            if a == blocks.ATTN_NOOP:
                t = {}
            elif a == blocks.ATTN_LINEAR:
                t = {"input_layernorm.weight": attn["input_layernorm.weight"],
                     "self_attn.linear_attn.weight": torch.randn(h, h, generator=g) * 0.3 / h**0.5}
            else:
                n = blocks.kv_heads_of(a)
                t = dict(attn)
                for name in ("k_proj", "v_proj"):
                    w = attn[f"self_attn.{name}.weight"].view(n, kv // n, hd, -1)
                    t[f"self_attn.{name}.weight"] = w.mean(1).reshape(n * hd, -1).contiguous()
            save_file(t, str(d / f"{a}.safetensors"))
        for f in ffns:
            if f == blocks.FFN_NOOP:
                t = {}
            elif f == blocks.FFN_LINEAR:
                t = {"post_attention_layernorm.weight": ffn["post_attention_layernorm.weight"],
                     "mlp.linear_mlp.weight": torch.randn(h, h, generator=g) * 0.3 / h**0.5}
            else:
                w = blocks.ffn_width(blocks.ffn_pct_of(f), shape, space["ffn"]["multiple_of"])
                t = {"post_attention_layernorm.weight": ffn["post_attention_layernorm.weight"],
                     "mlp.gate_proj.weight": ffn["mlp.gate_proj.weight"][:w].contiguous(),
                     "mlp.up_proj.weight": ffn["mlp.up_proj.weight"][:w].contiguous(),
                     "mlp.down_proj.weight": ffn["mlp.down_proj.weight"][:, :w].contiguous()}
            save_file(t, str(d / f"{f}.safetensors"))
    return library_dir


def scoring_cfg(**scoring: object) -> dict:
    from puzzle import config

    return config.validate(
        {"threads": 1, "device": "cpu", "search_space": SPACE,
         "scoring": {"valid_windows": 6, "seq_len": 32, "batch_size": 4, **scoring}}
    )
