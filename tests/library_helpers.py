"""A tiny random Llama parent, token shards and its activations, for the library and BLD tests."""

import json
from pathlib import Path

import numpy as np
import torch

from puzzle import activations, config

VOCAB = 64


def tiny_config(**bld: object) -> dict:
    return config.validate(
        {
            "threads": 1,  # tiny matmuls: a second thread only adds synchronization
            "device": "cpu",
            "activations": {
                "train_windows": 24, "valid_windows": 8, "seq_len": 16, "batch_size": 8, "chunk_windows": 10,
                "dtype": "fp16",
            },
            "bld": {"tokens": 8 * 16 * 12, "batch_size": 8, "lr": 3e-3, "eval_every": 4, "checkpoint_every": 4,
                    "init_windows": 24, **bld},
            "search_space": {"attention": {"kv_heads": [1]}, "ffn": {"ratios": [0.5], "multiple_of": 8}},
        }
    )


def tiny_parent(path: Path) -> torch.nn.Module:
    """2 layers, hidden 32, 4 heads over 2 KV heads, FFN 48; weights large enough that every
    subblock matters, norms away from 1 so copying them is checked."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, initializer_range=0.2, tie_word_embeddings=True,
        rms_norm_eps=1e-5,
    )
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    model.save_pretrained(path)
    return model


def tiny_shards(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split in ("train", "valid"):
        rng.integers(0, VOCAB, size=2000).astype(np.uint16).tofile(path / f"{split}.bin")
    (path / "meta.json").write_text(json.dumps({"dtype": "uint16"}))
    return path


def tiny_setup(root: Path) -> dict:
    """Parent, shards and train/valid activations under `root`; returns their paths and the model."""
    cfg = tiny_config()
    parent = root / "parent"
    model = tiny_parent(parent)
    shards = tiny_shards(root / "data")
    acts = {s: root / "activations" / s for s in ("train", "valid")}
    for split, out in acts.items():
        activations.run(cfg, str(parent), str(shards / f"{split}.bin"), split, str(out))
    return {"cfg": cfg, "parent": parent, "model": model, "shards": shards, **acts}
