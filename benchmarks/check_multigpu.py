"""Device check: scoring and BLD's online teacher on a parent dispatched over devices equal the parent on one.

    python benchmarks/check_multigpu.py [--out DIR]

A random fp32 Llama (8 layers) is saved, then loaded whole on the first device and split: over every visible GPU
(two or more), over the GPU and CPU offload (one GPU), or over CPU and disk offload (no GPU). Every layer's
replace-1-block scores (the parent's own subblocks and no-ops) and the teacher's x and h of every layer are
compared exactly (torch.equal / equal floats); the maximum difference is printed. Exits 1 on any difference.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from puzzle import blocks, scoring
from puzzle.bld_teacher import OnlineInputs
from puzzle.data import write_shard
from puzzle.io import write_json

LAYERS, SEQ, WINDOWS = 8, 64, 8


def split_budget(model: torch.nn.Module) -> tuple[dict[int | str, int], str]:
    """max_memory that splits `model` (about three layers per device), and what it splits over."""
    layer = sum(p.numel() * 4 for p in model.model.layers[0].parameters())
    head = model.model.embed_tokens.weight.numel() * 4
    first = head + 3 * layer
    gpus = torch.cuda.device_count()
    if gpus >= 2:
        return {**{i: first for i in range(gpus - 1)}, gpus - 1: 10**12}, f"{gpus} GPUs"
    if gpus == 1:
        return {0: first, "cpu": 10**12}, "GPU + CPU offload"
    return {"cpu": first, "disk": 10**12}, "CPU + disk offload"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=None, help="scratch folder (default: a temporary one)")
    root = Path(parser.parse_args().out or tempfile.mkdtemp())
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=4096, hidden_size=256, intermediate_size=512, num_hidden_layers=LAYERS,
                      num_attention_heads=8, num_key_value_heads=4, tie_word_embeddings=False)
    LlamaForCausalLM(cfg).save_pretrained(root / "parent")
    tokens = np.random.default_rng(0).integers(0, 4096, size=WINDOWS * SEQ * 2).astype(np.uint16)
    write_shard(root / "train.bin", tokens)
    write_json(root / "meta.json", {"dtype": "uint16", "vocab_size": 4096})
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")

    whole = scoring.load_parent(root / "parent", device, torch.float32)
    budget, over = split_budget(whole)
    split = scoring.load_parent(root / "parent", device, torch.float32, max_memory=budget,
                                offload_folder=root / "offload")
    print(f"split over {over}: {sorted(set(map(str, split.hf_device_map.values())))}", flush=True)
    attn, ffn = scoring.own_composition(whole, 0, ["ffn_100"], 256)
    variants = ([attn, blocks.ATTN_NOOP], [ffn, blocks.FFN_NOOP])
    windows = torch.from_numpy(tokens[: WINDOWS * SEQ].astype(np.int64)).view(WINDOWS, SEQ)
    rows = []
    for model in (whole, split):
        cands = [scoring.layer_candidates(model, i, *variants, None, 256) for i in range(LAYERS)]
        rows.append(scoring.score_layers(model, windows, cands, 4, 2, log=lambda m: None))
    diff = max(abs(a[k] - b[k]) for a, b in zip(*rows, strict=True) for k in ("kl", "lm_loss", "token_acc"))
    ok = rows[0] == rows[1]
    print(f"scoring: {len(rows[0])} rows, {'equal' if ok else 'DIFFER'}, max difference {diff:.3g}", flush=True)

    teachers = [OnlineInputs(root / "parent", root / "train.bin", list(range(LAYERS)), WINDOWS, SEQ, device,
                             torch.float32, **placement)
                for placement in ({}, {"max_memory": budget, "offload_folder": root / "offload_bld"})]
    got = [t(list(range(WINDOWS))) for t in teachers]
    same = all(torch.equal(got[0][i][n], got[1][i][n]) and got[1][i][n].device == device
               for i in range(LAYERS) for n in ("x", "h"))
    worst = max(float((got[0][i][n] - got[1][i][n]).abs().max()) for i in range(LAYERS) for n in ("x", "h"))
    print(f"bld teacher: {'equal' if same else 'DIFFER'} on {device}, max difference {worst:.3g}", flush=True)
    return 0 if ok and same else 1


if __name__ == "__main__":
    sys.exit(main())
