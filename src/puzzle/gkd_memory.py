"""GPU bytes of one GKD process (gkd.py under FSDP2), for the planner. Torch-free.

Per GPU, with N processes, P_c child and P_p parent parameters, R = embedding + head parameters
(the FSDP root: gathered for the whole step), L = the largest decoder layer, c = compute bytes
(2 for bf16, 4 for fp32):

    child shards    16 P_c / N          float32 weights, gradients, Adam m and v, each 1/N
    child gathered  c (R + 2 L)         compute copies of the root and two layers (one running,
                  + 4 (R + L)           one prefetched), float32 gradients of root and one layer
                                        before their reduce-scatter
    parent          c P_p               replicated; or sharded:
                    c (P_p - R) / N + c (R + 2 L)   layers 1/N, root and head whole, two layers gathered

Activations are not counted (they scale with micro_batch_size x seq_len; activation
checkpointing keeps one layer input per layer). In bf16: a Llama-3.1-8B parent (8.03e9, R = 1.05e9,
L = 2.18e8) and a 5.2e9 child on 8 GPUs: 10.4 + 8.0 + 16.1 (replicated) = 34.5 GB; a Llama-3.3-70B
parent (70.55e9, R = 2.1e9, L = 8.6e8) and a 49e9 child, parent sharded: 84.6 GB on 16 GPUs (more
than an H100's 80), 65.4 GB on 24.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class GkdBytes:
    child_shards: int
    child_gathered: int
    parent: int

    @property
    def total(self) -> int:
        return self.child_shards + self.child_gathered + self.parent


def bytes_per_gpu(
    child_params: int, parent_params: int, gpus: int, parent_sharded: bool,
    root_params: int = 0, layer_params: int = 0, compute_bytes: int = 2,
) -> GkdBytes:
    """Bytes one of `gpus` GKD processes holds for weights, gradients and optimizer state (module docstring)."""
    if gpus < 1:
        raise ValueError(f"gpus = {gpus}: expected >= 1")
    c = compute_bytes
    gathered_root = c * (root_params + 2 * layer_params)
    child_gathered = gathered_root + 4 * (root_params + layer_params)
    if parent_sharded:
        parent = math.ceil(c * (parent_params - root_params) / gpus) + gathered_root
    else:
        parent = c * parent_params
    return GkdBytes(math.ceil(16 * child_params / gpus), child_gathered, parent)


def parent_sharded(choice: str, parent_bytes: float, gpu_bytes: float | None) -> bool:
    """gkd.parent_sharding: shard, replicate, or auto = shard when a replica would take more than a
    quarter of one GPU (a 70B in bf16: 141 GB); on a CPU (gpu_bytes None) replicated."""
    if choice != "auto":
        return choice == "shard"
    return gpu_bytes is not None and parent_bytes > gpu_bytes / 4


def fewest_nodes(
    child_params: int, parent_params: int, gpus_per_node: int, gpu_bytes: float, headroom: float = 0.8,
    max_nodes: int = 64, **sizes: int,
) -> tuple[int, bool] | None:
    """(nodes, parent_sharded): the fewest nodes whose GPUs each hold bytes_per_gpu within
    headroom x gpu_bytes (the rest for activations), a replicated parent preferred at equal nodes;
    None when even `max_nodes` do not suffice."""
    for nodes in range(1, max_nodes + 1):
        for sharded in (False, True):
            need = bytes_per_gpu(child_params, parent_params, nodes * gpus_per_node, sharded, **sizes).total
            if need <= headroom * gpu_bytes:
                return nodes, sharded
    return None
