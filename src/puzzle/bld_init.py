"""Training-free initialization of replacement subblocks from the parent's weights (Puzzle, App. A).

Tensors use the library's names (Nemotron-NAS per-layer names, nn.Linear convention: weight is
out x in). Every function maps parent tensors to the variant's tensors; none needs a module.

  ffn_{pct}    keep the top-k intermediate channels by contribution |X_i| * ||W_down[:, i]||
  attn_kv{n}   mean-pool the K and V heads of each merged group; Q and O unchanged
  attn_linear  W_o @ W_v, V heads repeated to the query heads (each token attends to itself)
  ffn_linear   W_down @ W_up (the gate is ignored)
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from puzzle import blocks

ATTN_NORM, FFN_NORM = "input_layernorm.weight", "post_attention_layernorm.weight"
Q, K, V, O = (f"self_attn.{p}_proj.weight" for p in "qkvo")  # noqa: E741 (W_q, W_k, W_v, W_o, as the paper writes them)
GATE, UP, DOWN = (f"mlp.{p}_proj.weight" for p in ("gate", "up", "down"))
LINEAR_ATTN, LINEAR_MLP = "self_attn.linear_attn.weight", "mlp.linear_mlp.weight"


def channel_contribution(mean_abs_act: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """Per intermediate channel: mean |X_i| over calibration tokens times ||W_down[:, i]||."""
    return mean_abs_act * down.norm(dim=0)


def top_channels(contribution: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k highest-contribution channels, in their original order."""
    return contribution.topk(k).indices.sort().values


def prune_ffn(parent: dict[str, torch.Tensor], keep: torch.Tensor) -> dict[str, torch.Tensor]:
    return {
        FFN_NORM: parent[FFN_NORM].clone(),
        GATE: parent[GATE][keep].clone(),
        UP: parent[UP][keep].clone(),
        DOWN: parent[DOWN][:, keep].clone(),
    }


def pool_kv_heads(weight: torch.Tensor, n_kv: int, n_new: int, head_dim: int) -> torch.Tensor:
    """K or V projection with `n_kv` heads -> `n_new` heads, each the mean of its group of
    n_kv / n_new consecutive heads (the query heads that shared them keep sharing the mean)."""
    if n_kv % n_new:
        raise ValueError(f"cannot pool {n_kv} KV heads into {n_new}")
    hidden = weight.shape[1]
    return weight.reshape(n_new, n_kv // n_new, head_dim, hidden).mean(1).reshape(n_new * head_dim, hidden)


def repeat_kv_heads(weight: torch.Tensor, n_kv: int, n_heads: int, head_dim: int) -> torch.Tensor:
    """K or V projection expanded to one head per query head (GQA's repeat_kv, on weights)."""
    hidden = weight.shape[1]
    heads = weight.reshape(n_kv, head_dim, hidden).repeat_interleave(n_heads // n_kv, dim=0)
    return heads.reshape(n_heads * head_dim, hidden)


def linear_attention(v: torch.Tensor, o: torch.Tensor, n_kv: int, n_heads: int, head_dim: int) -> torch.Tensor:
    return o @ repeat_kv_heads(v, n_kv, n_heads, head_dim)


def init_attention(
    variant: str, parent: dict[str, torch.Tensor], shape: blocks.ParentShape
) -> dict[str, torch.Tensor]:
    """Tensors of attention variant `variant` (parent variant included; no-op: none)."""
    if variant == blocks.ATTN_NOOP:
        return {}
    norm = {ATTN_NORM: parent[ATTN_NORM].clone()}
    n_kv, n_heads, hd = shape.num_key_value_heads, shape.num_attention_heads, shape.head_dim
    if variant == blocks.ATTN_LINEAR:
        return {**norm, LINEAR_ATTN: linear_attention(parent[V], parent[O], n_kv, n_heads, hd)}
    n_new = blocks.kv_heads_of(variant)
    pooled = {name: pool_kv_heads(parent[name], n_kv, n_new, hd) for name in (K, V)}
    return {**norm, Q: parent[Q].clone(), **pooled, O: parent[O].clone()}


def init_ffn(
    variant: str, parent: dict[str, torch.Tensor], width: int, mean_abs_act: torch.Tensor | None
) -> dict[str, torch.Tensor]:
    """Tensors of FFN variant `variant` at `width` channels; `mean_abs_act` (mean |X| per parent
    channel) is needed only to prune."""
    if variant == blocks.FFN_NOOP:
        return {}
    if variant == blocks.FFN_LINEAR:
        return {FFN_NORM: parent[FFN_NORM].clone(), LINEAR_MLP: parent[DOWN] @ parent[UP]}
    if width == parent[DOWN].shape[1]:
        return prune_ffn(parent, torch.arange(width))
    if mean_abs_act is None:
        raise ValueError(f"{variant}: pruning needs the parent's mean |intermediate activation| per channel")
    return prune_ffn(parent, top_channels(channel_contribution(mean_abs_act, parent[DOWN]), width))


def init_method(variant: str, parent: blocks.ParentShape) -> str:
    """How a variant is initialized, for the library's metrics."""
    if variant in blocks.parent_variants(parent):
        return "parent"
    return {
        blocks.ATTN_NOOP: "none (no-op)",
        blocks.FFN_NOOP: "none (no-op)",
        blocks.ATTN_LINEAR: "W_o @ repeat_kv(W_v)",
        blocks.FFN_LINEAR: "W_down @ W_up",
    }.get(variant, "kv mean-pool" if variant.startswith("attn_kv") else "channel contribution top-k")


def describe(parts: Iterable[str | None], parent: blocks.ParentShape) -> str:
    return " + ".join(init_method(p, parent) for p in parts if p is not None)
