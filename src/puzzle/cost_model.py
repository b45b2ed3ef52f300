"""Analytic cost model: memory exactly from shapes, time as a roofline estimate.

For a device that is not at hand (plan an H100 child from a laptop): every subblock's FLOPs and
bytes moved for a prefill and for one decode step, and

    time = max(flops / peak_compute, bytes / memory_bandwidth)

Counted (no bias terms unless the parent has them; norms, RoPE, softmax and activations are
elementwise and left out of FLOPs):

  GQA attention (q heads nq, KV heads nk, head dim d, q_dim = nq d, kv_dim = nk d), batch b:
    prefill of s tokens: flops = 2 b s H (2 q_dim + 2 kv_dim) + 2 b nq d s (s + 1)   (causal QK^T and AV)
                         bytes = weights + 2 b s H e (in + out) + 2 b s kv_dim e (K/V written)
    decode at KV length k: flops = 2 b H (2 q_dim + 2 kv_dim) + 4 b nq d (k + 1)
                         bytes = weights + 2 b H e + 2 b kv_dim e (k read + 1 written)
  linear attention / linear FFN: flops = 2 b s H^2, bytes = weights + 2 b s H e
  SwiGLU FFN of width I: flops = 6 b s H I, bytes = weights + 2 b s H e
  non-block (embedding + final norm + LM head on the last position only, as generation runs it):
    flops = 2 b H V, bytes = V H e (head) + b s H e (embedding rows) + H e (norm)

with e the bytes per element of the dtype and weights = param_bytes. Imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from puzzle import blocks

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "fp8": 1}


@dataclass(frozen=True)
class Device:
    name: str
    peak_tflops: float  # dense peak at the costed dtype
    bandwidth_gbs: float  # GB/s (1e9 bytes)
    memory_gb: float  # GB (1e9 bytes)


# Public datasheet figures (dense bf16 / fp16 tensor-core peak, HBM bandwidth, memory).
DEVICES = {
    "h100_sxm": Device("h100_sxm", peak_tflops=989.0, bandwidth_gbs=3350.0, memory_gb=80.0),
    "h100_pcie": Device("h100_pcie", peak_tflops=756.0, bandwidth_gbs=2000.0, memory_gb=80.0),
    "h200": Device("h200", peak_tflops=989.0, bandwidth_gbs=4800.0, memory_gb=141.0),
    "a100_80gb": Device("a100_80gb", peak_tflops=312.0, bandwidth_gbs=2039.0, memory_gb=80.0),
    "rtx_4090": Device("rtx_4090", peak_tflops=165.0, bandwidth_gbs=1008.0, memory_gb=24.0),
}


def device(name: str, peak_tflops: float | None = None, bandwidth_gbs: float | None = None,
           memory_gb: float | None = None) -> Device:
    """A named device; figures given here override (or, for an unknown name, supply) the table's."""
    base = DEVICES.get(name)
    figures = {
        "peak_tflops": peak_tflops if peak_tflops is not None else getattr(base, "peak_tflops", None),
        "bandwidth_gbs": bandwidth_gbs if bandwidth_gbs is not None else getattr(base, "bandwidth_gbs", None),
        "memory_gb": memory_gb if memory_gb is not None else getattr(base, "memory_gb", None),
    }
    missing = [k for k, v in figures.items() if v is None]
    if missing:
        raise ValueError(
            f"analytic device {name!r} is not one of {sorted(DEVICES)}: give {', '.join(missing)} in its target"
        )
    return Device(name, **figures)


@dataclass(frozen=True)
class Arch:
    """The parent's global shape (per-variant shapes follow from the variant name) and, for a Nemotron-NAS
    parent, each layer's own block (`blocks.ParentShape.layers`)."""

    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    num_hidden_layers: int
    vocab_size: int
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    layers: tuple[blocks.BlockConfig, ...] = ()

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> "Arch":
        """From a Llama-family config.json dict, or a Nemotron-NAS one read per layer."""
        shape = blocks.ParentShape.from_config(cfg)
        return cls(
            hidden_size=shape.hidden_size,
            num_attention_heads=shape.num_attention_heads,
            num_key_value_heads=shape.num_key_value_heads,
            head_dim=int(cfg.get("head_dim") or shape.head_dim),
            intermediate_size=shape.intermediate_size,
            num_hidden_layers=shape.num_hidden_layers,
            vocab_size=int(cfg["vocab_size"]),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            attention_bias=bool(cfg.get("attention_bias", False)),
            mlp_bias=bool(cfg.get("mlp_bias", False)),
            layers=shape.layers,
        )

    @property
    def shape(self) -> blocks.ParentShape:
        return blocks.ParentShape(
            self.hidden_size, self.num_attention_heads, self.num_key_value_heads,
            self.intermediate_size, self.num_hidden_layers, self.layers,
        )


NON_BLOCK = "non_block"


def ffn_width(variant: str, arch: Arch, multiple: int) -> int:
    pct = blocks.ffn_pct_of(variant)
    return blocks.ffn_width(pct, arch.shape, multiple) if pct is not None else 0


def param_count(variant: str, arch: Arch, multiple: int = 256) -> int:
    """Parameters of one instance of a subblock (its norm included), or of the non-block part."""
    h = arch.hidden_size
    if variant == NON_BLOCK:
        return arch.vocab_size * h * (1 if arch.tie_word_embeddings else 2) + h
    if variant in (blocks.ATTN_NOOP, blocks.FFN_NOOP):
        return 0
    if variant in (blocks.ATTN_LINEAR, blocks.FFN_LINEAR):
        return h * h + h
    if blocks.kind_of(variant) == "attention":
        q, kv = arch.num_attention_heads * arch.head_dim, blocks.kv_heads_of(variant) * arch.head_dim
        bias = (q + 2 * kv + h) if arch.attention_bias else 0
        return 2 * h * q + 2 * h * kv + bias + h
    return swiglu_params(ffn_width(variant, arch, multiple), arch)


def swiglu_params(width: int, arch: Arch) -> int:
    """Parameters of a SwiGLU FFN of this width, its norm included."""
    h = arch.hidden_size
    return 3 * h * width + ((2 * width + h) if arch.mlp_bias else 0) + h


def kv_bytes_per_token(variant: str, arch: Arch, dtype_bytes: int) -> int:
    """K and V of one token of one sequence in one instance: 2 * n_kv * head_dim * bytes (0 without a KV cache)."""
    if variant == NON_BLOCK or blocks.kind_of(variant) != "attention":
        return 0
    return 2 * blocks.kv_heads_of(variant) * arch.head_dim * dtype_bytes


def prefill_work(variant: str, arch: Arch, batch: int, tokens: int, e: int, multiple: int = 256) -> tuple[float, float]:
    """(flops, bytes) of prefilling `batch` prompts of `tokens` through one instance."""
    return _work(variant, arch, batch, tokens, None, e, multiple)


def decode_work(variant: str, arch: Arch, batch: int, kv_len: int, e: int, multiple: int = 256) -> tuple[float, float]:
    """(flops, bytes) of one decode step of `batch` sequences with `kv_len` cached tokens."""
    return _work(variant, arch, batch, 1, kv_len, e, multiple)


def _work(variant: str, arch: Arch, b: int, s: int, kv_len: int | None, e: int, multiple: int) -> tuple[float, float]:
    h = arch.hidden_size
    weights = param_count(variant, arch, multiple) * e
    if variant == NON_BLOCK:
        return 2.0 * b * h * arch.vocab_size, float(arch.vocab_size * h * e + b * s * h * e + h * e)
    if variant in (blocks.ATTN_NOOP, blocks.FFN_NOOP):
        return 0.0, 0.0
    act = 2.0 * b * s * h * e
    if variant in (blocks.ATTN_LINEAR, blocks.FFN_LINEAR):
        return 2.0 * b * s * h * h, weights + act
    if blocks.kind_of(variant) == "ffn":
        return 6.0 * b * s * h * ffn_width(variant, arch, multiple), weights + act
    nq, d = arch.num_attention_heads, arch.head_dim
    q, kv = nq * d, blocks.kv_heads_of(variant) * d
    proj = 2.0 * b * s * h * (2 * q + 2 * kv)
    if kv_len is None:  # prefill: causal attention over the prompt, K/V written to the cache
        return proj + 2.0 * b * nq * d * s * (s + 1), weights + act + 2.0 * b * s * kv * e
    return proj + 4.0 * b * nq * d * (kv_len + 1), weights + act + 2.0 * b * (kv_len + 1) * kv * e


def roofline_ms(flops: float, nbytes: float, dev: Device) -> float:
    return 1e3 * max(flops / (dev.peak_tflops * 1e12), nbytes / (dev.bandwidth_gbs * 1e9))


def decode_kv_len(input_len: int, output_len: int) -> int:
    """The KV length a decode step is costed at: the middle of generation (the mean over output positions)."""
    return input_len + output_len // 2


def memory_needed(arch: Arch, batch: int, input_len: int, output_len: int, e: int) -> tuple[int, int]:
    """(parameter bytes, KV-cache bytes) of the parent's architecture serving one batch of the scenario,
    summed over its layers (each with its own block for a Nemotron-NAS parent)."""
    params, kv_per_token = param_count(NON_BLOCK, arch), 0
    for block in arch.shape.blocks():
        attn = blocks.attention_name_of(block.attention, arch.num_attention_heads)
        params += param_count(attn, arch)
        width = block.ffn.width(arch.hidden_size)  # exact: a parent's width need not be a ffn_{pct} of its widest
        params += swiglu_params(width, arch) if width else param_count(blocks.ffn_name_of(block.ffn, arch.shape), arch)
        kv_per_token += kv_bytes_per_token(attn, arch, e)
    return params * e, kv_per_token * batch * (input_len + output_len)
