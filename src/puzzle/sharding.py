"""Process group, FSDP2 sharding and sharded (DCP) checkpoints for GKD.

One code path for any number of processes: a run started without torchrun joins a one-rank gloo
group of its own, so sharding, gradient reduction and checkpoints are the same calls at 1 rank
(the embedded default on a laptop) as at 16 GPUs over two nodes.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor

from puzzle import checkpoint, metrics
from puzzle.io import ArtifactError, read_json, write_json


@dataclass(frozen=True)
class Group:
    rank: int
    world: int
    device: torch.device
    owned: bool  # this process created the group (and destroys it at the end)

    @property
    def main(self) -> bool:
        return self.rank == 0


def join(device: torch.device) -> Group:
    """The process group of this run: torchrun's (env://: RANK, WORLD_SIZE, MASTER_ADDR, ...) when
    launched by it, an existing one, else a one-rank group of this process. NCCL on GPUs, else gloo."""
    owned = not dist.is_initialized()
    if owned:
        backend = "nccl" if device.type == "cuda" else "gloo"
        if "WORLD_SIZE" in os.environ:
            dist.init_process_group(backend)
        else:
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    return Group(dist.get_rank(), dist.get_world_size(), device, owned)


def leave(group: Group) -> None:
    if group.owned:
        dist.destroy_process_group()


def shard(model: torch.nn.Module, root: torch.nn.Module, group: Group, compute: torch.dtype) -> None:
    """FSDP2 over all ranks: each decoder layer of `model` is one unit (gathered for its forward and
    backward only), `root` holds the rest (embeddings, final norm, head). Master weights keep their
    dtype; compute runs in `compute` with gradients reduced in float32."""
    mesh = init_device_mesh(group.device.type, (group.world,))
    stored = next(model.parameters()).dtype
    mp = (MixedPrecisionPolicy(param_dtype=compute, reduce_dtype=torch.float32) if compute != stored
          else MixedPrecisionPolicy())
    for layer in metrics.decoder_layers(model):
        if any(True for _ in layer.parameters()):  # a layer of no-ops only has nothing to shard
            fully_shard(layer, mesh=mesh, mp_policy=mp)
    fully_shard(root, mesh=mesh, mp_policy=mp)


def materialize(model: torch.nn.Module, path: str | Path, device: torch.device, dtype: torch.dtype) -> None:
    """Fill `model` (built on meta by checkpoint.empty, then sharded by `shard` or not) on `device` with the tensors
    of checkpoint folder `path` in `dtype`, one full tensor read at a time: a sharded parameter keeps this rank's
    shard only (distribute_tensor with src_data_rank=None slices the rank's own read: no communication, each rank
    reads the file from the page cache), any other is kept whole. Host memory: the shards (on a CPU device) and
    one full tensor, never the model."""
    buffers = dict(model.named_buffers())  # RoPE's, computed for real by checkpoint.empty; to_empty drops them
    model.to_empty(device=device)
    params = dict(model.named_parameters(remove_duplicate=False))
    embed = next(n for n, m in model.named_modules() if m is model.get_input_embeddings()) + ".weight"
    tied = {"lm_head.weight"} if model.config.tie_word_embeddings else set()  # not in the files: the embedding's
    found: set[str] = set()
    with torch.no_grad():
        for name, buffer in buffers.items():
            model.get_buffer(name).copy_(buffer)
        for name, full in checkpoint.tensors(path, dtype):
            if name not in params:
                raise ArtifactError(f"{path}: tensor {name!r} is not a parameter of the model of its config.json")
            for target in [name, *(tied if name == embed else ())]:
                param = params[target]
                if isinstance(param, DTensor):
                    shard = distribute_tensor(full.to(device), param.device_mesh, param.placements, src_data_rank=None)
                    param.to_local().copy_(shard.to_local())
                    del shard
                else:
                    param.copy_(full)
                found.add(target)
            del full  # before the next tensor is read
    missing = sorted(params.keys() - found)
    if missing:
        raise ArtifactError(f"{path}: the safetensors lack {missing[:8]} ({len(missing)} parameters of config.json)")


def full_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every rank takes part; rank 0 gets the whole, unsharded state dict on the CPU (others: {})."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


# ---- sharded checkpoints -------------------------------------------------------------------------
# <dir>/step_<N>/ is a DCP checkpoint (each rank writes its shards; any number of ranks can read it);
# <dir>/state.json, written last by rank 0, names the complete one, with the step and the caller's
# record. A kill while saving leaves the previous step's folder named there.


def save(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, group: Group,
         step: int, record: dict[str, Any]) -> None:
    folder = directory / f"step_{step}"
    if group.main:
        shutil.rmtree(folder, ignore_errors=True)
    dist.barrier()
    model_sd, optim_sd = get_state_dict(model, optimizer)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(folder))
    dist.barrier()
    if group.main:
        write_json(directory / "state.json", {"step": step, "folder": folder.name, **record})
        for old in directory.glob("step_*"):
            if old != folder:
                shutil.rmtree(old, ignore_errors=True)
    dist.barrier()


def record(directory: Path) -> dict[str, Any] | None:
    """The state.json of a complete checkpoint in `directory`, or None."""
    path = directory / "state.json"
    return read_json(path) if path.exists() else None


def load(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Restore the checkpoint `record(directory)` names into the (sharded) model and optimizer; its step."""
    state = record(directory)
    model_sd, optim_sd = get_state_dict(model, optimizer)
    sd = {"model": model_sd, "optim": optim_sd}
    dcp.load(sd, checkpoint_id=str(directory / state["folder"]))
    set_state_dict(model, optimizer, model_state_dict=sd["model"], optim_state_dict=sd["optim"])
    return int(state["step"])
