"""The block library that the paper's authors published with their MIP demo (NVlabs/puzzle,
`block_library.json` + `measurement_info.json`), converted into our score and cost tables."""

from __future__ import annotations

import math
import re
from typing import Any

import pandas as pd

from puzzle.blocks import ATTN_LINEAR, ATTN_NOOP, FFN_LINEAR, FFN_NOOP, attn_name, ffn_name
from puzzle.config import ConfigError
from puzzle.search.tables import COST_COLUMNS, check_costs, check_scores

_BYTES_PER_PARAM = {"fp8": 1, "int8": 1, "bf16": 2, "bfloat16": 2, "fp16": 2, "float16": 2, "fp32": 4, "float32": 4}
_PCT = re.compile(r"\(parent \* (\d+)%\)")
_LAYER = re.compile(r"^layer_(\d+)$")


def _nvlabs_variant(kind: str, text: str, stats: dict[str, Any]) -> str:
    """'attention = 8 kv heads (parent * 100%)' -> attn_kv8;
    'ffn = intermediate size 14e3 (parent * 50%)' -> ffn_50."""
    if "no_op" in text:
        return ATTN_NOOP if kind == "attention" else FFN_NOOP
    if "linear" in text:
        return ATTN_LINEAR if kind == "attention" else FFN_LINEAR
    if kind == "attention":
        return attn_name(int(stats["num_kv_heads"]))
    m = _PCT.search(text)
    if not m:
        raise ConfigError(f"nvlabs library: cannot read the FFN width of {text!r}: expected '(parent * N%)'")
    return ffn_name(int(m.group(1)))


def nvlabs_tables(library: dict[str, Any], measurement: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """NVlabs `block_library.json` + `measurement_info.json` -> (scores, costs) tables.

    The library measures each block for the whole batch x sequence workload, and its throughput is
    batch * sequence_length / sum(runtime_ms). So the single scenario `nvlabs` has input_len 0,
    output_len = sequence_length and runtime as prefill time (decode 0): our formulas then give
    the library's own throughput and memory. memory_mib includes the KV cache at the measured
    batch; the part above the parameters (num_params x bytes of the dtype) becomes
    kv_bytes_per_token (floored to whole bytes, the remainder kept in param_bytes so each
    subblock's memory is exactly the library's).
    """
    try:
        batch, seq = int(measurement["batch_size"]), int(measurement["sequence_length"])
    except (KeyError, TypeError, ValueError):
        raise ConfigError("nvlabs measurement_info: expected integer keys batch_size and sequence_length") from None
    dtype = str(measurement.get("dtype", ""))
    per_param = _BYTES_PER_PARAM.get(dtype.lower())
    score_rows, cost_rows = [], {}
    for layer_key, variants in library.items():
        m = _LAYER.match(str(layer_key))
        if not m or not isinstance(variants, dict):
            raise ConfigError(f"nvlabs library: key {layer_key!r}: expected layer_<i> mapping to block variants")
        layer = int(m.group(1))
        for name, entry in variants.items():
            try:
                attn_text, ffn_text = (t.strip() for t in name.split("&&"))
                stats, metrics = entry["stats"], entry["metrics"]
                attn, ffn = _nvlabs_variant("attention", attn_text, stats), _nvlabs_variant("ffn", ffn_text, stats)
                score_rows.append(
                    {
                        "layer": layer,
                        "attention": attn,
                        "ffn": ffn,
                        "kl": float(metrics["kl_div"]),
                        "lm_loss": float(metrics.get("lm_loss", math.nan)),
                        "token_acc": math.nan,
                    }
                )
                for kind, variant in (("attention", attn), ("ffn", ffn)):
                    mem = int(round(float(stats[f"{kind}_memory_mib"]) * 2**20))
                    params = int(stats[f"{kind}_num_params"]) * (per_param or 0)
                    kv = (mem - params) // (batch * seq) if kind == "attention" and per_param else 0
                    row = {
                        "prefill_ms": float(stats[f"{kind}_runtime_ms"]),
                        "param_bytes": mem - kv * batch * seq,
                        "kv_bytes_per_token": kv,
                    }
                    old = cost_rows.setdefault((kind, variant, layer), row)
                    if old != row:
                        raise ConfigError(
                            f"nvlabs library: layer {layer} {kind} {variant}: different stats in different blocks"
                        )
            except (KeyError, ValueError, AttributeError) as e:
                raise ConfigError(
                    f"nvlabs library: {layer_key} / {name!r}: expected stats and metrics as in NVlabs/puzzle ({e})"
                ) from None
    scores = check_scores(pd.DataFrame(score_rows))
    base = {
        "scenario": "nvlabs",
        "batch": batch,
        "input_len": 0,
        "output_len": seq,
        "decode_ms": 0.0,
        "device": measurement.get("gpu", ""),
        "dtype": dtype,
    }
    rows = [{"kind": k, "variant": v, "layer": layer, **base, **r} for (k, v, layer), r in sorted(cost_rows.items())]
    rows.append(
        {
            "kind": "non_block",
            "variant": "non_block",
            "layer": -1,
            **base,
            "prefill_ms": 0.0,
            "param_bytes": 0,
            "kv_bytes_per_token": 0,
        }
    )
    costs = check_costs(pd.DataFrame(rows)[COST_COLUMNS + ["layer", "device", "dtype"]])
    return scores, costs
