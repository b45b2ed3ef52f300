"""Pieces every training loop here shares (parent, BLD, GKD): schedule, batches, checkpoints.

Batches depend only on (seed, step), and checkpoints hold model + optimizer state, so a killed
run resumed from its checkpoint ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from puzzle.io import atomic_path, read_json, write_json


def pick_device(name: str = "auto") -> torch.device:
    """`auto` takes the first CUDA GPU when one is visible, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device = cuda but no CUDA GPU is visible")
    return torch.device(name)


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """A config dtype name; `auto` = float32 on CPU (bf16 is slower there), bfloat16 on a GPU."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return DTYPES[name]


def cosine_lr(step: int, total: int, base_lr: float, warmup: int, min_ratio: float) -> float:
    """Linear warmup for `warmup` steps, then cosine decay from base_lr to base_lr * min_ratio."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    frac = (step - warmup) / max(1, total - warmup)
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def sample_windows(tokens: np.ndarray, batch: int, length: int, seed: int, step: int) -> torch.Tensor:
    """`batch` random windows of `length` tokens; a function of (seed, step) only."""
    rng = np.random.default_rng([seed, step])
    starts = rng.integers(0, len(tokens) - length, size=batch)
    return torch.from_numpy(np.stack([np.asarray(tokens[s : s + length], dtype=np.int64) for s in starts]))


def window_starts(n_tokens: int, count: int, length: int) -> np.ndarray:
    """Starts of `count` evenly spaced windows of `length` tokens (fewer if the shard is shorter)."""
    if n_tokens < length + 1:
        raise ValueError(f"shard of {n_tokens} tokens is shorter than one window of {length}")
    return np.linspace(0, n_tokens - length, min(count, n_tokens // length)).astype(np.int64)


def fixed_windows(tokens: np.ndarray, count: int, length: int) -> torch.Tensor:
    """`count` evenly spaced, non-random windows (held-out evaluation sets)."""
    starts = window_starts(len(tokens), count, length)
    return torch.from_numpy(np.stack([np.asarray(tokens[s : s + length], dtype=np.int64) for s in starts]))


def adamw(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not norms or biases)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=(0.9, 0.95), eps=1e-8)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def save_checkpoint(
    directory: str | os.PathLike,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    extra: Any = None,
) -> None:
    """Model weights (safetensors), optimizer state and the step, each written atomically.

    The step file is written last: a checkpoint whose step file is missing or older is ignored.
    """
    d = Path(directory)
    from safetensors.torch import save_model

    with atomic_path(d / "model.safetensors") as tmp:
        save_model(model, str(tmp))  # drops tied duplicates, which save_file refuses
    with atomic_path(d / "optimizer.pt") as tmp:
        torch.save(optimizer.state_dict(), tmp)
    write_json(d / "state.json", {"step": step, "extra": extra})


def load_checkpoint(
    directory: str | os.PathLike, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[int, Any]:
    """Restore a checkpoint written by save_checkpoint; returns (step, extra), or (0, None) if none."""
    d = Path(directory)
    if not (d / "state.json").exists():
        return 0, None
    from safetensors.torch import load_model

    device = next(model.parameters()).device
    load_model(model, str(d / "model.safetensors"), device=str(device))
    optimizer.load_state_dict(torch.load(d / "optimizer.pt", map_location=device, weights_only=True))
    state = read_json(d / "state.json")
    return int(state["step"]), state.get("extra")
