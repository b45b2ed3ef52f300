"""Baselines of the paper's ablations: never better than the MIP, and each what it claims to be."""

import itertools

import numpy as np
import pandas as pd
import pytest

from puzzle.blocks import ATTN_NOOP, FFN_NOOP
from puzzle.search import baselines
from puzzle.search.instance import build_instance, resource_bounds
from puzzle.search.mip import Mip
from puzzle.search.solve import MIP_METHODS, InfeasibleError, Search
from puzzle.search.synthetic import synthetic_tables
from puzzle.search.tables import check_costs, check_scores
from puzzle.search.targets import parse_target

TOL = 1e-9
TARGETS = [
    {"throughput": "1.5x"},
    {"memory": "0.7x"},
    {"throughput": "2x", "memory": "0.8x"},
    {"latency": "0.6x", "memory": "0.9x"},
]


def targets_of(spec):
    return {k: parse_target(k, v) for k, v in spec.items()}


@pytest.fixture(scope="module")
def tables():
    return synthetic_tables(10, seed=11)


@pytest.fixture(scope="module")
def search(tables):
    scores, costs = tables
    return Search(scores, costs, kinds={"throughput", "memory", "latency"})


@pytest.mark.parametrize("spec", TARGETS)
def test_baselines_never_beat_the_mip(search, spec):
    targets = targets_of(spec)
    mip = search.run(targets)[0]
    most_params = search.run(targets, method="max_params")[0]["costs"]["param_bytes"]
    for method in ("greedy", "noop_only", "max_params", "random", "homogeneous"):
        try:
            rec = search.run(targets, method=method, random_samples=20_000)[0]
        except InfeasibleError:
            continue  # a baseline may find nothing where the MIP does
        assert rec["method"] == method and rec["verified"]
        assert rec["objective"] >= mip["objective"] - TOL, method
        assert rec["costs"]["param_bytes"] <= most_params


def test_token_acc_baselines_never_beat_the_mip(tables):
    scores, costs = tables
    search = Search(scores, costs, metric="token_acc", batch_sizes=[8], kinds={"throughput"})
    targets = targets_of({"throughput": "1.6x"})
    best = search.run(targets)[0]["objective"]
    for method in ("greedy", "random", "homogeneous", "noop_only"):
        assert search.run(targets, method=method)[0]["objective"] <= best + TOL


def test_noop_only_uses_parent_and_noop_subblocks_and_is_optimal_there(search):
    targets = targets_of({"throughput": "1.5x"})
    rec = search.run(targets, method="noop_only")[0]
    assert {x["attention"] for x in rec["layers"]} <= {"attn_kv8", ATTN_NOOP}
    assert {x["ffn"] for x in rec["layers"]} <= {"ffn_100", FFN_NOOP}
    inst = search.instances[rec["scenario"]["batch"]]
    mask = baselines.noop_only_mask(inst)
    bounds = resource_bounds(inst, search.resolve(targets, rec["scenario"]["batch"]))
    # brute force over the 4 compositions per layer of the no-op-only space (10 layers: 4**10 points)
    obj, time_ms = inst.options["objective"].to_numpy(), inst.resource("time")
    per_layer = [np.flatnonzero(mask & (inst.group == i)) for i in range(inst.num_layers)]
    combos = np.array(list(itertools.product(*per_layer)))
    ok = time_ms[combos].sum(1) <= bounds["time"]
    assert rec["objective"] == pytest.approx(obj[combos[ok]].sum(1).min(), abs=TOL)


def test_max_params_maximizes_parameters():
    scores, costs = synthetic_tables(
        4, seed=2, attention=("attn_kv8", "attn_kv1", "attn_noop"), ffn=("ffn_100", "ffn_25", "ffn_noop")
    )
    search = Search(scores, costs, batch_sizes=[8], kinds={"throughput"})
    targets = targets_of({"throughput": "2x"})
    rec = search.run(targets, method="max_params")[0]
    inst = search.instances[8]
    bounds = resource_bounds(inst, search.resolve(targets, 8))
    combos = np.array(list(itertools.product(*[np.flatnonzero(inst.group == i) for i in range(4)])))
    ok = inst.resource("time")[combos].sum(1) <= bounds["time"]
    params = inst.options["param_bytes"].to_numpy()[combos[ok]].sum(1).max() + inst.non_block["param_bytes"]
    assert params * (1 - rec["solver"]["mip_gap"]) <= rec["costs"]["param_bytes"] <= params


def test_homogeneous_repeats_one_composition(search):
    rec = search.run(targets_of({"throughput": "1.5x"}), method="homogeneous")[0]
    assert len({(x["attention"], x["ffn"]) for x in rec["layers"]}) == 1


def test_random_is_seeded_and_reports_failure(search):
    targets = targets_of({"throughput": "1.3x"})
    a = search.run(targets, method="random", seed=5)[0]
    b = search.run(targets, method="random", seed=5)[0]
    c = search.run(targets, method="random", seed=6)[0]
    assert a["layers"] == b["layers"] and a["layers"] != c["layers"]
    assert a["solver"]["samples_drawn"] >= 1 and a["solver"]["seed"] == 5
    with pytest.raises(InfeasibleError, match="method random found no architecture .* but the MIP does"):
        search.run(targets_of({"throughput": "5x"}), method="random", random_samples=200)


def test_several_solutions_need_a_mip_method(search):
    with pytest.raises(ValueError, match="expected 1 for method 'greedy'"):
        search.run({}, method="greedy", num_solutions=2)
    assert {"mip", "noop_only", "max_params"} == set(MIP_METHODS)


def greedy_tables(budget_ms: float):
    """Two layers, attention only: kv2 (10 ms), kv1 (4 ms), no-op (0 ms); layer 1 is the sensitive one."""
    kl = {
        0: {"attn_kv2": 0.0, "attn_kv1": 1.0, "attn_noop": 3.0},
        1: {"attn_kv2": 0.0, "attn_kv1": 5.0, "attn_noop": 50.0},
    }
    scores = pd.DataFrame(
        [
            {"layer": i, "attention": a, "ffn": "ffn_100", "kl": v, "lm_loss": 2 + v, "token_acc": 0.5}
            for i, row in kl.items()
            for a, v in row.items()
        ]
    )
    base = {
        "scenario": "s",
        "batch": 1,
        "input_len": 0,
        "output_len": 1,
        "decode_ms": 0.0,
        "param_bytes": 0,
        "kv_bytes_per_token": 0,
    }
    rows = [
        {**base, "kind": "attention", "variant": a, "prefill_ms": t}
        for a, t in (("attn_kv2", 10.0), ("attn_kv1", 4.0), ("attn_noop", 0.0))
    ]
    rows += [
        {**base, "kind": k, "variant": v, "prefill_ms": 0.0}
        for k, v in (("ffn", "ffn_100"), ("non_block", "non_block"))
    ]
    inst = build_instance(check_scores(scores), check_costs(pd.DataFrame(rows)), "s", 1, "kl", ("attn_kv2", "ffn_100"))
    return inst, {"time": budget_ms}


def test_greedy_follows_the_paper():
    # budget 12 ms: shares of 6 ms; layer 0 (mean kl 1.3) goes first and takes kv1 (4 ms, kl 1),
    # carrying 2 ms, so layer 1 has 8 ms and takes kv1 (kl 5): total kl 6, where the MIP finds
    # no-op + kv2 (kl 3)
    inst, bounds = greedy_tables(12.0)
    choice = baselines.greedy(inst, bounds)
    assert inst.options.iloc[choice]["attention"].tolist() == ["attn_kv1", "attn_kv1"]
    assert inst.objective(choice) == 6.0
    best = Mip(inst.group, inst.options["objective"].to_numpy(), {"time": inst.resource("time")}).solve(bounds)
    assert best.objective == 3.0
    # budget 20 ms: layer 0's 10 ms fit kv2 (kl 0), nothing is carried, layer 1 also takes kv2
    inst, bounds = greedy_tables(20.0)
    assert inst.objective(baselines.greedy(inst, bounds)) == 0.0
    # budget 1 ms: only no-ops fit
    inst, bounds = greedy_tables(1.0)
    assert inst.options.iloc[baselines.greedy(inst, bounds)]["attention"].tolist() == ["attn_noop"] * 2
