"""The planner: what every stage needs (jobs, GPUs, memory, disk, FLOPs, hours), from the parent's
config.json and the experiment config alone, before anything is submitted.

    python -m puzzle plan --config config/llama-3.1-8b-h100.yaml

Imports no torch (it plans on a login node). Bytes are decimal (1 GB = 1e9 B).
"""

from __future__ import annotations

from typing import Any

from puzzle.blocks import ParentShape

# The activations stage stores x, h and y of every layer (activations.TENSORS; pinned by a test).
ACTIVATION_TENSORS = 3
ACTIVATION_DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}


def activation_dump_bytes(parent_cfg: dict[str, Any], tokens: int, dtype: str = "bf16") -> int:
    """Bytes the activations stage writes for `tokens` tokens of one split (x, h, y of every layer;
    the safetensors headers, a few hundred bytes per chunk file, are left out)."""
    shape = ParentShape.from_config(parent_cfg)  # only the widths: a vocabulary need not be known yet
    per_token = ACTIVATION_TENSORS * shape.hidden_size * ACTIVATION_DTYPE_BYTES[dtype] * shape.num_hidden_layers
    return int(tokens) * per_token
