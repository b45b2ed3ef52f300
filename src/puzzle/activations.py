"""Activations stage: the parent's per-layer activations on calibration windows, for BLD.

One forward pass of the parent over `windows` token windows of one shard (train or valid) with
hooks on every decoder layer stores, per layer i and per chunk of `chunk_windows` windows,

    {out}/layer_{i}/chunk_{c:05d}.safetensors   x: layer input           (windows, seq_len, hidden)
                                                h: x + attn(ln1(x)), the FFN's residual input
                                                y: layer output (= the next layer's x)
    {out}/meta.json                             shapes, dtype, chunks, bytes, time

so BLD of layer i needs no other layer: an attention variant a maps x to h' + ffn(ln2(h'))
with h' = x + a(ln1(x)), an FFN variant f maps h to h + f(ln2(h)), both against the layer
output. (BLD recomputes that output from the stored x or h with the parent's layer in fp32, so
storage rounding never enters its loss; y is the parent's own output at storage precision.)
Chunks bound memory and file size for large models (one chunk of every layer is held in memory
at a time) and make the stage resumable: finished chunks are kept in a hidden work folder and
skipped on a rerun; the output folder appears, complete, at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.hooks import RemovableHandle
from tqdm import tqdm

from puzzle import checkpoint
from puzzle import config as config_mod
from puzzle.bld_plan import seq_len
from puzzle.data import read_shard
from puzzle.io import read_json, save_safetensors, write_json
from puzzle.training import fixed_windows, pick_device

TENSORS = ("x", "h", "y")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def chunk_path(split_dir: str | os.PathLike, layer: int, chunk: int) -> Path:
    return Path(split_dir) / f"layer_{layer}" / f"chunk_{chunk:05d}.safetensors"


def capture(layers: Sequence[torch.nn.Module]) -> tuple[list[dict[str, torch.Tensor]], list[RemovableHandle]]:
    """Hooks that store each layer's input x, FFN residual input h and output y of the last forward."""
    store: list[dict[str, torch.Tensor]] = [{} for _ in layers]
    handles = []

    def keep(i: int, name: str, from_output: bool = False) -> Callable[..., None]:
        def hook(module: torch.nn.Module, args: tuple, kwargs: dict, *output: Any) -> None:
            if from_output:
                value = output[0][0] if isinstance(output[0], tuple) else output[0]
            else:
                value = args[0] if args else kwargs["hidden_states"]
            store[i][name] = value.detach()

        return hook

    for i, layer in enumerate(layers):
        handles.append(layer.register_forward_pre_hook(keep(i, "x"), with_kwargs=True))
        handles.append(layer.post_attention_layernorm.register_forward_pre_hook(keep(i, "h"), with_kwargs=True))
        handles.append(layer.register_forward_hook(keep(i, "y", from_output=True), with_kwargs=True))
    return store, handles


def load_parent(parent_dir: str | os.PathLike, device: torch.device) -> checkpoint.CausalLM:
    """The parent in its stored dtype, over the job's devices of `device`'s type."""
    return checkpoint.load(parent_dir, device=checkpoint.devices_for(device))


@torch.no_grad()
def dump(
    model: checkpoint.CausalLM,
    windows: torch.Tensor,
    out_dir: str | os.PathLike,
    act_cfg: dict[str, Any],
    desc: str = "activations",
) -> dict[str, Any]:
    """Run `model` over `windows` and write every layer's chunks into `out_dir`, skipping chunks
    already there; returns the folder's meta."""
    out, t0 = Path(out_dir), time.perf_counter()
    layers = model.model.layers
    dtype, per_chunk, batch = DTYPES[act_cfg["dtype"]], act_cfg["chunk_windows"], act_cfg["batch_size"]
    device = checkpoint.input_device(model)
    store, handles = capture(layers)
    starts = list(range(0, len(windows), per_chunk))
    try:
        for c, first in enumerate(tqdm(starts, desc=desc, unit="chunk", mininterval=2)):
            if all(chunk_path(out, i, c).exists() for i in range(len(layers))):
                continue  # written by an earlier, interrupted run
            parts: list[dict[str, list[torch.Tensor]]] = [{n: [] for n in TENSORS} for _ in layers]
            for b in range(first, min(first + per_chunk, len(windows)), batch):
                model.model(input_ids=windows[b : min(b + batch, first + per_chunk)].to(device), use_cache=False)
                for i, got in enumerate(store):
                    for n in TENSORS:
                        parts[i][n].append(got[n].to("cpu", dtype))
            for i, part in enumerate(parts):
                tensors = {n: torch.cat(part[n]) for n in TENSORS}
                save_safetensors(chunk_path(out, i, c), tensors, {"layer": str(i), "first_window": str(first)})
    finally:
        for h in handles:
            h.remove()
    n_win, seq, hidden = len(windows), windows.shape[1], model.config.hidden_size
    per_token_layer = len(TENSORS) * hidden * torch.finfo(dtype).bits // 8
    meta = {
        "windows": n_win,
        "seq_len": seq,
        "tokens": n_win * seq,
        "hidden_size": hidden,
        "num_layers": len(layers),
        "dtype": act_cfg["dtype"],
        "tensors": list(TENSORS),
        "chunk_windows": per_chunk,
        "chunks": len(starts),
        "bytes_per_token_per_layer": per_token_layer,
        "bytes_per_layer": per_token_layer * n_win * seq,
        "total_bytes": sum(f.stat().st_size for f in out.glob("layer_*/chunk_*.safetensors")),
        "wall_s": round(time.perf_counter() - t0, 2),
        "device": str(device),
    }
    return meta


def run(cfg: dict[str, Any], parent_dir: str, shard: str, split: str, out_dir: str) -> dict[str, Any]:
    """Dump the parent's activations on `split` windows of `shard` into `out_dir`."""
    act = cfg["activations"]
    torch.set_num_threads(cfg["threads"])
    count = act["train_windows"] if split == "train" else act["valid_windows"]
    windows = fixed_windows(read_shard(shard), count, seq_len(cfg))
    out = Path(out_dir)
    work = out.parent / f".{out.name}.partial"
    # Chunks of an interrupted run are reused only if they were made the same way.
    recipe = {"activations": act, "seq_len": windows.shape[1], "windows": len(windows), "parent": str(parent_dir),
              "shard": str(shard)}
    if work.exists() and (not (work / "recipe.json").exists() or read_json(work / "recipe.json") != recipe):
        shutil.rmtree(work)
    write_json(work / "recipe.json", recipe)
    meta = dump(load_parent(parent_dir, pick_device(cfg["device"])), windows, work, act, desc=f"activations {split}")
    meta.update(split=split, shard=str(shard))
    (work / "recipe.json").unlink()
    write_json(work / "meta.json", meta)
    if out.exists():
        shutil.rmtree(out)
    os.replace(work, out)
    return meta


class LayerActivations:
    """Random access to one layer's stored windows (memory-mapped; a 70B layer need not fit in RAM)."""

    def __init__(self, split_dir: str | os.PathLike, layer: int) -> None:
        from safetensors import safe_open

        self.meta = read_json(Path(split_dir) / "meta.json")
        if not 0 <= layer < self.meta["num_layers"]:
            raise ValueError(f"{split_dir} holds layers 0..{self.meta['num_layers'] - 1}, not layer {layer}")
        self._files = [
            safe_open(str(chunk_path(split_dir, layer, c)), framework="pt") for c in range(self.meta["chunks"])
        ]

    def __len__(self) -> int:
        return int(self.meta["windows"])

    def get(self, names: tuple[str, ...], ids: np.ndarray | list[int]) -> dict[str, torch.Tensor]:
        """The named tensors ('x', 'h', 'y') of windows `ids`, stacked in that order."""
        per_chunk = self.meta["chunk_windows"]
        rows: dict[str, list[torch.Tensor]] = {n: [] for n in names}
        for w in ids:
            c, r = divmod(int(w), per_chunk)
            for n in names:
                rows[n].append(self._files[c].get_slice(n)[r : r + 1])
        return {n: torch.cat(v) for n, v in rows.items()}

    def batches(self, names: tuple[str, ...], batch: int) -> Iterator[dict[str, torch.Tensor]]:
        """Every window once, in order."""
        for b in range(0, len(self), batch):
            yield self.get(names, range(b, min(b + batch, len(self))))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config_mod.add_arguments(parser)
    parser.add_argument("--parent", required=True, help="parent HF checkpoint folder")
    parser.add_argument("--shard", required=True, help="token shard (data/<corpus>/<split>.bin)")
    parser.add_argument("--split", required=True, choices=["train", "valid"], help="train or held-out windows")
    parser.add_argument("--out", required=True, help="output folder (activations/<corpus>/<split>)")


def main(args: argparse.Namespace) -> None:
    cfg = config_mod.from_args(args)
    meta = run(cfg, args.parent, args.shard, args.split, args.out)
    print(
        f"{args.split}: {meta['windows']} windows x {meta['seq_len']} tokens, {meta['num_layers']} layers, "
        f"{meta['bytes_per_token_per_layer']} B/token/layer, {meta['total_bytes'] / 2**20:.1f} MiB "
        f"in {meta['wall_s']:.1f} s on {meta['device']}"
    )
