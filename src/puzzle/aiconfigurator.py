"""Costs target backed by NVIDIA's aiconfigurator-core: every subblock variant's prefill and decode
time on hardware that is not at hand, from the parent's config.json alone (no weights, no GPU).

aiconfigurator-core (Apache-2.0, Python >= 3.11, the `aiconfigurator` extra) ships per-operation
timings measured on H100/H200/B200/GB200/... for TensorRT-LLM, vLLM and SGLang (GEMM, context and
generation attention, all-reduce, elementwise, embedding) and an engine that sums them over a
model's operation list, with the decode steps integrated over the growing KV cache. Its
Nemotron-NAS model (`aiconfigurator_core/sdk/models/nemotron_nas.py`) builds that list from
`block_configs`, one attention (norm, QKV GEMM, attention, output GEMM, all-reduce) and one FFN
(norm, gate/up GEMM, activation, down GEMM, all-reduce) per block, split over tp GPUs.

A variant's cost is the engine's time of its own operations in a one-layer Nemotron-NAS model that
holds only that subblock (the other one a no-op), so it is exactly its share of any child's
estimate; the non-block part (embedding, LM head) is what a model of one empty layer costs. Linear
subblocks, which aiconfigurator's model has no op for, are priced as their GEMM (H x H, row-parallel
over tp), with the norm and all-reduce an attention subblock has. Per (scenario, batch):

    prefill_ms = the engine's context phase (batch x input_len tokens)
    decode_ms  = the engine's generation phase (output_len - 1 steps after the prefill's token) / output_len

so that prefill_ms + output_len * decode_ms, summed over a child's subblocks and the non-block
part, is aiconfigurator's own request latency for the child (tests/test_aiconfigurator.py checks
it against aiconfigurator's whole-model estimates of Llama-3.1-70B and Nemotron-Super-49B).
Times are those of the TP group; memory (parameters and KV cache) is per GPU (cost_model).
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from puzzle import blocks
from puzzle import config as config_mod
from puzzle import cost_model as cm

if TYPE_CHECKING:  # an optional extra, imported where a target uses it
    from aiconfigurator_core.sdk.config import ModelConfig
    from aiconfigurator_core.sdk.models.base import BaseModel

QUANT = {"fp8": "fp8", "bfloat16": "bfloat16"}  # our dtype -> aiconfigurator's GEMM / KV / FMHA modes
NON_BLOCK_OPS = {f"{phase}_{op}" for phase in ("context", "generation") for op in ("embedding", "p2p", "logits_gemm")}
INSTALL = "pip install 'puzzle[aiconfigurator]' (aiconfigurator-core, Python >= 3.11)"


def version() -> str | None:
    """The installed aiconfigurator-core version, None when it is not installed."""
    try:
        return metadata.version("aiconfigurator-core")
    except metadata.PackageNotFoundError:
        return None


def _require(target: str) -> None:
    if version() is None:
        raise config_mod.ConfigError(
            f"config error: costs.targets.{target}: an aiconfigurator target needs aiconfigurator-core: {INSTALL}; "
            "or plan on an analytic target (device: h100_sxm, ...)"
        )


class Estimator:
    """One aiconfigurator system x backend x version x dtype x tp, pricing Nemotron-NAS layers."""

    def __init__(self, system: str, backend: str, backend_version: str | None, dtype: str, tp: int,
                 target: str = "aiconfigurator") -> None:
        _require(target)
        from aiconfigurator_core.sdk import common
        from aiconfigurator_core.sdk.backends.factory import get_backend
        from aiconfigurator_core.sdk.perf_database import get_database, get_supported_databases

        if dtype not in QUANT:
            raise config_mod.ConfigError(
                f"config error: costs.targets.{target}.dtype = {dtype!r}: expected one of {sorted(QUANT)}"
            )
        if backend not in ("trtllm", "vllm", "sglang"):
            raise config_mod.ConfigError(
                f"config error: costs.targets.{target}.backend = {backend!r}: expected trtllm, vllm or sglang"
            )
        logging.getLogger("aiconfigurator_core").setLevel(logging.ERROR)
        try:
            self.database = get_database(system, backend, backend_version or "current")
        except Exception as err:  # unknown system, unlisted version: aiconfigurator's own message
            self.database = None
            reason = f" ({str(err).splitlines()[0]})"
        else:
            reason = ""
        if self.database is None:
            have = {s: sorted(b) for s, b in get_supported_databases().items()}
            raise config_mod.ConfigError(
                f"config error: costs.targets.{target}: system {system!r}, backend {backend!r}, version "
                f"{backend_version or 'current'!r} has no aiconfigurator data{reason}: expected one of {have}"
            )
        self.system, self.backend_name, self.dtype, self.tp = system, backend, dtype, tp
        self.backend = get_backend(backend)
        self.common = common
        self._dir = tempfile.TemporaryDirectory(prefix="puzzle-aic-")
        self._models: dict[str, BaseModel] = {}

    @property
    def version(self) -> str:
        return str(self.database.version)

    def model_config(self) -> ModelConfig:
        from aiconfigurator_core.sdk.config import ModelConfig

        q = QUANT[self.dtype]
        c = self.common
        return ModelConfig(tp_size=self.tp, pp_size=1, gemm_quant_mode=c.GEMMQuantMode[q],
                           kvcache_quant_mode=c.KVCacheQuantMode[q], fmha_quant_mode=c.FMHAQuantMode[q])

    def model(self, hf_config: dict[str, Any], name: str) -> BaseModel:
        """aiconfigurator's model of an HF config.json (read from a folder, as its get_model wants)."""
        from aiconfigurator_core.sdk.models import get_model

        if name not in self._models:
            folder = Path(self._dir.name) / name
            folder.mkdir()
            (folder / "config.json").write_text(json.dumps(hf_config))
            self._models[name] = get_model(str(folder), self.model_config(), self.backend_name)
        return self._models[name]

    def run(
        self, model: BaseModel, batch: int, input_len: int, output_len: int
    ) -> tuple[dict[str, float], dict[str, float]]:
        """(context, generation) ms per operation name of one static request batch."""
        from aiconfigurator_core.sdk.config import RuntimeConfig

        summary = self.backend.run_static(model, self.database,
                                          RuntimeConfig(batch_size=batch, isl=input_len, osl=output_len), "static")
        return summary.get_context_latency_dict(), summary.get_generation_latency_dict()

    def whole_model_ms(self, hf_config: dict[str, Any], name: str, batch: int, input_len: int,
                       output_len: int) -> float:
        """aiconfigurator's own request latency (context + generation) of a whole model."""
        ctx, gen = self.run(self.model(hf_config, name), batch, input_len, output_len)
        return sum(ctx.values()) + sum(gen.values())

    def subblock_model(self, parent_config: dict[str, Any], kind: str, entry: dict[str, Any] | None) -> Any:
        """A one-layer Nemotron-NAS model over the parent's globals holding one subblock (a Nemotron-NAS
        `attention` or `ffn` entry; None = the empty layer), the other one a no-op. A linear subblock
        is added as its GEMM, with the norm before and the all-reduce after it."""
        linear = bool(entry and entry.get("replace_with_linear"))
        h = int(parent_config["hidden_size"])
        sub = {"no_op": True} if entry is None or linear or entry.get("no_op") else {"no_op": False}
        if not sub["no_op"] and kind == "attention":
            sub["n_heads_in_group"] = int(entry["n_heads_in_group"])
        if not sub["no_op"] and kind == "ffn":
            sub["ffn_mult"] = _ffn_mult(entry, h)
        block = {"attention": {"no_op": True}, "ffn": {"no_op": True}, **({kind: sub} if entry is not None else {})}
        hf = {**parent_config, "architectures": ["DeciLMForCausalLM"], "model_type": "nemotron-nas",
              "num_hidden_layers": 1, "num_key_value_heads": None, "intermediate_size": None,
              "block_configs": [block]}
        hf.setdefault("max_position_embeddings", 131072)
        model = self.model(hf, _name(kind, entry))
        if linear and not getattr(model, "_puzzle_linear", False):
            from aiconfigurator_core.sdk import operations as ops

            q = self.model_config().gemm_quant_mode
            for phase, listing in (("context", model.context_ops), ("generation", model.generation_ops)):
                listing.extend([
                    ops.ElementWise(f"{phase}_linear_add_norm", 1, 2 * h, 2 * h, 0.8),
                    ops.GEMM(f"{phase}_linear_gemm", 1, h, -(-h // self.tp), q),
                    ops.CustomAllReduce(f"{phase}_linear_ar", 1, h, self.tp),
                ])
            model._puzzle_linear = True
        return model

    def subblock_ms(self, parent_config: dict[str, Any], kind: str, entry: dict[str, Any] | None, batch: int,
                    input_len: int, output_len: int) -> tuple[tuple[float, float], tuple[float, float]]:
        """((prefill, decode) of the subblock, (prefill, decode) of the non-block part) in ms (see split)."""
        if entry is not None and entry.get("no_op"):
            model = self.subblock_model(parent_config, kind, None)
            return (0.0, 0.0), split(*self.run(model, batch, input_len, output_len), output_len)[1]
        model = self.subblock_model(parent_config, kind, entry)
        return split(*self.run(model, batch, input_len, output_len), output_len)


def _name(kind: str, entry: dict[str, Any] | None) -> str:
    """A folder name for one subblock's model (aiconfigurator caches engines by the model's path)."""
    if entry is None:
        return "empty"
    return kind + "-" + "-".join(f"{k}={entry[k]}" for k in sorted(entry) if entry[k] not in (None, False))


def _ffn_mult(entry: dict[str, Any], hidden_size: int) -> float:
    """The entry's ffn_mult (aiconfigurator's Nemotron-NAS model reads widths only through it)."""
    if entry.get("ffn_mult") is not None:
        return float(entry["ffn_mult"])
    width = int(entry["intermediate_size"])
    mult = blocks.intermediate_size_to_ffn_mult(width, hidden_size)
    if mult is None:
        raise config_mod.ConfigError(
            f"config error: search_space.ffn: an FFN {width} channels wide cannot be written as Nemotron-NAS's "
            "ffn_mult, which aiconfigurator prices (widths are multiples of 256): "
            "expected search_space.ffn.multiple_of: 256"
        )
    return mult


def split(
    ctx: dict[str, float], gen: dict[str, float], output_len: int
) -> tuple[tuple[float, float], tuple[float, float]]:
    """((block prefill, block decode), (non-block prefill, non-block decode)) ms of one run's operations."""

    def part(d: dict[str, float], keep: bool) -> float:
        return sum(v for k, v in d.items() if (k in NON_BLOCK_OPS) == keep)

    per_step = 1 / output_len
    return (part(ctx, False), part(gen, False) * per_step), (part(ctx, True), part(gen, True) * per_step)


def aiconfigurator_rows(
    parent_config: dict[str, Any],
    arch: cm.Arch,
    space: dict[str, Any],
    scen: list[dict[str, Any]],
    spec: dict[str, Any],
    target: str,
    multiple: int,
    row: Callable[..., dict[str, Any]],
    variants: list[tuple[str, str]],
    mem: dict[str, tuple[int, int]],
    log: Callable[[str], None] = print,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows of every variant x scenario x batch (row: costs._row) and what the sidecar records."""
    dtype = spec["dtype"] if spec["dtype"] != "auto" else "bfloat16"
    est = Estimator(spec["system"], spec["backend"], spec["backend_version"], dtype, spec["tp"], target)
    place = cm.Placement(dtype, spec["tp"])
    device = f"{spec['system']} {spec['backend']} {est.version}"
    rows = []
    for s in scen:
        for b in s["batch_sizes"]:
            args = (b, s["input_len"], s["output_len"])
            _, non_block = est.subblock_ms(parent_config, "attention", None, *args)
            for kind, v in variants:
                if v == cm.NON_BLOCK:
                    pre, dec = non_block
                else:
                    entry = (
                        blocks.attention_config(v, arch.shape)
                        if kind == "attention"
                        else blocks.ffn_config(v, arch.shape, multiple)
                    ).to_dict()
                    (pre, dec), _ = est.subblock_ms(parent_config, kind, entry, *args)
                rows.append(row(kind, v, s, b, pre, dec, mem[v], device, place))
        log(f"{s['name']}: priced by aiconfigurator")
    meta = {
        "method": "aiconfigurator-core: each subblock's operations in a one-layer Nemotron-NAS model "
        "(linear subblocks as their GEMM), priced from measured kernel data; "
        "decode_ms = generation phase / output_len (aiconfigurator.py)",
        "device": device,
        "system": spec["system"],
        "backend": spec["backend"],
        "backend_version": est.version,
        "aiconfigurator_core": version(),
        "dtype": dtype,
        "tp": spec["tp"],
        "memory_bytes": float(est.database.system_spec["gpu"]["mem_capacity"]),
    }
    return rows, meta


def summed_ms(
    est: Estimator,
    parent_config: dict[str, Any],
    block_configs: list[dict[str, Any]],
    batch: int,
    input_len: int,
    output_len: int,
) -> float:
    """A whole architecture's request latency as the costs table predicts it: the non-block part plus
    every layer's attention and FFN, each priced alone (prefill + output_len x decode)."""
    total, non_block = 0.0, None
    for block in block_configs:
        for kind in ("attention", "ffn"):
            (pre, dec), non_block = est.subblock_ms(parent_config, kind, block[kind], batch, input_len, output_len)
            total += pre + output_len * dec
    return total + non_block[0] + output_len * non_block[1]
