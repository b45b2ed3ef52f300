"""One search instance per (scenario, batch): every composition of every layer with its objective
and its costs, the parent's choice, and the conversion between targets and bounds on block sums.

Built from checked tables (`tables`); targets (`targets`) become upper bounds on the summed
resources that the MIP and the baselines see.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import numpy as np
import pandas as pd

from puzzle.blocks import ParentShape, attn_name, ffn_name
from puzzle.config import ConfigError
from puzzle.search.tables import COST_VALUES, INTERVAL_COLUMNS, METRICS
from puzzle.search.targets import RESOURCE_OF

# optional costs.csv columns (costs.py writes them): each time's interval, and measured rows noise swamps


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


def scenario_batches(
    costs: pd.DataFrame, scenario: str | None, allowed: list[int] | None = None
) -> tuple[str, list[int]]:
    """The scenario (the only one when None) and its candidate batch sizes (limited to `allowed`)."""
    names = sorted(costs["scenario"].unique())
    if scenario is None:
        if len(names) != 1:
            raise ConfigError(
                f"search.scenario = null: costs hold several scenarios {names}: expected one to be named"
            )
        scenario = names[0]
    if scenario not in names:
        raise ConfigError(f"search.scenario = {scenario!r}: expected one of the costs' scenarios {names}")
    have = sorted(costs.loc[costs["scenario"] == scenario, "batch"].unique().tolist())
    if allowed:
        unknown = sorted(set(allowed) - set(have))
        if unknown:
            raise ConfigError(
                f"search.batch_sizes = {allowed}: batches {unknown} have no costs for {scenario!r} (have {have})"
            )
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
        out = {
            k: float(rows[k].sum()) + self.non_block[k]
            for k in ("memory_bytes", "param_bytes", "time_ms", "prefill_ms", "decode_ms")
        }
        out["kv_cache_bytes"] = out["memory_bytes"] - out["param_bytes"]
        out["throughput_tok_s"] = throughput(self.batch, self.output_len, out["time_ms"])
        out["latency_ms"] = out["time_ms"]
        if "time_ms_lo" in self.options.columns:
            # the rows' intervals summed: a bound that treats their errors as fully correlated
            for b in ("lo", "hi"):
                out[f"time_ms_{b}"] = float(rows[f"time_ms_{b}"].sum()) + self.non_block[f"time_ms_{b}"]
            out["throughput_tok_s_lo"] = throughput(self.batch, self.output_len, out["time_ms_hi"])
            out["throughput_tok_s_hi"] = throughput(self.batch, self.output_len, out["time_ms_lo"])
        return out

    def objective(self, choice: np.ndarray) -> float:
        """Sum of the metric's replace-1-block change vs the parent (natural sign: kl/lm_loss up, token_acc down)."""
        return float(self.options["delta"].to_numpy()[np.asarray(choice)].sum())


def throughput(batch: int, output_len: int, time_ms: float) -> float:
    return batch * output_len / (time_ms / 1000.0) if time_ms > 0 else math.inf


def _subblock_costs(sub: pd.DataFrame, kind: str, per_layer: bool) -> pd.DataFrame:
    keys = ["variant"] + (["layer"] if per_layer else [])
    values = COST_VALUES + [c for c in INTERVAL_COLUMNS if c in sub.columns]
    rows = sub[sub["kind"] == kind][keys + values]
    # columns a_* for attention, f_* for ffn
    return rows.rename(columns={"variant": kind, **{c: f"{kind[0]}_{c}" for c in values}})


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
    bounds = all(c in sub.columns for c in INTERVAL_COLUMNS)
    for b in ("lo", "hi") if bounds else ():
        opts[f"time_ms_{b}"] = (opts[f"a_prefill_ms_{b}"] + opts[f"f_prefill_ms_{b}"]
                                + output_len * (opts[f"a_decode_ms_{b}"] + opts[f"f_decode_ms_{b}"]))
    if "noisy" in sub.columns and sub["noisy"].astype(bool).any():
        names = sorted(sub.loc[sub["noisy"].astype(bool), "variant"].astype(str).unique())
        print(f"search: warning: costs rows {names} of {scenario!r} batch {batch} are marked noisy (costs.on_noise: "
              "mark): their measured times are not clearly above 0, so the predicted speed-up is uncertain "
              "(see its interval)", file=sys.stderr)
    is_parent = ((opts["attention"] == parent[0]) & (opts["ffn"] == parent[1])).to_numpy()
    parent_choice = np.flatnonzero(is_parent)
    # lm_loss / token_acc only add up as changes vs the parent's own pair in that layer
    parent_value = opts[metric].to_numpy()[parent_choice][opts["layer"].to_numpy()]
    opts["delta"] = opts[metric] - parent_value
    opts["objective"] = -opts["delta"] if metric == "token_acc" else opts["delta"]
    nbv = sub[sub["kind"] == "non_block"].iloc[0]  # exactly one: tables.check_costs
    non_block = {
        "prefill_ms": float(nbv["prefill_ms"]),
        "decode_ms": float(nbv["decode_ms"]),
        "time_ms": float(nbv["prefill_ms"] + output_len * nbv["decode_ms"]),
        "param_bytes": float(nbv["param_bytes"]),
        "memory_bytes": float(nbv["param_bytes"] + tokens * nbv["kv_bytes_per_token"]),
    }
    for b in ("lo", "hi") if bounds else ():
        non_block[f"time_ms_{b}"] = float(nbv[f"prefill_ms_{b}"] + output_len * nbv[f"decode_ms_{b}"])
    keep = [
        "layer",
        "attention",
        "ffn",
        *METRICS,
        "delta",
        "objective",
        "prefill_ms",
        "decode_ms",
        "time_ms",
        "param_bytes",
        "memory_bytes",
    ]
    keep += ["time_ms_lo", "time_ms_hi"] if bounds else []
    return Instance(scenario, batch, input_len, output_len, metric, parent, opts[keep], non_block, parent_choice)


def resource_bounds(inst: Instance, resolved: dict[str, float]) -> dict[str, float]:
    """Absolute targets -> upper bounds on the block sums of each resource (non-block cost removed)."""
    bounds: dict[str, float] = {}
    for kind, value in resolved.items():
        if kind == "throughput":
            if inst.output_len == 0:
                raise ConfigError(
                    f"search.throughput: scenario {inst.scenario!r} has output_len 0: no throughput to bound"
                )
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
