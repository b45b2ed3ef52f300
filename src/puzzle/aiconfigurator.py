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
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from puzzle import blocks
from puzzle import config as config_mod
from puzzle import cost_model as cm

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
        self._models: dict[str, Any] = {}

    @property
    def version(self) -> str:
        return str(self.database.version)

    def model_config(self) -> Any:
        from aiconfigurator_core.sdk.config import ModelConfig

        q = QUANT[self.dtype]
        c = self.common
        return ModelConfig(tp_size=self.tp, pp_size=1, gemm_quant_mode=c.GEMMQuantMode[q],
                           kvcache_quant_mode=c.KVCacheQuantMode[q], fmha_quant_mode=c.FMHAQuantMode[q])

    def model(self, hf_config: dict[str, Any], name: str) -> Any:
        """aiconfigurator's model of an HF config.json (read from a folder, as its get_model wants)."""
        from aiconfigurator_core.sdk.models import get_model

        if name not in self._models:
            folder = Path(self._dir.name) / name
            folder.mkdir()
            (folder / "config.json").write_text(json.dumps(hf_config))
            self._models[name] = get_model(str(folder), self.model_config(), self.backend_name)
        return self._models[name]

    def run(self, model: Any, batch: int, input_len: int, output_len: int) -> tuple[dict[str, float], dict[str, float]]:
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

    def layer_model(self, parent_config: dict[str, Any], attn: str, ffn: str, arch: cm.Arch, multiple: int) -> Any:
        """A one-layer Nemotron-NAS model of (attn, ffn) over the parent's globals; linear subblocks
        added as their GEMM (with the norm before and the all-reduce after it)."""
        linear = [v for v in (attn, ffn) if v in (blocks.ATTN_LINEAR, blocks.FFN_LINEAR)]
        block = {
            "attention": {"no_op": True} if attn in (blocks.ATTN_NOOP, blocks.ATTN_LINEAR)
            else {"no_op": False, "n_heads_in_group": arch.num_attention_heads // blocks.kv_heads_of(attn)},
            "ffn": {"no_op": True} if ffn in (blocks.FFN_NOOP, blocks.FFN_LINEAR)
            else {"no_op": False, "ffn_mult": _ffn_mult(ffn, arch, multiple)},
        }
        hf = {**parent_config, "architectures": ["DeciLMForCausalLM"], "model_type": "nemotron-nas",
              "num_hidden_layers": 1, "num_key_value_heads": None, "intermediate_size": None,
              "block_configs": [block]}
        hf.setdefault("max_position_embeddings", 131072)
        model = self.model(hf, f"{attn}+{ffn}")
        if linear:
            from aiconfigurator_core.sdk import operations as ops

            h, q = arch.hidden_size, self.model_config().gemm_quant_mode
            for phase, listing in (("context", model.context_ops), ("generation", model.generation_ops)):
                listing.extend([
                    ops.ElementWise(f"{phase}_linear_add_norm", 1, 2 * h, 2 * h, 0.8),
                    ops.GEMM(f"{phase}_linear_gemm", 1, h, -(-h // self.tp), q),
                    ops.CustomAllReduce(f"{phase}_linear_ar", 1, h, self.tp),
                ])
        return model


def _ffn_mult(variant: str, arch: cm.Arch, multiple: int) -> float:
    width = cm.ffn_width(variant, arch, multiple)
    mult = blocks.intermediate_size_to_ffn_mult(width, arch.hidden_size)
    if mult is None:
        raise config_mod.ConfigError(
            f"config error: search_space.ffn: {variant} is {width} channels wide, which Nemotron-NAS's ffn_mult "
            "cannot express (aiconfigurator prices widths as multiples of 256): expected search_space.ffn.multiple_of: 256"
        )
    return mult


def split(ctx: dict[str, float], gen: dict[str, float], output_len: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """((block prefill, block decode), (non-block prefill, non-block decode)) ms of one run's operations."""
    def part(d: dict[str, float], keep: bool) -> float:
        return sum(v for k, v in d.items() if (k in NON_BLOCK_OPS) == keep)

    per_step = 1 / output_len
    return (part(ctx, False), part(gen, False) * per_step), (part(ctx, True), part(gen, True) * per_step)


def aiconfigurator_rows(parent_config: dict[str, Any], arch: cm.Arch, space: dict[str, Any],
                        scen: list[dict[str, Any]], spec: dict[str, Any], target: str, multiple: int,
                        row: Callable[..., dict[str, Any]], variants: list[tuple[str, str]],
                        mem: dict[str, tuple[int, int]], log: Callable[[str], None] = print,
                        ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows of every variant x scenario x batch (row: costs._row) and what the sidecar records."""
    dtype = spec["dtype"] if spec["dtype"] != "auto" else "bfloat16"
    est = Estimator(spec["system"], spec["backend"], spec["backend_version"], dtype, spec["tp"], target)
    place = cm.Placement(dtype, spec["tp"])
    layers = {v: est.layer_model(parent_config, *((v, blocks.FFN_NOOP) if kind == "attention"
                                                 else (blocks.ATTN_NOOP, v)), arch, multiple)
              for kind, v in variants if kind != "non_block" and v not in (blocks.ATTN_NOOP, blocks.FFN_NOOP)}
    empty = est.layer_model(parent_config, blocks.ATTN_NOOP, blocks.FFN_NOOP, arch, multiple)
    device = f"{spec['system']} {spec['backend']} {est.version}"
    rows = []
    for s in scen:
        for b in s["batch_sizes"]:
            _, non_block = split(*est.run(empty, b, s["input_len"], s["output_len"]), s["output_len"])
            for kind, v in variants:
                if v == cm.NON_BLOCK:
                    pre, dec = non_block
                elif v in layers:
                    (pre, dec), _ = split(*est.run(layers[v], b, s["input_len"], s["output_len"]), s["output_len"])
                else:
                    pre = dec = 0.0
                rows.append(row(kind, v, s, b, pre, dec, mem[v], device, place))
        log(f"{s['name']}: priced by aiconfigurator")
    meta = {
        "method": "aiconfigurator-core: each subblock's operations in a one-layer Nemotron-NAS model "
                  "(linear subblocks as their GEMM), priced from measured kernel data; "
                  "decode_ms = generation phase / output_len (aiconfigurator.py)",
        "device": device, "system": spec["system"], "backend": spec["backend"], "backend_version": est.version,
        "aiconfigurator_core": version(), "dtype": dtype, "tp": spec["tp"],
        "memory_bytes": float(est.database.system_spec["gpu"]["mem_capacity"]),
    }
    return rows, meta
