"""Search inputs: score and cost tables -> one search instance per (scenario, batch); targets.

The artifact contract:

    scores.csv  layer, attention, ffn, kl, lm_loss, token_acc     (one row per composition)
    costs.csv   kind, variant, scenario, batch, input_len, output_len, prefill_ms, decode_ms,
                param_bytes, kv_bytes_per_token [, layer, device, dtype]

A layer with (a, f) takes prefill(a) + prefill(f) + output_len * (decode(a) + decode(f)) ms and
holds param_bytes + batch * (input_len + output_len) * kv_bytes_per_token bytes; the `non_block`
row (embeddings, final norm, LM head) is added once. Throughput = batch * output_len / time.

Also converts the block library that the paper's authors published with their MIP demo
(NVlabs/puzzle, `block_library.json` + `measurement_info.json`) into these tables.
No torch here: the search plans from tables alone.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from puzzle.blocks import ATTN_LINEAR, ATTN_NOOP, FFN_LINEAR, FFN_NOOP, ParentShape, attn_name, ffn_name
from puzzle.config import ConfigError

METRICS = ("kl", "lm_loss", "token_acc")
SCORE_COLUMNS = ["layer", "attention", "ffn", *METRICS]
COST_COLUMNS = [
    "kind", "variant", "scenario", "batch", "input_len", "output_len",
    "prefill_ms", "decode_ms", "param_bytes", "kv_bytes_per_token",
]
COST_VALUES = ["prefill_ms", "decode_ms", "param_bytes", "kv_bytes_per_token"]
TARGET_KINDS = ("throughput", "memory", "latency")
# The resource (a per-option cost summed over layers) that each kind of target bounds.
RESOURCE_OF = {"throughput": "time", "latency": "time", "memory": "memory"}
UNIT_OF = {"throughput": "tok/s", "memory": "bytes", "latency": "ms"}


def _read_csv(path: str | Path, what: str) -> pd.DataFrame:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{what}: file {str(p)!r} does not exist")
    return pd.read_csv(p)


def _require(frame: pd.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ConfigError(f"{what}: missing columns {missing}: expected {columns}")


def check_scores(scores: pd.DataFrame) -> pd.DataFrame:
    """Typed, sorted copy of a scores table; one-line errors for what the search cannot use."""
    _require(scores, SCORE_COLUMNS, "scores")
    s = scores[SCORE_COLUMNS].copy()
    s["layer"] = s["layer"].astype(int)
    s[["attention", "ffn"]] = s[["attention", "ffn"]].astype(str)
    dup = s.duplicated(["layer", "attention", "ffn"])
    if dup.any():
        row = s[dup].iloc[0]
        raise ConfigError(f"scores: duplicate row for layer {row.layer} {row.attention}+{row.ffn}")
    layers = sorted(s["layer"].unique())
    if layers != list(range(len(layers))):
        gaps = sorted(set(range(max(layers) + 1)) - set(layers)) if layers else []
        raise ConfigError(f"scores: layers = {layers[:5]}...: expected 0..L-1 without gaps (missing {gaps[:5]})")
    return s.sort_values(["layer", "attention", "ffn"], kind="stable").reset_index(drop=True)


def check_costs(costs: pd.DataFrame) -> pd.DataFrame:
    _require(costs, COST_COLUMNS, "costs")
    c = costs.copy()
    bad = set(c["kind"]) - {"attention", "ffn", "non_block"}
    if bad:
        raise ConfigError(f"costs: kind = {sorted(bad)[0]!r}: expected attention, ffn or non_block")
    c["scenario"] = c["scenario"].astype(str)
    for col in ("batch", "input_len", "output_len"):
        c[col] = c[col].astype(int)
    for col in COST_VALUES:
        c[col] = c[col].astype(float)
        if (c[col] < 0).any() or c[col].isna().any():
            raise ConfigError(f"costs: column {col} has negative or missing values: expected numbers >= 0")
    for col in ("param_bytes", "kv_bytes_per_token"):
        if (c[col] % 1 != 0).any():
            raise ConfigError(f"costs: column {col} = {c.loc[c[col] % 1 != 0, col].iloc[0]}: expected whole bytes")
        c[col] = c[col].astype(np.int64)
    if "layer" in c.columns:
        # non_block rows carry no layer; block rows must
        blocks = c["kind"] != "non_block"
        if c.loc[blocks, "layer"].isna().any():
            raise ConfigError("costs: column layer is empty in some attention/ffn rows: expected a layer per row or no layer column")
        c["layer"] = c["layer"].fillna(-1).astype(int)
    key = ["kind", "variant", "scenario", "batch"] + (["layer"] if "layer" in c.columns else [])
    dup = c.duplicated(key)
    if dup.any():
        raise ConfigError(f"costs: duplicate row {dict(c.loc[dup, key].iloc[0])}: expected one row per {key}")
    lens = c.groupby(["scenario", "batch"])[["input_len", "output_len"]].nunique()
    if (lens > 1).any().any():
        raise ConfigError(f"costs: scenario {lens[(lens > 1).any(axis=1)].index[0]} has several input/output lengths")
    return c


def load_scores(path: str | Path) -> pd.DataFrame:
    return check_scores(_read_csv(path, "scores"))


def load_costs(path: str | Path) -> pd.DataFrame:
    return check_costs(_read_csv(path, "costs"))


def parent_pair(scores: pd.DataFrame, parent: ParentShape | None = None) -> tuple[str, str]:
    """The parent's (attention, ffn): from its shape, else the pair scoring kl = 0 in every layer."""
    num_layers = scores["layer"].nunique()
    if parent is not None:
        pair = (attn_name(parent.num_key_value_heads), ffn_name(100))
    else:
        zero = scores[scores["kl"] == 0].groupby(["attention", "ffn"])["layer"].nunique()
        pairs = list(zero[zero == num_layers].index)
        if len(pairs) != 1:
            raise ConfigError(
                f"scores: {len(pairs)} (attention, ffn) pairs score kl = 0 in every layer {pairs[:3]}: "
                "expected exactly one (the parent's); pass the parent's config.json"
            )
        pair = pairs[0]
    have = scores[(scores["attention"] == pair[0]) & (scores["ffn"] == pair[1])]["layer"].nunique()
    if have != num_layers:
        raise ConfigError(f"scores: the parent's pair {pair[0]}+{pair[1]} is missing in {num_layers - have} layers")
    return pair


def scenario_batches(costs: pd.DataFrame, scenario: str | None, allowed: list[int] | None = None) -> tuple[str, list[int]]:
    """The scenario (the only one when None) and its candidate batch sizes (limited to `allowed`)."""
    names = sorted(costs["scenario"].unique())
    if scenario is None:
        if len(names) != 1:
            raise ConfigError(f"search.scenario = null: costs hold several scenarios {names}: expected one to be named")
        scenario = names[0]
    if scenario not in names:
        raise ConfigError(f"search.scenario = {scenario!r}: expected one of the costs' scenarios {names}")
    have = sorted(costs.loc[costs["scenario"] == scenario, "batch"].unique().tolist())
    if allowed:
        unknown = sorted(set(allowed) - set(have))
        if unknown:
            raise ConfigError(f"search.batch_sizes = {allowed}: batches {unknown} have no costs for {scenario!r} (have {have})")
        have = sorted(set(allowed))
    return scenario, [int(b) for b in have]


@dataclass
class Instance:
    """One search problem: every composition of every layer with its objective and its costs at
    one (scenario, batch). Option i is row i of `options` (rows sorted by layer, the same order
    for every batch, so a choice of option indices means the same architecture at every batch)."""

    scenario: str
    batch: int
    input_len: int
    output_len: int
    metric: str
    parent: tuple[str, str]
    options: pd.DataFrame  # layer, attention, ffn, metrics, objective (minimized), costs
    non_block: dict[str, float]
    parent_choice: np.ndarray  # option index of the parent's pair in each layer

    @property
    def num_layers(self) -> int:
        return len(self.parent_choice)

    @property
    def group(self) -> np.ndarray:
        return self.options["layer"].to_numpy()

    def resource(self, name: str) -> np.ndarray:
        return self.options[{"time": "time_ms", "memory": "memory_bytes"}[name]].to_numpy()

    def totals(self, choice: np.ndarray) -> dict[str, float]:
        """Whole-model costs of an architecture (block sums + non-block), throughput and latency."""
        rows = self.options.iloc[np.asarray(choice)]
        out = {k: float(rows[k].sum()) + self.non_block[k] for k in ("memory_bytes", "param_bytes", "time_ms", "prefill_ms", "decode_ms")}
        out["kv_cache_bytes"] = out["memory_bytes"] - out["param_bytes"]
        out["throughput_tok_s"] = throughput(self.batch, self.output_len, out["time_ms"])
        out["latency_ms"] = out["time_ms"]
        return out

    def objective(self, choice: np.ndarray) -> float:
        """Sum of the metric's replace-1-block change vs the parent (natural sign: kl/lm_loss up, token_acc down)."""
        return float(self.options["delta"].to_numpy()[np.asarray(choice)].sum())


def throughput(batch: int, output_len: int, time_ms: float) -> float:
    return batch * output_len / (time_ms / 1000.0) if time_ms > 0 else math.inf


def _subblock_costs(sub: pd.DataFrame, kind: str, per_layer: bool) -> pd.DataFrame:
    keys = ["variant"] + (["layer"] if per_layer else [])
    rows = sub[sub["kind"] == kind][keys + COST_VALUES]
    # columns a_* for attention, f_* for ffn
    return rows.rename(columns={"variant": kind, **{c: f"{kind[0]}_{c}" for c in COST_VALUES}})


def build_instance(
    scores: pd.DataFrame, costs: pd.DataFrame, scenario: str, batch: int, metric: str, parent: tuple[str, str]
) -> Instance:
    """Join every composition of `scores` with its subblocks' costs at (scenario, batch)."""
    if metric not in METRICS:
        raise ConfigError(f"search.metric = {metric!r}: expected one of {list(METRICS)}")
    if scores[metric].isna().any():
        raise ConfigError(f"scores: column {metric} has missing values: metric {metric!r} cannot be used")
    sub = costs[(costs["scenario"] == scenario) & (costs["batch"] == batch)]
    if sub.empty:
        raise ConfigError(f"costs: no rows for scenario {scenario!r} at batch {batch}")
    input_len, output_len = int(sub["input_len"].iloc[0]), int(sub["output_len"].iloc[0])
    per_layer = "layer" in sub.columns
    opts = scores.copy()
    for kind in ("attention", "ffn"):
        table = _subblock_costs(sub, kind, per_layer)
        on = [kind] + (["layer"] if per_layer else [])
        opts = opts.merge(table, on=on, how="left", validate="many_to_one")
        lost = opts[opts[kind[0] + "_prefill_ms"].isna()]
        if not lost.empty:
            r = lost.iloc[0]
            where = f" layer {r.layer}" if per_layer else ""
            raise ConfigError(f"costs: no {kind} row for {r[kind]!r}{where} in scenario {scenario!r} batch {batch}")
    tokens = batch * (input_len + output_len)
    opts["prefill_ms"] = opts["a_prefill_ms"] + opts["f_prefill_ms"]
    opts["decode_ms"] = opts["a_decode_ms"] + opts["f_decode_ms"]
    opts["time_ms"] = opts["prefill_ms"] + output_len * opts["decode_ms"]
    opts["param_bytes"] = opts["a_param_bytes"] + opts["f_param_bytes"]
    opts["memory_bytes"] = opts["param_bytes"] + tokens * (opts["a_kv_bytes_per_token"] + opts["f_kv_bytes_per_token"])
    is_parent = ((opts["attention"] == parent[0]) & (opts["ffn"] == parent[1])).to_numpy()
    parent_choice = np.flatnonzero(is_parent)
    # lm_loss / token_acc only add up as changes vs the parent's own pair in that layer
    parent_value = opts[metric].to_numpy()[parent_choice][opts["layer"].to_numpy()]
    opts["delta"] = opts[metric] - parent_value
    opts["objective"] = -opts["delta"] if metric == "token_acc" else opts["delta"]
    nb = sub[sub["kind"] == "non_block"]
    if len(nb) > 1:
        raise ConfigError(f"costs: {len(nb)} non_block rows for scenario {scenario!r} batch {batch}: expected one")
    if nb.empty:
        print(f"search: costs have no non_block row for {scenario!r} batch {batch}; counting it as 0", file=sys.stderr)
    nbv = {c: float(nb[c].iloc[0]) if len(nb) else 0.0 for c in COST_VALUES}
    non_block = {
        "prefill_ms": nbv["prefill_ms"],
        "decode_ms": nbv["decode_ms"],
        "time_ms": nbv["prefill_ms"] + output_len * nbv["decode_ms"],
        "param_bytes": nbv["param_bytes"],
        "memory_bytes": nbv["param_bytes"] + tokens * nbv["kv_bytes_per_token"],
    }
    keep = ["layer", "attention", "ffn", *METRICS, "delta", "objective", "prefill_ms", "decode_ms", "time_ms", "param_bytes", "memory_bytes"]
    return Instance(scenario, batch, input_len, output_len, metric, parent, opts[keep], non_block, parent_choice)


# ---- targets -----------------------------------------------------------------------------------

_SIZE = {"": 1, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_NUMBER = r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
_UNIT_RE = {
    "memory": (re.compile(rf"^{_NUMBER}\s*([kmgt]i?b|b)?$", re.I), "bytes or a size like 80GiB / 512MiB / 40GB"),
    "throughput": (re.compile(rf"^{_NUMBER}\s*(tok/s|tokens/s)?$", re.I), "tokens/s like 5000 or '5000 tok/s'"),
    "latency": (re.compile(rf"^{_NUMBER}\s*(ms|s)?$", re.I), "milliseconds like 250, '250ms' or '0.25s'"),
}
_RELATIVE = re.compile(rf"^{_NUMBER}\s*[x\u00d7]$", re.I)


@dataclass(frozen=True)
class Target:
    """One requested budget: absolute (tok/s, bytes, ms) or a factor of the parent's value."""

    kind: str
    value: float
    relative: bool
    text: str

    def resolve(self, parent_totals: dict[str, float]) -> float:
        """Absolute value: throughput in tok/s, memory in bytes, latency in ms."""
        if not self.relative:
            return self.value
        key = {"throughput": "throughput_tok_s", "memory": "memory_bytes", "latency": "latency_ms"}[self.kind]
        return self.value * parent_totals[key]

    @property
    def resource(self) -> str:
        return RESOURCE_OF[self.kind]


def parse_target(kind: str, value: Any) -> Target | None:
    """'2.0x' (relative to the parent), '80GiB' / bytes (memory), tok/s (throughput), ms (latency)."""
    if value is None:
        return None
    if kind not in TARGET_KINDS:
        raise ConfigError(f"unknown target kind {kind!r}: expected one of {list(TARGET_KINDS)}")
    pattern, expected = _UNIT_RE[kind]
    text = str(value).strip()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number, relative = float(value), False
    elif m := _RELATIVE.match(text):
        number, relative = float(m.group(1)), True
    elif m := pattern.match(text):
        unit = (m.group(2) or "").lower()
        scale = _SIZE[unit] if kind == "memory" else (1000.0 if unit == "s" else 1.0)
        number, relative = float(m.group(1)) * scale, False
    else:
        raise ConfigError(f"search.{kind} = {text!r}: expected {expected}, or a factor of the parent like 2x")
    if not number > 0 or not math.isfinite(number):
        raise ConfigError(f"search.{kind} = {text!r}: expected a positive value")
    return Target(kind, number, relative, text)


def resource_bounds(inst: Instance, resolved: dict[str, float]) -> dict[str, float]:
    """Absolute targets -> upper bounds on the block sums of each resource (non-block cost removed)."""
    bounds: dict[str, float] = {}
    for kind, value in resolved.items():
        if kind == "throughput":
            if inst.output_len == 0:
                raise ConfigError(f"search.throughput: scenario {inst.scenario!r} has output_len 0: no throughput to bound")
            total = inst.batch * inst.output_len * 1000.0 / value
        else:
            total = value
        res = RESOURCE_OF[kind]
        block = total - inst.non_block[{"time": "time_ms", "memory": "memory_bytes"}[res]]
        bounds[res] = min(bounds.get(res, math.inf), block)
    return bounds


def threshold_value(inst: Instance, kind: str, block_sum: float) -> float:
    """A block sum of `kind`'s resource -> the target value it corresponds to (inverse of resource_bounds)."""
    total = block_sum + inst.non_block[{"time": "time_ms", "memory": "memory_bytes"}[RESOURCE_OF[kind]]]
    return throughput(inst.batch, inst.output_len, total) if kind == "throughput" else total


# ---- the NVlabs/puzzle block library -------------------------------------------------------------

_BYTES_PER_PARAM = {"fp8": 1, "int8": 1, "bf16": 2, "bfloat16": 2, "fp16": 2, "float16": 2, "fp32": 4, "float32": 4}
_PCT = re.compile(r"\(parent \* (\d+)%\)")
_LAYER = re.compile(r"^layer_(\d+)$")


def _nvlabs_variant(kind: str, text: str, stats: dict[str, Any]) -> str:
    """'attention = 8 kv heads (parent * 100%)' -> attn_kv8; 'ffn = intermediate size 14e3 (parent * 50%)' -> ffn_50."""
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
                score_rows.append({"layer": layer, "attention": attn, "ffn": ffn, "kl": float(metrics["kl_div"]),
                                   "lm_loss": float(metrics.get("lm_loss", math.nan)), "token_acc": math.nan})
                for kind, variant in (("attention", attn), ("ffn", ffn)):
                    mem = int(round(float(stats[f"{kind}_memory_mib"]) * 2**20))
                    params = int(stats[f"{kind}_num_params"]) * (per_param or 0)
                    kv = (mem - params) // (batch * seq) if kind == "attention" and per_param else 0
                    row = {"prefill_ms": float(stats[f"{kind}_runtime_ms"]), "param_bytes": mem - kv * batch * seq, "kv_bytes_per_token": kv}
                    old = cost_rows.setdefault((kind, variant, layer), row)
                    if old != row:
                        raise ConfigError(f"nvlabs library: layer {layer} {kind} {variant}: different stats in different blocks")
            except (KeyError, ValueError, AttributeError) as e:
                raise ConfigError(f"nvlabs library: {layer_key} / {name!r}: expected stats and metrics as in NVlabs/puzzle ({e})") from None
    scores = check_scores(pd.DataFrame(score_rows))
    base = {"scenario": "nvlabs", "batch": batch, "input_len": 0, "output_len": seq, "decode_ms": 0.0,
            "device": measurement.get("gpu", ""), "dtype": dtype}
    rows = [{"kind": k, "variant": v, "layer": layer, **base, **r} for (k, v, layer), r in sorted(cost_rows.items())]
    rows.append({"kind": "non_block", "variant": "non_block", "layer": -1, **base,
                 "prefill_ms": 0.0, "param_bytes": 0, "kv_bytes_per_token": 0})
    costs = check_costs(pd.DataFrame(rows)[COST_COLUMNS + ["layer", "device", "dtype"]])
    return scores, costs


# ---- synthetic tables (tests, benchmarks, demos) -------------------------------------------------

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
                rows.append({
                    "kind": kind, "variant": v, "scenario": "synthetic", "batch": batch,
                    "input_len": input_len, "output_len": output_len,
                    "prefill_ms": 1e3 * (2 * params * batch * input_len + quad) / flops,
                    "decode_ms": 1e3 * max(2 * params * batch / flops, (params + batch * ctx * kv) / bandwidth),
                    "param_bytes": int(params), "kv_bytes_per_token": kv,
                })
        emb = 2.0 * 128256 * hidden
        rows.append({"kind": "non_block", "variant": "non_block", "scenario": "synthetic", "batch": batch,
                     "input_len": input_len, "output_len": output_len,
                     "prefill_ms": 1e3 * emb * batch * input_len / flops,
                     "decode_ms": 1e3 * max(emb * batch / flops, emb / 2 / bandwidth),
                     "param_bytes": int(emb), "kv_bytes_per_token": 0})
    costs = pd.DataFrame(rows)
    a_base = {"attn_kv8": 0.0, "attn_kv4": 0.05, "attn_kv2": 0.12, "attn_kv1": 0.25, "attn_linear": 0.6, "attn_noop": 1.0}
    f_base = {"ffn_100": 0.0, "ffn_87": 0.03, "ffn_75": 0.08, "ffn_50": 0.2, "ffn_25": 0.5, "ffn_20": 0.6,
              "ffn_10": 0.8, "ffn_linear": 1.5, "ffn_noop": 2.5}
    sens_a = rng.lognormal(0.0, 1.0, num_layers) * 0.1
    sens_f = rng.lognormal(0.0, 1.0, num_layers) * 0.1
    score_rows = []
    for layer in range(num_layers):
        for a in attention:
            for f in ffn:
                noise = rng.uniform(0.8, 1.2)
                kl = 0.0 if (a, f) == (attention[0], ffn[0]) else noise * (sens_a[layer] * a_base.get(a, 0.5) + sens_f[layer] * f_base.get(f, 0.5))
                score_rows.append({"layer": layer, "attention": a, "ffn": f, "kl": kl,
                                   "lm_loss": 2.0 + 0.5 * kl * rng.uniform(0.9, 1.1),
                                   "token_acc": 0.5 - 0.1 * kl * rng.uniform(0.9, 1.1)})
    return check_scores(pd.DataFrame(score_rows)), check_costs(costs)
