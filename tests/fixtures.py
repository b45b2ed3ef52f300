"""The tests' one set of fixtures: a tiny random Llama parent (`make_parent`), token shards written by
`puzzle.data.write_shard` (`write_shards`), a block library built here without the bld stage
(`make_library`), the parent's activations (`tiny_setup`), search solutions and assembled children
(`make_child`), and small validated configs of the stages that read them.

Two parents are in use, both from `make_parent`: the default (3 layers, FFN 64, vocabulary 96, weights
scaled so every block matters) for scoring, costs, assembly, GKD and evaluation, and BLD_PARENT
(2 layers, FFN 48, vocabulary 64, norms away from 1) for the library, BLD and compress tests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from puzzle import activations, assemble, blocks, config, library
from puzzle.data import write_shard
from puzzle.io import write_json

VOCAB = 96
SPACE = {
    "attention": {"kv_heads": [1], "linear": True, "no_op": True},
    "ffn": {"ratios": [0.5], "multiple_of": 8, "linear": True, "no_op": True},
}
PARENT_BLOCK = ("attn_kv2", "ffn_100")
SCENARIO = {"name": "chat", "batch": 2, "input_len": 6, "output_len": 5}


# ---- parent and shards -----------------------------------------------------------------------------


def make_parent(
    out: Path,
    layers: int = 3,
    hidden: int = 32,
    heads: int = 4,
    kv: int = 2,
    inter: int = 64,
    vocab: int = VOCAB,
    seed: int = 0,
    *,
    max_positions: int = 512,
    init_range: float = 0.02,
    gain: float | None = 1.5,
    norms: tuple[float, float] | None = None,
    embed_scale: float = 1.0,
) -> Path:
    """A random Llama saved to `out` (tied embeddings). `gain`: every matrix but the embedding drawn
    from N(0, gain / sqrt(fan_in)), larger than the init so that blocks matter and KLs spread (None:
    keep the `init_range` init); `norms`: norm weights drawn uniformly from that range, away from 1 so
    copying them is checked; `embed_scale` multiplies the embedding (peaked next-token distributions)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        max_position_embeddings=max_positions,
        initializer_range=init_range,
        tie_word_embeddings=True,
        rms_norm_eps=1e-5,
    )
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        if gain is not None:
            for name, p in model.named_parameters():
                if p.dim() == 2 and "embed" not in name:
                    p.normal_(0, gain / p.shape[1] ** 0.5)
        if norms is not None:
            for name, p in model.named_parameters():
                if "norm" in name:
                    p.uniform_(*norms)
        model.model.embed_tokens.weight.mul_(embed_scale)
    model.save_pretrained(out)
    return out


# the library, BLD and compress tests' parent and shards
BLD_PARENT: dict[str, Any] = {
    "layers": 2,
    "inter": 48,
    "vocab": 64,
    "max_positions": 64,
    "init_range": 0.2,
    "gain": None,
    "norms": (0.5, 1.5),
}
BLD_SHARDS: dict[str, Any] = {"splits": ("train", "valid"), "tokens": 2000, "vocab": 64, "low": 0, "repeats": False}


def write_shards(
    data_dir: Path,
    splits: tuple[str, ...] = ("train", "valid", "test"),
    tokens: int = 6000,
    vocab: int = VOCAB,
    seed: int = 0,
    low: int = 4,
    repeats: bool = True,
) -> Path:
    """`data_dir`/<split>.bin of uniform tokens in [low, vocab), one generator across the splits, and
    meta.json. `repeats`: every third token repeats the one before, a little structure so that an
    untrained parent still gives blocks nonzero KL."""
    data_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split in splits:
        t = rng.integers(low, vocab, size=tokens).astype(np.uint16)
        if repeats:
            t[1::3] = t[0::3][: len(t[1::3])]
        write_shard(data_dir / f"{split}.bin", t)
    write_json(data_dir / "meta.json", {"dtype": "uint16", "vocab_size": vocab})
    return data_dir


# ---- conversion and loading: any Llama-family class -----------------------------------------------

# a tiny shape every family accepts (Llama, Mistral, Qwen2), for the conversion and checkpoint tests
TINY = dict(
    vocab_size=256,
    hidden_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=172,
    max_position_embeddings=128,
    rms_norm_eps=1e-5,
)


def random_model(cls: type[torch.nn.Module], config: Any) -> torch.nn.Module:
    """`cls(config)` with random weights everywhere (norms and biases included), so a dropped or
    misnamed tensor shows."""
    torch.manual_seed(0)
    model = cls(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model


# ---- block library ---------------------------------------------------------------------------------


def make_library(parent_dir: Path, library_dir: Path, space: dict = SPACE, seed: int = 1) -> Path:
    """Decoupled library of `space` for every layer of the parent: parent copies, K/V heads
    mean-pooled, FFN channels kept in order (the first ones), random linear maps, empty no-ops;
    each file with the JSON record (size, sha256) that readers check."""
    from safetensors.torch import save_file
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(parent_dir)
    c = model.config
    shape = blocks.ParentShape.from_config(c.to_dict())
    attns, ffns = blocks.search_space(shape, space)
    hd, kv, h = c.hidden_size // c.num_attention_heads, c.num_key_value_heads, c.hidden_size
    g = torch.Generator().manual_seed(seed)

    def linear(norm: str, weight: str, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {norm: sd[norm], weight: torch.randn(h, h, generator=g) * 0.3 / h**0.5}

    def attention(a: str, parent: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if a == blocks.ATTN_NOOP:
            return {}
        if a == blocks.ATTN_LINEAR:
            return linear("input_layernorm.weight", "self_attn.linear_attn.weight", parent)
        n = blocks.kv_heads_of(a)
        t = dict(parent)
        for name in ("k_proj", "v_proj"):
            w = parent[f"self_attn.{name}.weight"].view(n, kv // n, hd, -1)
            t[f"self_attn.{name}.weight"] = w.mean(1).reshape(n * hd, -1).contiguous()
        return t

    def ffn(f: str, parent: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if f == blocks.FFN_NOOP:
            return {}
        if f == blocks.FFN_LINEAR:
            return linear("post_attention_layernorm.weight", "mlp.linear_mlp.weight", parent)
        w = blocks.ffn_width(blocks.ffn_pct_of(f), shape, space["ffn"]["multiple_of"])
        return {
            "post_attention_layernorm.weight": parent["post_attention_layernorm.weight"],
            "mlp.gate_proj.weight": parent["mlp.gate_proj.weight"][:w].contiguous(),
            "mlp.up_proj.weight": parent["mlp.up_proj.weight"][:w].contiguous(),
            "mlp.down_proj.weight": parent["mlp.down_proj.weight"][:, :w].contiguous(),
        }

    for i, layer in enumerate(model.model.layers):
        d = library_dir / f"layer_{i}"
        d.mkdir(parents=True, exist_ok=True)
        sd = {k: v.detach().clone() for k, v in layer.state_dict().items()}
        attn = {k: v for k, v in sd.items() if k.startswith(("input_layernorm.", "self_attn."))}
        mlp = {k: v for k, v in sd.items() if k.startswith(("post_attention_layernorm.", "mlp."))}
        for a in attns:  # attention first, then FFN: the order the generator is drawn in
            save_file(attention(a, attn), str(d / f"{a}.safetensors"))
            library.write_entry_json(d / f"{a}.safetensors", {})
        for f in ffns:
            save_file(ffn(f, mlp), str(d / f"{f}.safetensors"))
            library.write_entry_json(d / f"{f}.safetensors", {})
    return library_dir


def tiny_setup(root: Path) -> dict:
    """BLD_PARENT, its shards and train/valid activations under `root`; returns their paths and the model."""
    from transformers import LlamaForCausalLM

    cfg = bld_cfg()
    parent = make_parent(root / "parent", **BLD_PARENT)
    shards = write_shards(root / "data", **BLD_SHARDS)
    acts = {s: root / "activations" / s for s in ("train", "valid")}
    for split, out in acts.items():
        activations.run(cfg, str(parent), str(shards / f"{split}.bin"), split, str(out))
    model = LlamaForCausalLM.from_pretrained(parent).eval()
    return {"cfg": cfg, "parent": parent, "model": model, "shards": shards, **acts}


# ---- children --------------------------------------------------------------------------------------


def parent_and_library(root: Path) -> tuple[Path, Path]:
    """The parent (embeddings 8x, with a tokenizer file to carry over) and its decoupled library under `root`."""
    parent = make_parent(root / "parent", embed_scale=8)
    (parent / "tokenizer.json").write_text('{"tiny": "tokenizer"}')
    return parent, make_library(parent, root / "library")


def write_solution(path: Path, parent_dir: Path, layers: list[tuple[str, str]]) -> Path:
    """A solution.json in the search's format (the fields assembly and evaluation read)."""
    shape = blocks.ParentShape.from_config(json.loads((parent_dir / "config.json").read_text()))
    mult = SPACE["ffn"]["multiple_of"]
    write_json(
        path,
        {
            "layers": [{"attention": a, "ffn": f} for a, f in layers],
            "block_configs": [blocks.block_config(a, f, shape, mult).to_dict() for a, f in layers],
            "metric": "kl",
            "objective": 0.0,
            "scenario": SCENARIO,
        },
    )
    return path


def make_child(root: Path, parent: Path, library: Path, layers: list[tuple[str, str]], name: str = "child") -> Path:
    solution = write_solution(root / f"{name}.solution.json", parent, layers)
    out = root / name
    assemble.assemble(solution, library, parent, out, "decoupled")
    return out


# ---- configs ---------------------------------------------------------------------------------------


def scoring_cfg(**scoring: object) -> dict:
    return config.validate(
        {
            "threads": 1,
            "device": "cpu",
            "search_space": SPACE,
            "scoring": {"valid_windows": 6, "seq_len": 32, "batch_size": 4, **scoring},
        }
    )


def bld_cfg(**bld: object) -> dict:
    return config.validate(
        {
            "threads": 1,  # tiny matmuls: a second thread only adds synchronization
            "device": "cpu",
            "activations": {
                "train_windows": 24,
                "valid_windows": 8,
                "seq_len": 16,
                "batch_size": 8,
                "chunk_windows": 10,
                "dtype": "fp16",
            },
            "bld": {
                "tokens": 8 * 16 * 12,
                "batch_size": 8,
                "lr": 3e-3,
                "eval_every": 4,
                "checkpoint_every": 4,
                "init_windows": 24,
                **bld,
            },
            "search_space": {"attention": {"kv_heads": [1]}, "ffn": {"ratios": [0.5], "multiple_of": 8}},
        }
    )


def child_cfg(**sections: dict) -> dict:
    """A validated config for the child stages: one thread, CPU, tiny GKD and evaluation."""
    base = {
        "threads": 1,
        "device": "cpu",
        "gkd": {
            "steps": 12,
            "batch_size": 4,
            "seq_len": 16,
            "lr": 1e-2,
            "warmup_steps": 2,
            "eval_every": 4,
            "eval_windows": 8,
            "checkpoint_every": 4,
        },
        "evaluate": {"test_windows": 8, "seq_len": 16, "batch_size": 4, "repeats": 2, "warmup": 0},
    }
    return config.validate(config.deep_merge(base, sections))
