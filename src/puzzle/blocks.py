"""The block vocabulary: variant names <-> Nemotron-NAS `block_configs` entries.

One vocabulary is used everywhere (file names, tables, solutions, checkpoints). A variant has a
short stable name; its meaning is the published `block_configs` schema:

    attention: attn_kv{n} (GQA with n KV heads), attn_linear, attn_noop
    ffn:       ffn_{pct} (SwiGLU at pct% of the parent's width), ffn_linear, ffn_noop

The parent's own subblocks are `attn_kv{parent_kv}` and `ffn_100`.
This module imports no torch: the search plans from tables alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

ATTN_LINEAR, ATTN_NOOP = "attn_linear", "attn_noop"
FFN_LINEAR, FFN_NOOP = "ffn_linear", "ffn_noop"
_ATTN_KV = re.compile(r"^attn_kv(\d+)$")
_FFN_PCT = re.compile(r"^ffn_(\d+)$")


@dataclass(frozen=True)
class ParentShape:
    """The few numbers of a Llama-family parent that the block vocabulary needs."""

    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    num_hidden_layers: int

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> "ParentShape":
        """From an HF `config.json` dict (Llama-family or Nemotron-NAS with the parent's block 0)."""
        return cls(
            hidden_size=int(cfg["hidden_size"]),
            num_attention_heads=int(cfg["num_attention_heads"]),
            num_key_value_heads=int(cfg.get("num_key_value_heads") or cfg["num_attention_heads"]),
            intermediate_size=int(cfg["intermediate_size"]),
            num_hidden_layers=int(cfg["num_hidden_layers"]),
        )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


def round_up(x: int, multiple: int) -> int:
    return ((x + multiple - 1) // multiple) * multiple


def ffn_mult_to_intermediate_size(ffn_mult: float, hidden_size: int) -> int:
    """The published formula (HF remote code, vLLM, TRT-LLM, llama.cpp all agree)."""
    return round_up(int(2 * ffn_mult * hidden_size / 3), 256)


def intermediate_size_to_ffn_mult(intermediate_size: int, hidden_size: int) -> float | None:
    """Inverse of the formula, or None when the width cannot be expressed through `ffn_mult`."""
    mult = 1.5 * intermediate_size / hidden_size
    if ffn_mult_to_intermediate_size(mult, hidden_size) == intermediate_size:
        return mult
    return None


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


def attention_config(variant: str, parent: ParentShape) -> dict[str, Any]:
    """Nemotron-NAS `attention` entry of a variant."""
    base = {"n_heads_in_group": None, "no_op": False, "replace_with_linear": False}
    if variant == ATTN_NOOP:
        return {**base, "no_op": True}
    if variant == ATTN_LINEAR:
        return {**base, "replace_with_linear": True}
    m = _ATTN_KV.match(variant)
    if not m:
        raise ValueError(f"unknown attention variant {variant!r}")
    kv = int(m.group(1))
    if kv <= 0 or parent.num_attention_heads % kv:
        raise ValueError(f"{variant}: {kv} KV heads do not divide {parent.num_attention_heads} heads")
    return {**base, "n_heads_in_group": parent.num_attention_heads // kv}


def ffn_config(variant: str, parent: ParentShape, multiple: int = 256) -> dict[str, Any]:
    """Nemotron-NAS `ffn` entry: `ffn_mult` when the width round-trips, else `intermediate_size`."""
    base = {"no_op": False, "replace_with_linear": False}
    if variant == FFN_NOOP:
        return {"ffn_mult": None, **base, "no_op": True}
    if variant == FFN_LINEAR:
        return {"ffn_mult": None, **base, "replace_with_linear": True}
    m = _FFN_PCT.match(variant)
    if not m:
        raise ValueError(f"unknown ffn variant {variant!r}")
    width = ffn_width(int(m.group(1)), parent, multiple)
    mult = intermediate_size_to_ffn_mult(width, parent.hidden_size)
    if mult is not None:
        return {"ffn_mult": mult, **base}
    return {**base, "intermediate_size": width}


def block_config(attn: str, ffn: str, parent: ParentShape, multiple: int = 256) -> dict[str, Any]:
    return {"attention": attention_config(attn, parent), "ffn": ffn_config(ffn, parent, multiple)}


def attention_name_of(entry: dict[str, Any], num_attention_heads: int) -> str:
    """Variant name of a Nemotron-NAS attention entry."""
    if entry.get("no_op"):
        return ATTN_NOOP
    if entry.get("replace_with_linear"):
        return ATTN_LINEAR
    return attn_name(num_attention_heads // int(entry["n_heads_in_group"]))


def ffn_intermediate_size(entry: dict[str, Any], hidden_size: int) -> int:
    """Width of a Nemotron-NAS ffn entry (explicit `intermediate_size` wins over `ffn_mult`)."""
    if entry.get("intermediate_size") is not None:
        return int(entry["intermediate_size"])
    return ffn_mult_to_intermediate_size(float(entry["ffn_mult"]), hidden_size)


def ffn_name_of(
    entry: dict[str, Any], parent: ParentShape, candidates: list[str] = (), multiple: int = 256
) -> str:
    """Variant name of a Nemotron-NAS ffn entry: the candidate of that width, else the width's %."""
    if entry.get("no_op"):
        return FFN_NOOP
    if entry.get("replace_with_linear"):
        return FFN_LINEAR
    width = ffn_intermediate_size(entry, parent.hidden_size)
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
