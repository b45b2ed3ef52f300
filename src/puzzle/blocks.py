"""The block vocabulary: variant names <-> Nemotron-NAS `block_configs` entries.

One vocabulary is used everywhere (file names, tables, solutions, checkpoints). A variant has a
short stable name; its meaning is the published `block_configs` schema:

    attention: attn_kv{n} (GQA with n KV heads), attn_linear, attn_noop
    ffn:       ffn_{pct} (SwiGLU at pct% of the parent's width), ffn_linear, ffn_noop

The parent's own subblocks are `attn_kv{parent_kv}` and `ffn_100`. A Nemotron-NAS parent (a Puzzle child,
or a published model such as Llama-3.3-Nemotron-Super-49B) is read per layer; its reference block, the one
`attn_kv{n}` and `ffn_{pct}` are relative to, has its most KV heads and its widest FFN.
This module imports no torch: the search plans from tables alone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from puzzle.nemotron_nas.block_config import (
    AttentionConfig,
    BlockConfig,
    FFNConfig,
    intermediate_size_to_ffn_mult,
)

ATTN_LINEAR, ATTN_NOOP = "attn_linear", "attn_noop"
FFN_LINEAR, FFN_NOOP = "ffn_linear", "ffn_noop"
_ATTN_KV = re.compile(r"^attn_kv(\d+)$")
_FFN_PCT = re.compile(r"^ffn_(\d+)$")


@dataclass(frozen=True)
class ParentShape:
    """The few numbers of a Llama-family parent that the block vocabulary needs: its reference block (KV heads,
    FFN width) and, for a Nemotron-NAS parent, each layer's own block."""

    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    num_hidden_layers: int
    layers: tuple[BlockConfig, ...] = ()  # a Nemotron-NAS parent's blocks; () = every layer the reference block

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> ParentShape:
        """From an HF `config.json` dict: Llama-family, or Nemotron-NAS read per layer (`block_configs`)."""
        hidden, heads, n = int(cfg["hidden_size"]), int(cfg["num_attention_heads"]), int(cfg["num_hidden_layers"])
        if not cfg.get("block_configs"):
            return cls(hidden, heads, int(cfg.get("num_key_value_heads") or heads), int(cfg["intermediate_size"]), n)
        layers = tuple(
            BlockConfig.from_dict(b, f"block_configs[{i}]", hidden, heads) for i, b in enumerate(cfg["block_configs"])
        )
        if len(layers) != n:
            raise ValueError(f"block_configs has {len(layers)} entries but num_hidden_layers={n}")
        kv = max((b.attention.num_key_value_heads(heads) for b in layers), default=0)
        width = max((b.ffn.width(hidden) for b in layers), default=0)
        if not kv or not width:
            raise ValueError(
                "Nemotron-NAS parent: no layer has GQA attention or no layer has a SwiGLU FFN, so there is no "
                "reference block to name variants by"
            )
        return cls(hidden, heads, kv, width, n, layers)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def reference_block(self) -> BlockConfig:
        """The Llama block the variant names are relative to (`attn_kv{num_key_value_heads}` + `ffn_100`)."""
        return block_config(*parent_variants(self), self)

    def blocks(self) -> tuple[BlockConfig, ...]:
        """Each layer's own block."""
        return self.layers or (self.reference_block(),) * self.num_hidden_layers


def ffn_width(pct: int, parent: ParentShape, multiple: int) -> int:
    """Width of `ffn_{pct}`: pct% of the parent's, rounded to `multiple` (at least one multiple)."""
    if pct == 100:
        return parent.intermediate_size
    return max(multiple, int(round(parent.intermediate_size * pct / 100 / multiple)) * multiple)


def attn_name(kv_heads: int) -> str:
    return f"attn_kv{kv_heads}"


def ffn_name(pct: int) -> str:
    return f"ffn_{pct}"


def parent_variants(parent: ParentShape) -> tuple[str, str]:
    return attn_name(parent.num_key_value_heads), ffn_name(100)


def kind_of(variant: str) -> str:
    """'attention' or 'ffn'."""
    if variant.startswith("attn_"):
        return "attention"
    if variant.startswith("ffn_"):
        return "ffn"
    raise ValueError(f"unknown variant name {variant!r}: expected attn_* or ffn_*")


def search_space(parent: ParentShape, space: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Attention and FFN variant names of a `search_space` config section, parent first.

    space = {"attention": {"kv_heads": [..], "linear": bool, "no_op": bool},
             "ffn": {"ratios": [..], "linear": bool, "no_op": bool, "multiple_of": int}}
    """
    a_cfg, f_cfg = space["attention"], space["ffn"]
    kv = [parent.num_key_value_heads] + sorted(
        {int(k) for k in a_cfg.get("kv_heads", [])} - {parent.num_key_value_heads}, reverse=True
    )
    for k in kv:
        if k <= 0 or parent.num_key_value_heads % k:
            raise ValueError(
                f"search_space.attention.kv_heads: {k} does not divide the parent's "
                f"{parent.num_key_value_heads} KV heads"
            )
    attn = [attn_name(k) for k in kv]
    attn += [ATTN_LINEAR] if a_cfg.get("linear", True) else []
    attn += [ATTN_NOOP] if a_cfg.get("no_op", True) else []
    pcts = [100] + sorted({int(round(100 * r)) for r in f_cfg.get("ratios", [])} - {100}, reverse=True)
    ffn = [ffn_name(p) for p in pcts]
    ffn += [FFN_LINEAR] if f_cfg.get("linear", True) else []
    ffn += [FFN_NOOP] if f_cfg.get("no_op", True) else []
    return attn, ffn


def attention_config(variant: str, parent: ParentShape) -> AttentionConfig:
    """Nemotron-NAS `attention` entry of a variant."""
    if variant == ATTN_NOOP:
        return AttentionConfig(no_op=True)
    if variant == ATTN_LINEAR:
        return AttentionConfig(replace_with_linear=True)
    m = _ATTN_KV.match(variant)
    if not m:
        raise ValueError(f"unknown attention variant {variant!r}")
    kv = int(m.group(1))
    if kv <= 0 or parent.num_attention_heads % kv:
        raise ValueError(f"{variant}: {kv} KV heads do not divide {parent.num_attention_heads} heads")
    return AttentionConfig(n_heads_in_group=parent.num_attention_heads // kv)


def ffn_config(variant: str, parent: ParentShape, multiple: int = 256) -> FFNConfig:
    """Nemotron-NAS `ffn` entry: `ffn_mult` when the width round-trips, else `intermediate_size`."""
    if variant == FFN_NOOP:
        return FFNConfig(no_op=True)
    if variant == FFN_LINEAR:
        return FFNConfig(replace_with_linear=True)
    m = _FFN_PCT.match(variant)
    if not m:
        raise ValueError(f"unknown ffn variant {variant!r}")
    width = ffn_width(int(m.group(1)), parent, multiple)
    mult = intermediate_size_to_ffn_mult(width, parent.hidden_size)
    return FFNConfig(intermediate_size=width) if mult is None else FFNConfig(ffn_mult=mult)


def block_config(attn: str, ffn: str, parent: ParentShape, multiple: int = 256) -> BlockConfig:
    return BlockConfig(attention_config(attn, parent), ffn_config(ffn, parent, multiple))


def attention_name_of(entry: AttentionConfig, num_attention_heads: int) -> str:
    """Variant name of a Nemotron-NAS attention entry."""
    if entry.no_op:
        return ATTN_NOOP
    if entry.replace_with_linear:
        return ATTN_LINEAR
    return attn_name(entry.num_key_value_heads(num_attention_heads))


def ffn_name_of(entry: FFNConfig, parent: ParentShape, candidates: list[str] = (), multiple: int = 256) -> str:
    """Variant name of a Nemotron-NAS ffn entry: the candidate of that width, else the width's %."""
    if entry.no_op:
        return FFN_NOOP
    if entry.replace_with_linear:
        return FFN_LINEAR
    width = entry.width(parent.hidden_size)
    for name in candidates:
        pct = ffn_pct_of(name)
        if pct is not None and ffn_width(pct, parent, multiple) == width:
            return name
    return ffn_name(int(round(100 * width / parent.intermediate_size)))


def kv_heads_of(variant: str) -> int:
    """KV heads of an attention variant (0 for linear and no-op: they keep no KV cache)."""
    m = _ATTN_KV.match(variant)
    return int(m.group(1)) if m else 0


def ffn_pct_of(variant: str) -> int | None:
    m = _FFN_PCT.match(variant)
    return int(m.group(1)) if m else None


def composition(attn: str, ffn: str) -> str:
    """Name of one layer's (attention, FFN) pair as it appears in score tables."""
    return f"{attn}+{ffn}"


def split_composition(name: str) -> tuple[str, str]:
    attn, sep, ffn = name.partition("+")
    if not sep:
        raise ValueError(f"{name!r} is not an attention+ffn composition")
    return attn, ffn
