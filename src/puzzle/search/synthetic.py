"""Synthetic score and cost tables for tests, benchmarks and demos: a Llama-70B-like parent on an
H100-like roofline at fp8, with scores that grow as a variant shrinks."""

from __future__ import annotations

import numpy as np
import pandas as pd

from puzzle.search.tables import check_costs, check_scores

SYNTH_ATTENTION = ("attn_kv8", "attn_kv4", "attn_kv2", "attn_kv1", "attn_linear", "attn_noop")
SYNTH_FFN = ("ffn_100", "ffn_87", "ffn_75", "ffn_50", "ffn_25", "ffn_20", "ffn_10", "ffn_linear", "ffn_noop")


def synthetic_tables(
    num_layers: int,
    seed: int = 0,
    attention: tuple[str, ...] = SYNTH_ATTENTION,
    ffn: tuple[str, ...] = SYNTH_FFN,
    batches: tuple[int, ...] = (1, 8, 64),
    input_len: int = 128,
    output_len: int = 1024,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Random but realistic tables for a Llama-70B-like parent on an H100-like roofline at fp8.

    Costs follow the subblock's parameters and KV heads (compute-bound prefill, bandwidth-bound
    decode); scores grow as a variant shrinks, scaled by a random per-layer sensitivity, with a
    random +-20% per composition so that neither attention nor FFN order is exact.
    """
    rng = np.random.default_rng(seed)
    hidden, heads, head_dim, inter = 8192, 64, 128, 28672
    flops, bandwidth = 1.0e15, 3.35e12  # per second

    def attn_params(v: str) -> tuple[float, int]:
        if v == "attn_noop":
            return 0.0, 0
        if v == "attn_linear":
            return float(hidden * hidden), 0
        kv = int(v.removeprefix("attn_kv"))
        return float(2 * hidden * heads * head_dim + 2 * hidden * kv * head_dim), 2 * kv * head_dim

    def ffn_params(v: str) -> float:
        fixed = {"ffn_noop": 0.0, "ffn_linear": float(hidden * hidden)}
        return fixed[v] if v in fixed else 3.0 * hidden * inter * int(v.removeprefix("ffn_")) / 100

    rows = []
    for batch in batches:
        ctx = input_len + output_len / 2  # mean context length while decoding
        for kind, names in (("attention", attention), ("ffn", ffn)):
            for v in names:
                params, kv = attn_params(v) if kind == "attention" else (ffn_params(v), 0)
                quad = 4.0 * batch * input_len**2 * hidden if kv else 0.0  # attention scores + values
                rows.append(
                    {
                        "kind": kind,
                        "variant": v,
                        "scenario": "synthetic",
                        "batch": batch,
                        "input_len": input_len,
                        "output_len": output_len,
                        "prefill_ms": 1e3 * (2 * params * batch * input_len + quad) / flops,
                        "decode_ms": 1e3 * max(2 * params * batch / flops, (params + batch * ctx * kv) / bandwidth),
                        "param_bytes": int(params),
                        "kv_bytes_per_token": kv,
                    }
                )
        emb = 2.0 * 128256 * hidden
        rows.append(
            {
                "kind": "non_block",
                "variant": "non_block",
                "scenario": "synthetic",
                "batch": batch,
                "input_len": input_len,
                "output_len": output_len,
                "prefill_ms": 1e3 * emb * batch * input_len / flops,
                "decode_ms": 1e3 * max(emb * batch / flops, emb / 2 / bandwidth),
                "param_bytes": int(emb),
                "kv_bytes_per_token": 0,
            }
        )
    costs = pd.DataFrame(rows)
    a_base = {
        "attn_kv8": 0.0,
        "attn_kv4": 0.05,
        "attn_kv2": 0.12,
        "attn_kv1": 0.25,
        "attn_linear": 0.6,
        "attn_noop": 1.0,
    }
    f_base = {
        "ffn_100": 0.0,
        "ffn_87": 0.03,
        "ffn_75": 0.08,
        "ffn_50": 0.2,
        "ffn_25": 0.5,
        "ffn_20": 0.6,
        "ffn_10": 0.8,
        "ffn_linear": 1.5,
        "ffn_noop": 2.5,
    }
    sens_a = rng.lognormal(0.0, 1.0, num_layers) * 0.1
    sens_f = rng.lognormal(0.0, 1.0, num_layers) * 0.1
    score_rows = []
    for layer in range(num_layers):
        for a in attention:
            for f in ffn:
                noise = rng.uniform(0.8, 1.2)
                kl = (
                    0.0
                    if (a, f) == (attention[0], ffn[0])
                    else noise * (sens_a[layer] * a_base.get(a, 0.5) + sens_f[layer] * f_base.get(f, 0.5))
                )
                score_rows.append(
                    {
                        "layer": layer,
                        "attention": a,
                        "ffn": f,
                        "kl": kl,
                        "lm_loss": 2.0 + 0.5 * kl * rng.uniform(0.9, 1.1),
                        "token_acc": 0.5 - 0.1 * kl * rng.uniform(0.9, 1.1),
                    }
                )
    return check_scores(pd.DataFrame(score_rows)), check_costs(costs)
