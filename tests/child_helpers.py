"""A tiny parent, its block library, token shards and search solutions, for the assemble, GKD and
evaluate tests (the parent and library come from tests/tiny_library.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from transformers import LlamaForCausalLM

from puzzle import assemble, blocks, config
from puzzle.io import write_json
from tiny_library import SPACE, make_library, make_parent

VOCAB = 96
PARENT_BLOCK = ("attn_kv2", "ffn_100")
SCENARIO = {"name": "chat", "batch": 2, "input_len": 6, "output_len": 5}


def parent_and_library(root: Path) -> tuple[Path, Path]:
    """The parent (with a tokenizer file to carry over) and its decoupled library under `root`."""
    parent = make_parent(root / "parent", vocab=VOCAB)
    model = LlamaForCausalLM.from_pretrained(parent)
    with torch.no_grad():  # embeddings 8x the 0.02 init: peaked next-token distributions, so KL means something
        model.model.embed_tokens.weight.mul_(8)
    model.save_pretrained(parent)
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


def write_shards(data_dir: Path, tokens: int = 6000, seed: int = 0) -> Path:
    """train/valid/test shards with a little structure (every third token repeats the one before)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split in ("train", "valid", "test"):
        t = rng.integers(4, VOCAB, size=tokens).astype(np.uint16)
        t[1::3] = t[0::3][: len(t[1::3])]
        t.tofile(data_dir / f"{split}.bin")
    (data_dir / "meta.json").write_text(json.dumps({"dtype": "uint16", "vocab_size": VOCAB}))
    return data_dir


def cfg(**sections: dict) -> dict:
    """A validated config for the child stages: one thread, CPU, tiny GKD and evaluation."""
    base = {
        "threads": 1,
        "device": "cpu",
        "gkd": {"steps": 12, "batch_size": 4, "seq_len": 16, "lr": 1e-2, "warmup_steps": 2, "eval_every": 4,
                "eval_windows": 8, "checkpoint_every": 4},
        "evaluate": {"test_windows": 8, "seq_len": 16, "batch_size": 4, "repeats": 2, "warmup": 0},
    }
    return config.validate(config.deep_merge(base, sections))
