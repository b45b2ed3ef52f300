"""Compress stage: the paper's Table 18 baselines, the parent compressed without architecture search.

    python -m puzzle compress --method wanda --parent PARENT --train train.bin --out WANDA \\
        [--windows 32] [--seq-len 256] [--batch-size 8] [--cfg JSON | --config FILE]
    python -m puzzle compress --method low_rank --parent PARENT --keep 0.5 --out LOWRANK

Both touch every nn.Linear inside the decoder layers (q/k/v/o and gate/up/down for a Llama; also
the linear replacements of a Nemotron-NAS child), never the embeddings, final norm or LM head.

wanda     Wanda (Sun et al. 2023) with the 2:4 semi-structured pattern, no training: a weight's score
          is |W_ij| * ||X_j||_2, X_j input feature j over the calibration tokens (`--windows` seeded
          random windows of `--seq-len` tokens of the train shard); in every group of 4 consecutive
          inputs of each output row the 2 lowest-scoring weights are zeroed. As in the authors' code,
          layers are pruned in order and layer i's inputs come from the already pruned layers < i.
low_rank  each weight W (out x in) becomes its best rank-r approximation (truncated SVD) with
          r = max(1, floor(keep * out * in / (out + in))): the factors U (out x r) and V (r x in) hold
          at most `keep` of W's parameters. The dense product U @ V is stored in W's shape (the same
          function as the factorized layers), so the output stays a standard checkpoint.

The output folder is a checkpoint in the parent's format and dtype (safetensors, the parent's
tokenizer files) that `puzzle.evaluate` loads as it is, with `compress.json`: method, settings,
parameter counts (nonzero for wanda, factorized for low_rank; `fraction` = that / the parent's) and
per-matrix details.
"""

from __future__ import annotations

import argparse
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from puzzle import checkpoint
from puzzle import config as config_mod
from puzzle.convert import tokenizer_files
from puzzle.data import read_shard
from puzzle.io import atomic_dir, write_json
from puzzle.training import pick_device, sample_windows

METHODS = ("wanda", "low_rank")


# ---- the per-matrix math -------------------------------------------------------------------------


def prune_2_4(weight: torch.Tensor, input_norm: torch.Tensor) -> torch.Tensor:
    """`weight` (out x in) with the 2 lowest |W_ij| * input_norm_j of every group of 4 consecutive inputs
    of each row set to 0."""
    out_f, in_f = weight.shape
    if in_f % 4:
        raise ValueError(f"2:4 pruning needs a multiple of 4 input features, got {in_f}")
    scores = (weight.abs().float() * input_norm.float()).reshape(out_f, in_f // 4, 4)
    # stable sort: ties are broken by position, so the result never depends on the kernel
    drop = scores.argsort(dim=-1, stable=True)[..., :2]
    keep = torch.ones_like(scores, dtype=torch.bool).scatter_(-1, drop, False)
    return weight * keep.reshape(out_f, in_f).to(weight.dtype)


def low_rank_rank(out_f: int, in_f: int, keep: float) -> int:
    """The rank whose factors U (out x r) + V (r x in) hold at most `keep` of out * in parameters."""
    return max(1, math.floor(keep * out_f * in_f / (out_f + in_f)))


def truncated_svd(weight: torch.Tensor, rank: int) -> torch.Tensor:
    """The best rank-`rank` approximation of `weight` (Frobenius and spectral norm), in its dtype."""
    u, s, vh = torch.linalg.svd(weight.float(), full_matrices=False)
    return ((u[:, :rank] * s[:rank]) @ vh[:rank]).to(weight.dtype)


# ---- the model -----------------------------------------------------------------------------------


def block_linears(module: nn.Module, prefix: str = "model.layers") -> dict[str, nn.Linear]:
    """Every nn.Linear inside `module` (the decoder layers, or one of them), by its full parameter-name prefix."""
    return {f"{prefix}.{name}": m for name, m in module.named_modules() if isinstance(m, nn.Linear)}


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # tied embeddings count once


def nonzero_count(model: nn.Module) -> int:
    return sum(int(torch.count_nonzero(p)) for p in model.parameters())


class _Stop(Exception):
    """Ends a forward pass once the first decoder layer's inputs are caught."""


def _layer_output(out: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


@torch.no_grad()
def first_layer_inputs(
    model: checkpoint.CausalLM, windows: torch.Tensor, batch: int
) -> list[tuple[torch.Tensor, dict[str, Any]]]:
    """(hidden states, keyword arguments) with which each batch of `windows` enters decoder layer 0;
    every later layer gets the same keywords (mask, rotary embeddings), so layers can be replayed alone."""
    device = checkpoint.input_device(model)
    caught: list[tuple[torch.Tensor, dict[str, Any]]] = []

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        kwargs = dict(kwargs)
        hidden = args[0] if args else kwargs.pop("hidden_states")
        caught.append((hidden, kwargs))
        raise _Stop

    handle = model.model.layers[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for b in range(0, len(windows), batch):
            try:
                model.model(input_ids=windows[b : b + batch].to(device), use_cache=False)
            except _Stop:
                pass
    finally:
        handle.remove()
    return caught


@torch.no_grad()
def wanda(model: checkpoint.CausalLM, windows: torch.Tensor, batch: int) -> dict[str, Any]:
    """2:4-prune `model` in place with Wanda scores on `windows`; returns per-matrix counts."""
    states = first_layer_inputs(model, windows, batch)
    matrices: dict[str, dict[str, int]] = {}
    for i, layer in enumerate(tqdm(model.model.layers, desc="wanda", unit="layer", mininterval=2)):
        linears = block_linears(layer, f"model.layers.{i}")
        sq = {n: torch.zeros(m.in_features, dtype=torch.float32, device=m.weight.device) for n, m in linears.items()}

        def accumulate(sums: dict[str, torch.Tensor], name: str) -> Callable[[nn.Linear, tuple], None]:
            def hook(module: nn.Linear, args: tuple) -> None:
                x = args[0].float()
                sums[name] += x.pow(2).reshape(-1, x.shape[-1]).sum(0)

            return hook

        handles = [m.register_forward_pre_hook(accumulate(sq, n)) for n, m in linears.items()]
        try:
            for hidden, kwargs in states:
                layer(hidden, **kwargs)
        finally:
            for h in handles:
                h.remove()
        for name, m in linears.items():
            m.weight.copy_(prune_2_4(m.weight, sq[name].sqrt()))
            matrices[name] = {"parameters": m.weight.numel(), "nonzero": int(torch.count_nonzero(m.weight))}
        # the next layer sees this layer's pruned outputs
        states = [(_layer_output(layer(hidden, **kwargs)), kwargs) for hidden, kwargs in states]
    return matrices


@torch.no_grad()
def low_rank(model: checkpoint.CausalLM, keep: float) -> dict[str, Any]:
    """Replace every decoder-layer weight of `model` in place by its truncated SVD; per-matrix ranks."""
    if not 0 < keep <= 1:
        raise ValueError(f"keep = {keep}: expected a fraction in (0, 1]")
    matrices: dict[str, dict[str, Any]] = {}
    for name, m in tqdm(block_linears(model.model.layers).items(), desc="low_rank", unit="matrix", mininterval=2):
        out_f, in_f = m.weight.shape
        rank = low_rank_rank(out_f, in_f, keep)
        m.weight.copy_(truncated_svd(m.weight, rank))
        matrices[name] = {
            "shape": [out_f, in_f], "rank": rank, "parameters": out_f * in_f, "factorized": rank * (out_f + in_f)
        }
    return matrices


# ---- the stage -----------------------------------------------------------------------------------


def load_parent(parent_dir: str | Path, device: torch.device) -> checkpoint.CausalLM:
    """The parent in its stored dtype (the output keeps it), over the job's devices of `device`'s type."""
    return checkpoint.load(parent_dir, device=checkpoint.devices_for(device))


def calibration_windows(shard: str | Path, count: int, seq_len: int, seed: int) -> torch.Tensor:
    tokens = read_shard(shard)
    if len(tokens) <= seq_len:
        raise ValueError(f"{shard}: {len(tokens)} tokens, too few for one window of {seq_len}")
    return sample_windows(tokens, count, seq_len, seed, 0)


def compress(
    cfg: dict[str, Any],
    parent_dir: str | Path,
    method: str,
    out_dir: str | Path,
    *,
    train: str | Path | None = None,
    windows: int = 32,
    seq_len: int = 256,
    batch_size: int = 8,
    keep: float | None = None,
) -> dict[str, Any]:
    """Write the `method`-compressed parent to `out_dir`; returns its record (compress.json)."""
    if method not in METHODS:
        raise ValueError(f"method {method!r}: expected one of {list(METHODS)}")
    torch.set_num_threads(cfg["threads"])
    model = load_parent(parent_dir, pick_device(cfg["device"]))
    parent_params = parameter_count(model)
    record: dict[str, Any] = {"method": method, "parent": str(parent_dir)}
    if method == "wanda":
        if train is None:
            raise ValueError("wanda needs the calibration shard (--train)")
        calib = calibration_windows(train, windows, seq_len, cfg["seed"])
        record["settings"] = {
            "pattern": "2:4", "train": str(train), "windows": len(calib), "seq_len": seq_len,
            "tokens": calib.numel(), "batch_size": batch_size, "seed": cfg["seed"],
        }
        matrices = wanda(model, calib, batch_size)
        kind, kept = "nonzero", nonzero_count(model)
    else:
        if keep is None:
            raise ValueError("low_rank needs the kept parameter fraction (--keep)")
        record["settings"] = {"keep": keep}
        matrices = low_rank(model, keep)
        # the factorized model: every parameter outside the replaced weights, plus their factors
        dense = sum(m["parameters"] for m in matrices.values())
        kind, kept = "factorized", parent_params - dense + sum(m["factorized"] for m in matrices.values())
    record["parameters"] = {"parent": parent_params, "total": parameter_count(model), kind: kept,
                            "fraction": kept / parent_params}
    record["matrices"] = matrices
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)  # safetensors (the transformers default; never pickle)
        for path in tokenizer_files(parent_dir):
            shutil.copy2(path, tmp / path.name)
        write_json(tmp / "compress.json", record)
    return record


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config_mod.add_arguments(parser)
    parser.add_argument("--method", required=True, choices=METHODS, help="wanda (2:4, no training) or low_rank (SVD)")
    parser.add_argument("--parent", required=True, help="parent HF checkpoint folder (safetensors)")
    parser.add_argument("--out", required=True, help="output checkpoint folder (with compress.json)")
    parser.add_argument("--train", help="wanda: train token shard (train.bin) for the calibration windows")
    parser.add_argument(
        "--windows", type=int, default=32, help="wanda: calibration windows (seeded by the config's seed)"
    )
    parser.add_argument("--seq-len", type=int, default=256, help="wanda: tokens per calibration window")
    parser.add_argument("--batch-size", type=int, default=8, help="wanda: windows per forward pass")
    parser.add_argument("--keep", type=float, help="low_rank: fraction of each matrix's parameters its factors keep")


def main(args: argparse.Namespace) -> None:
    if args.method == "wanda" and not args.train:
        raise config_mod.ConfigError("config error: compress --method wanda needs --train")
    for flag in ("windows", "seq_len", "batch_size"):
        if getattr(args, flag) < 1:
            raise config_mod.ConfigError(
                f"config error: --{flag.replace('_', '-')} = {getattr(args, flag)}: expected >= 1"
            )
    if args.method == "low_rank" and not (args.keep is not None and 0 < args.keep <= 1):
        raise config_mod.ConfigError(
            f"config error: compress --method low_rank needs --keep in (0, 1], got {args.keep}"
        )
    cfg = config_mod.from_args(args)
    r = compress(
        cfg,
        args.parent,
        args.method,
        args.out,
        train=args.train,
        windows=args.windows,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        keep=args.keep,
    )
    p = r["parameters"]
    kind = "nonzero" if args.method == "wanda" else "factorized"
    print(
        f"{args.out}: {args.method}, {p[kind]:,} {kind} of {p['parent']:,} parent params ({100 * p['fraction']:.1f}%)"
    )
