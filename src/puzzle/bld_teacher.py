"""Where a BLD step's inputs come from: the parent's stored activations, or the parent run online.

Both answer `inputs(ids)` with every owned layer's input x and FFN input h, in fp32 on the job's
device, for windows `ids` of a fixed pool; BLD recomputes the targets from them (bld.Teacher). The
two differ only in where x and h were computed: the activations stage ran the parent once and
stored them, or the job runs the frozen parent's layers 0..last owned layer now, with the same
hooks (activations.capture), on windows of the train shard. Online writes nothing to disk.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from puzzle.activations import LayerActivations, capture
from puzzle.data import read_shard
from puzzle.training import window_starts

Inputs = dict[int, dict[str, torch.Tensor]]  # layer -> {"x": ..., "h": ...}


class StoredInputs:
    """The activations stage's dump of one split (`activations/<corpus>/<split>`)."""

    def __init__(self, split_dir: str | os.PathLike, layers: list[int], device: torch.device) -> None:
        self.acts = {layer: LayerActivations(split_dir, layer) for layer in layers}
        first = self.acts[layers[0]]
        self.windows, self.seq_len, self.device = len(first), int(first.meta["seq_len"]), device

    def __call__(self, ids: Sequence[int] | np.ndarray, names: tuple[str, ...] = ("x", "h")) -> Inputs:
        return {
            layer: {n: t.to(self.device, torch.float32) for n, t in acts.get(names, ids).items()}
            for layer, acts in self.acts.items()
        }


def load_prefix(parent_dir: str | os.PathLike, last_layer: int, devices: Sequence[torch.device], dtype: torch.dtype,
                **placement: Any) -> Any:
    """The parent with only layers 0..last_layer (the rest are never read into memory), frozen, over `devices`
    (filled in order; checkpoint.load's explicit max_memory / offload_folder in `placement` instead)."""
    from puzzle import checkpoint

    return checkpoint.load(parent_dir, dtype=dtype, device=list(devices), layers=last_layer + 1,
                           **placement).requires_grad_(False)


def prefix_devices(device: torch.device) -> list[torch.device]:
    """The devices the teacher prefix goes over when BLD trains on `device`: the job's other GPUs, else `device`.
    The trained entries stay on the training GPU, the first: their state (tens of GB for a 70B layer's group)
    keeps it to itself, since the placement fills each GPU to its free memory at load time, before training
    allocates anything."""
    from puzzle import checkpoint

    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return [d for d in checkpoint.devices_for(device) if d != device] or [device]


class OnlineInputs:
    """The frozen parent run on `windows` evenly spaced windows of a token shard, each call a batch.

    In a job of several ranks (torch.distributed), each rank owns a contiguous part of the job's
    layers and the parent is pipelined: rank 0 runs the layers up to its last, every later rank
    receives the hidden state from the rank before it and runs only its own layers, then passes
    its last output on. Every rank calls with the same ids in the same order.

    One process (world 1) places the parent over the job's GPUs other than `device` (prefix_devices); the
    inputs it answers are moved to `device`. In a job of several ranks each rank holds its prefix on its own
    device. `placement`: load_prefix's."""

    def __init__(
        self, parent_dir: str | os.PathLike, shard: str | os.PathLike, layers: list[int], windows: int,
        seq_len: int, device: torch.device, dtype: torch.dtype, rank: int = 0, world: int = 1, **placement: Any,
    ) -> None:
        from puzzle import checkpoint

        self.tokens = read_shard(shard)
        self.starts = window_starts(len(self.tokens), windows, seq_len)
        self.windows, self.seq_len, self.device, self.dtype, self.layers = (
            len(self.starts),
            seq_len,
            device,
            dtype,
            layers,
        )
        self.prev, self.next = (rank - 1 if rank > 0 else None), (rank + 1 if rank < world - 1 else None)
        devices = prefix_devices(device) if world == 1 else [device]
        self.model = load_prefix(parent_dir, max(layers), devices, dtype, **placement)
        self.input_device = checkpoint.input_device(self.model)
        if self.prev is not None:  # the earlier layers run on the ranks before this one
            body = self.model.model
            body.layers = body.layers[layers[0] :]
            body.config.num_hidden_layers = len(body.layers)
            self.store, self.handles = capture(list(body.layers))
        else:
            self.store, self.handles = capture([self.model.model.layers[i] for i in layers])

    @torch.no_grad()
    def __call__(self, ids: Sequence[int] | np.ndarray, names: tuple[str, ...] = ("x", "h")) -> Inputs:
        import torch.distributed as dist

        ids = np.asarray(ids)
        if self.prev is None:
            rows = [np.asarray(self.tokens[s : s + self.seq_len], dtype=np.int64) for s in self.starts[ids]]
            self.model.model(input_ids=torch.from_numpy(np.stack(rows)).to(self.input_device), use_cache=False)
        else:
            hidden = torch.empty(
                len(ids), self.seq_len, self.model.config.hidden_size, dtype=self.dtype, device=self.device
            )
            dist.recv(hidden, self.prev)
            self.model.model(inputs_embeds=hidden, use_cache=False)
        if self.next is not None:
            dist.send(self.store[-1]["y"].contiguous(), self.next)
        return {
            layer: {n: self.store[i][n].to(self.device, torch.float32) for n in names}
            for i, layer in enumerate(self.layers)
        }
