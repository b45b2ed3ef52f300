"""Analytic cost model: memory exactly from shapes, time as a roofline estimate, per GPU of a
tensor-parallel group, in bf16/fp16/fp32 or fp8.

For a device that is not at hand (plan an H100 child from a laptop): every subblock's FLOPs and
bytes moved for a prefill and for one decode step on one GPU of a TP group, and

    time = max(flops / peak_compute, bytes / memory_bandwidth) + all-reduce (tp > 1)

Counted (no bias terms unless the parent has them; norms, RoPE, softmax and activations are
elementwise and left out of FLOPs), with the heads, KV heads and FFN width split over tp GPUs
(Megatron-style: q/k/v and gate/up column-parallel, o and down row-parallel; KV heads
ceil(n_kv / tp) per GPU, replicated where tp exceeds them):

  GQA attention (q heads nq, KV heads nk per GPU, head dim d, q_dim = nq d, kv_dim = nk d), batch b:
    prefill of s tokens: flops = 2 b s H (2 q_dim + 2 kv_dim) + 2 b nq d s (s + 1)   (causal QK^T and AV)
                         bytes = weights + 2 b s H a (in + out) + 2 b s kv_dim k (K/V written)
    decode at KV length n: flops = 2 b H (2 q_dim + 2 kv_dim) + 4 b nq d (n + 1)
                         bytes = weights + 2 b H a + 2 b kv_dim k (n read + 1 written)
  linear attention / linear FFN (row-parallel H x H/tp): flops = 2 b s H^2 / tp, bytes = weights + 2 b s H a
  SwiGLU FFN of width I (I/tp per GPU): flops = 6 b s H I / tp, bytes = weights + 2 b s H a
  non-block (embedding + final norm + LM head on the last position only, as generation runs it;
  vocabulary split over tp): flops = 2 b H V / tp, bytes = V H o / tp (head) + b s H o (embedding rows) + H o
  all-reduce of each subblock's output at tp > 1 (ring): 2 (tp - 1) / tp * b s H a / interconnect
                         + ALLREDUCE_LATENCY_S

with weights = the GPU's parameter bytes. Bytes per element: weights w and KV cache k (1 at fp8,
else the dtype's), activations a and the non-GEMM tensors o (norms, embedding, head: 2 at fp8, as
FP8 checkpoints keep them in bf16; else the dtype's). fp8 runs at the device's fp8 peak.
Imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from puzzle import blocks

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "fp8": 1}
# One all-reduce's fixed cost (launch + synchronization) on NVLink; a few microseconds whatever
# the message size (NCCL's and TRT-LLM's custom all-reduce latencies at small messages).
ALLREDUCE_LATENCY_S = 5e-6


@dataclass(frozen=True)
class Device:
    name: str
    peak_tflops: float  # dense peak at 16 bits (bf16 / fp16 tensor cores)
    bandwidth_gbs: float  # GB/s (1e9 bytes)
    memory_gb: float  # GB (1e9 bytes)
    fp8_tflops: float | None = None  # dense fp8 peak; None = no fp8 tensor cores
    interconnect_gbs: float | None = None  # GPU-to-GPU GB/s per direction (NVLink), for tp > 1

    def tflops(self, dtype: str) -> float:
        if dtype == "fp8":
            if self.fp8_tflops is None:
                raise ValueError(f"analytic device {self.name!r} has no fp8 peak: give fp8_tflops in its target")
            return self.fp8_tflops
        return self.peak_tflops


# Public datasheet figures (dense tensor-core peak at bf16/fp16 and at fp8, HBM bandwidth, memory,
# NVLink bandwidth per direction; PCIe cards: the PCIe link).
DEVICES = {
    "h100_sxm": Device("h100_sxm", 989.0, 3350.0, 80.0, fp8_tflops=1979.0, interconnect_gbs=450.0),
    "h100_pcie": Device("h100_pcie", 756.0, 2000.0, 80.0, fp8_tflops=1513.0, interconnect_gbs=64.0),
    "h200": Device("h200", 989.0, 4800.0, 141.0, fp8_tflops=1979.0, interconnect_gbs=450.0),
    "b200": Device("b200", 2250.0, 8000.0, 180.0, fp8_tflops=4500.0, interconnect_gbs=900.0),
    "a100_80gb": Device("a100_80gb", 312.0, 2039.0, 80.0, interconnect_gbs=300.0),
    "rtx_4090": Device("rtx_4090", 165.0, 1008.0, 24.0, fp8_tflops=330.0, interconnect_gbs=32.0),
}


def device(name: str, peak_tflops: float | None = None, bandwidth_gbs: float | None = None,
           memory_gb: float | None = None, fp8_tflops: float | None = None,
           interconnect_gbs: float | None = None) -> Device:
    """A named device; figures given here override (or, for an unknown name, supply) the table's."""
    base = DEVICES.get(name)
    given = {"peak_tflops": peak_tflops, "bandwidth_gbs": bandwidth_gbs, "memory_gb": memory_gb,
             "fp8_tflops": fp8_tflops, "interconnect_gbs": interconnect_gbs}
    figures = {k: v if v is not None else getattr(base, k, None) for k, v in given.items()}
    missing = [k for k in ("peak_tflops", "bandwidth_gbs", "memory_gb") if figures[k] is None]
    if missing:
        raise ValueError(
            f"analytic device {name!r} is not one of {sorted(DEVICES)}: give {', '.join(missing)} in its target"
        )
    return Device(name, **figures)


@dataclass(frozen=True)
class Placement:
    """How one instance is served: its dtype and its tensor-parallel degree (GPUs per instance)."""

    dtype: str = "bfloat16"
    tp: int = 1

    def __post_init__(self) -> None:
        if self.dtype not in DTYPE_BYTES:
            raise ValueError(f"dtype {self.dtype!r}: expected one of {sorted(DTYPE_BYTES)}")
        if self.tp < 1:
            raise ValueError(f"tp = {self.tp}: expected >= 1")

    @property
    def weight_bytes(self) -> int:
        """GEMM weights (and the KV cache, which FP8 serving quantizes alike)."""
        return DTYPE_BYTES[self.dtype]

    @property
    def other_bytes(self) -> int:
        """Activations, norms, embedding and head: bf16 under fp8."""
        return 2 if self.dtype == "fp8" else DTYPE_BYTES[self.dtype]


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
    def from_config(cls, cfg: dict[str, Any]) -> Arch:
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


def _split(n: int, tp: int) -> int:
    """One GPU's share of n heads / channels over tp GPUs (replicated when tp exceeds them)."""
    return -(-n // tp)


def ffn_width(variant: str, arch: Arch, multiple: int) -> int:
    pct = blocks.ffn_pct_of(variant)
    return blocks.ffn_width(pct, arch.shape, multiple) if pct is not None else 0


def param_count(variant: str, arch: Arch, multiple: int = 256) -> int:
    """Parameters of one instance of a subblock (its norm included), or of the non-block part."""
    return sum(_params(variant, arch, multiple, 1))


def _params(variant: str, arch: Arch, multiple: int, tp: int) -> tuple[int, int]:
    """(GEMM weights, other parameters: norms, biases, embedding, head) on one GPU of tp."""
    h = arch.hidden_size
    if variant == NON_BLOCK:
        return 0, _split(arch.vocab_size, tp) * h * (1 if arch.tie_word_embeddings else 2) + h
    if variant in (blocks.ATTN_NOOP, blocks.FFN_NOOP):
        return 0, 0
    if variant in (blocks.ATTN_LINEAR, blocks.FFN_LINEAR):
        return h * _split(h, tp), h
    if blocks.kind_of(variant) == "attention":
        q = _split(arch.num_attention_heads, tp) * arch.head_dim
        kv = _split(blocks.kv_heads_of(variant), tp) * arch.head_dim
        bias = (q + 2 * kv + h) if arch.attention_bias else 0
        return 2 * h * q + 2 * h * kv, bias + h
    return swiglu_params(_split(ffn_width(variant, arch, multiple), tp), arch)


def swiglu_params(width: int, arch: Arch) -> tuple[int, int]:
    """(GEMM weights, norm and biases) of a SwiGLU FFN of this width (one GPU's share of it)."""
    h = arch.hidden_size
    return 3 * h * width, ((2 * width + h) if arch.mlp_bias else 0) + h


def param_bytes(variant: str, arch: Arch, place: Placement, multiple: int = 256) -> int:
    """Parameter bytes of one subblock instance (or the non-block part) on one GPU of the TP group."""
    gemm, other = _params(variant, arch, multiple, place.tp)
    return gemm * place.weight_bytes + other * place.other_bytes


def kv_bytes_per_token(variant: str, arch: Arch, dtype_bytes: int, tp: int = 1) -> int:
    """K and V of one token of one sequence in one instance on one GPU of tp:
    2 * ceil(n_kv / tp) * head_dim * bytes (0 without a KV cache)."""
    if variant == NON_BLOCK or blocks.kind_of(variant) != "attention":
        return 0
    return 2 * _split(blocks.kv_heads_of(variant), tp) * arch.head_dim * dtype_bytes


def prefill_work(variant: str, arch: Arch, batch: int, tokens: int, place: Placement,
                 multiple: int = 256) -> tuple[float, float]:
    """(flops, bytes) of prefilling `batch` prompts of `tokens` through one instance, on one GPU."""
    return _work(variant, arch, batch, tokens, None, place, multiple)


def decode_work(variant: str, arch: Arch, batch: int, kv_len: int, place: Placement,
                multiple: int = 256) -> tuple[float, float]:
    """(flops, bytes) of one decode step of `batch` sequences with `kv_len` cached tokens, on one GPU."""
    return _work(variant, arch, batch, 1, kv_len, place, multiple)


def _work(variant: str, arch: Arch, b: int, s: int, kv_len: int | None, place: Placement,
          multiple: int) -> tuple[float, float]:
    h, tp, a = arch.hidden_size, place.tp, place.other_bytes
    weights = param_bytes(variant, arch, place, multiple)
    if variant == NON_BLOCK:
        v = _split(arch.vocab_size, tp)
        return 2.0 * b * h * v, float(v * h * a + b * s * h * a + h * a)
    if variant in (blocks.ATTN_NOOP, blocks.FFN_NOOP):
        return 0.0, 0.0
    act = 2.0 * b * s * h * a
    if variant in (blocks.ATTN_LINEAR, blocks.FFN_LINEAR):
        return 2.0 * b * s * h * _split(h, tp), weights + act
    if blocks.kind_of(variant) == "ffn":
        return 6.0 * b * s * h * _split(ffn_width(variant, arch, multiple), tp), weights + act
    nq, d = _split(arch.num_attention_heads, tp), arch.head_dim
    q, kv = nq * d, _split(blocks.kv_heads_of(variant), tp) * d
    k = place.weight_bytes
    proj = 2.0 * b * s * h * (2 * q + 2 * kv)
    if kv_len is None:  # prefill: causal attention over the prompt, K/V written to the cache
        return proj + 2.0 * b * nq * d * s * (s + 1), weights + act + 2.0 * b * s * kv * k
    return proj + 4.0 * b * nq * d * (kv_len + 1), weights + act + 2.0 * b * (kv_len + 1) * kv * k


def allreduce_s(variant: str, arch: Arch, batch: int, tokens: int, place: Placement, dev: Device) -> float:
    """Seconds of the all-reduce after a subblock on tp > 1 GPUs (ring: 2 (tp - 1) / tp of the message)."""
    if place.tp == 1 or variant == NON_BLOCK or variant in (blocks.ATTN_NOOP, blocks.FFN_NOOP):
        return 0.0
    if dev.interconnect_gbs is None:
        raise ValueError(f"analytic device {dev.name!r} has no interconnect figure: give interconnect_gbs for tp > 1")
    message = batch * tokens * arch.hidden_size * place.other_bytes
    return 2 * (place.tp - 1) / place.tp * message / (dev.interconnect_gbs * 1e9) + ALLREDUCE_LATENCY_S


def roofline_ms(flops: float, nbytes: float, dev: Device, dtype: str = "bfloat16") -> float:
    return 1e3 * max(flops / (dev.tflops(dtype) * 1e12), nbytes / (dev.bandwidth_gbs * 1e9))


def decode_kv_len(input_len: int, output_len: int) -> int:
    """The KV length a decode step is costed at: the middle of generation (the mean over output positions)."""
    return input_len + output_len // 2


def memory_needed(arch: Arch, batch: int, input_len: int, output_len: int, place: Placement,
                  multiple: int = 256) -> tuple[int, int]:
    """(parameter bytes, KV-cache bytes) per GPU of the parent's architecture serving one batch of the
    scenario, summed over its layers (each with its own block for a Nemotron-NAS parent)."""
    params, kv_per_token = param_bytes(NON_BLOCK, arch, place), 0
    for block in arch.shape.blocks():
        attn = blocks.attention_name_of(block.attention, arch.num_attention_heads)
        params += param_bytes(attn, arch, place, multiple)
        width = block.ffn.width(arch.hidden_size)  # exact: a parent's width need not be a ffn_{pct} of its widest
        if width:
            gemm, other = swiglu_params(_split(width, place.tp), arch)
            params += gemm * place.weight_bytes + other * place.other_bytes
        else:
            params += param_bytes(blocks.ffn_name_of(block.ffn, arch.shape), arch, place, multiple)
        kv_per_token += kv_bytes_per_token(attn, arch, place.weight_bytes, place.tp)
    return params, kv_per_token * batch * (input_len + output_len)
