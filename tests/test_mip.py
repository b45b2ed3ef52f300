"""The search MIP against brute force, its exact preprocessing, diverse solutions, infeasibility
thresholds, relative targets resolved against the parent, and verification of written solutions."""

import itertools

import numpy as np
import pandas as pd
import pytest

from puzzle.config import ConfigError
from puzzle.search.instance import build_instance, resource_bounds
from puzzle.search.mip import Mip, VerificationError, check_diversity, dominator_counts, min_differing, verify
from puzzle.search.solve import InfeasibleError, Search
from puzzle.search.synthetic import synthetic_tables
from puzzle.search.tables import check_costs, check_scores
from puzzle.search.targets import parse_target

TOL = 1e-9


def brute_force(group, objective, resources, bounds, previous=(), min_diff=1):
    """Every architecture, its objective, and whether it is feasible."""
    layers = [np.flatnonzero(group == i) for i in range(group.max() + 1)]
    combos = np.array(list(itertools.product(*layers)))
    ok = np.ones(len(combos), dtype=bool)
    for r, b in bounds.items():
        ok &= resources[r][combos].sum(1) <= b
    for p in previous:
        ok &= (combos == p).sum(1) <= len(layers) - min_diff
    return combos, objective[combos].sum(1), ok


def random_problem(rng):
    """3-4 layers with 4-9 options each; objective and costs with deliberate exact ties."""
    sizes = rng.integers(4, 10, size=rng.integers(3, 5))
    group = np.repeat(np.arange(len(sizes)), sizes)
    n = len(group)
    objective = np.round(rng.random(n) * 3, 1)
    resources = {"time": np.round(rng.random(n) * 10, 1), "memory": rng.integers(0, 5, n) * 1e9}
    return group, objective, resources


def bound_between(rng, group, cost, q):
    """A bound a fraction q of the way from the least to the largest achievable sum."""
    lo = sum(cost[group == i].min() for i in range(group.max() + 1))
    hi = sum(cost[group == i].max() for i in range(group.max() + 1))
    return lo + q * (hi - lo)


@pytest.mark.parametrize("seed", range(12))
def test_mip_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    group, objective, resources = random_problem(rng)
    mip = Mip(group, objective, resources)
    cases = [{}, {"time": None}, {"memory": None}, {"time": None, "memory": None}]
    for case in cases:
        for q in (0.05, 0.3, 0.7):
            bounds = {r: bound_between(rng, group, resources[r], q * rng.uniform(0.5, 1.5)) for r in case}
            combos, values, ok = brute_force(group, objective, resources, bounds)
            res = mip.solve(bounds)
            if not ok.any():
                assert res is None
                continue
            assert res is not None and res.status == "optimal"
            assert abs(res.objective - values[ok].min()) <= TOL
            assert abs(objective[res.choice].sum() - res.objective) <= TOL
            for r, b in bounds.items():
                assert resources[r][res.choice].sum() <= b * (1 + TOL)
            assert not (values[ok] < res.objective - TOL).any()  # brute force finds nothing better


@pytest.mark.parametrize("seed", range(4))
def test_exact_without_an_incumbent(seed, monkeypatch):
    """Reduced-cost fixing with a guessed gap (no start point) still proves the optimum."""
    monkeypatch.setattr(Mip, "_incumbent", lambda *args: None)
    rng = np.random.default_rng(50 + seed)
    group, objective, resources = random_problem(rng)
    bounds = {r: bound_between(rng, group, c, 0.2) for r, c in resources.items()}
    _, values, ok = brute_force(group, objective, resources, bounds)
    res = Mip(group, objective, resources).solve(bounds)
    assert (res is None) == (not ok.any())
    if res is not None:
        assert abs(res.objective - values[ok].min()) <= TOL


@pytest.mark.parametrize("seed", range(4))
def test_minimizing_a_resource_equals_brute_force(seed):
    rng = np.random.default_rng(100 + seed)
    group, objective, resources = random_problem(rng)
    mip = Mip(group, objective, resources)
    bounds = {"memory": bound_between(rng, group, resources["memory"], 0.4)}
    combos, _, ok = brute_force(group, objective, resources, bounds)
    res = mip.solve(bounds, minimize="time")
    assert abs(res.objective - resources["time"][combos[ok]].sum(1).min()) <= TOL


@pytest.mark.parametrize("seed", range(5))
def test_diverse_solutions_equal_brute_force_and_differ(seed):
    rng = np.random.default_rng(200 + seed)
    group, objective, resources = random_problem(rng)
    num_layers = group.max() + 1
    min_diff = min_differing(num_layers, 0.5)
    mip = Mip(group, objective, resources, max_previous=3)
    bounds = {"time": bound_between(rng, group, resources["time"], 0.5)}
    previous = []
    for _ in range(4):
        _, values, ok = brute_force(group, objective, resources, bounds, previous, min_diff)
        start = mip.diverse_start(previous[-1], previous, min_diff) if previous else None
        res = mip.solve(bounds, previous, min_diff, start=start)
        if not ok.any():
            assert res is None
            break
        assert abs(res.objective - values[ok].min()) <= TOL
        for p in previous:
            assert (res.choice != p).sum() >= min_diff
        previous.append(res.choice)


@pytest.mark.parametrize("seed", range(4))
def test_answers_from_looser_budgets_equal_brute_force(seed, monkeypatch):
    """A sweep loosest first, two diverse solutions per budget: the optima proved under a looser
    budget that settle a tighter one (and its infeasibility) are the tighter budget's optima."""
    rng = np.random.default_rng(300 + seed)
    group, objective, resources = random_problem(rng)
    min_diff = min_differing(group.max() + 1, 0.5)
    mip = Mip(group, objective, resources, max_previous=1)
    solves = []
    monkeypatch.setattr(mip, "_solve", lambda *args: solves.append(args) or Mip._solve(mip, *args))
    memory = bound_between(rng, group, resources["memory"], 0.6)
    asked = 0
    for q in (1.0, 1.0, 0.8, 0.6, 0.4, 0.2, 0.0, -0.1):
        bounds = {"time": bound_between(rng, group, resources["time"], q), "memory": memory}
        previous = []
        for _ in range(2):
            _, values, ok = brute_force(group, objective, resources, bounds, previous, min_diff)
            res = mip.solve(bounds, previous, min_diff)
            asked += 1
            if not ok.any():
                assert res is None
                break
            assert abs(res.objective - values[ok].min()) <= TOL
            assert all(resources[r][res.choice].sum() <= b for r, b in bounds.items())
            assert all((res.choice != p).sum() >= min_diff for p in previous)
            previous.append(res.choice)
    assert len(solves) < asked  # the repeated loosest budget (at least) came from the proved answers


def test_dominated_options_are_dropped_exactly():
    group = np.array([0, 0, 0, 0, 1, 1])
    vectors = np.array([[0, 5], [1, 5], [1, 5], [2, 1], [0, 0], [0, 0]], dtype=float)
    counts = dominator_counts(group, vectors, np.ones(6, bool))
    # option 1 is dominated by 0; option 2 by 0 and by its exact twin 1 (the earlier one wins ties)
    assert counts.tolist() == [0, 1, 2, 0, 0, 1]
    assert min_differing(80, 0.2) == 16 and min_differing(30, 0.1) == 3 and min_differing(5, 0.0) == 1


# ---- hand-computed tables -------------------------------------------------------------------------


def hand_tables(per_layer: bool = False):
    """2 layers x {attn_kv2 (parent), attn_noop} x {ffn_100 (parent), ffn_noop}; batch 2, 3 in, 5 out."""
    kl = {
        ("attn_kv2", "ffn_100"): 0.0,
        ("attn_kv2", "ffn_noop"): 0.7,
        ("attn_noop", "ffn_100"): 0.4,
        ("attn_noop", "ffn_noop"): 2.0,
    }
    scores = pd.DataFrame(
        [
            {
                "layer": i,
                "attention": a,
                "ffn": f,
                "kl": v * (i + 1),
                "lm_loss": 2.0 + v * (i + 1),
                "token_acc": 0.5 - 0.1 * v,
            }
            for i in range(2)
            for (a, f), v in kl.items()
        ]
    )
    base = {"scenario": "s", "batch": 2, "input_len": 3, "output_len": 5}
    sub = [
        ("attention", "attn_kv2", 1.0, 0.1, 100, 4),
        ("attention", "attn_noop", 0, 0, 0, 0),
        ("ffn", "ffn_100", 2.0, 0.2, 300, 0),
        ("ffn", "ffn_noop", 0, 0, 0, 0),
    ]
    cols = ["kind", "variant", "prefill_ms", "decode_ms", "param_bytes", "kv_bytes_per_token"]
    rows = [
        {**base, **dict(zip(cols, r)), **({"layer": i} if per_layer else {})}
        for r in sub
        for i in (range(2) if per_layer else [0])
    ]
    rows.append({**base, **dict(zip(cols, ("non_block", "non_block", 0.5, 0.05, 50, 0)))})
    return check_scores(scores), check_costs(pd.DataFrame(rows))


# parent: per layer 1 + 2 + 5 * (0.1 + 0.2) = 4.5 ms and 400 + 2 * (3 + 5) * 4 = 464 bytes
PARENT_TIME = 2 * 4.5 + 0.5 + 5 * 0.05  # 9.75 ms
PARENT_MEMORY = 2 * 464 + 50  # 978 bytes
PARENT_THROUGHPUT = 2 * 5 / (PARENT_TIME / 1000)


@pytest.mark.parametrize("per_layer", [False, True])
def test_costs_and_relative_targets_resolve_against_the_parent(per_layer):
    scores, costs = hand_tables(per_layer)
    search = Search(scores, costs, kinds={"throughput", "memory", "latency"})
    parent = search.parent_totals[2]
    assert parent["time_ms"] == pytest.approx(PARENT_TIME, abs=1e-12)
    assert parent["memory_bytes"] == PARENT_MEMORY and parent["param_bytes"] == 2 * 400 + 50
    assert parent["throughput_tok_s"] == pytest.approx(PARENT_THROUGHPUT, rel=1e-12)
    targets = {
        "throughput": parse_target("throughput", "2x"),
        "memory": parse_target("memory", "0.5x"),
        "latency": parse_target("latency", "0.8x"),
    }
    resolved = search.resolve(targets, 2)
    assert resolved["throughput"] == pytest.approx(2 * PARENT_THROUGHPUT, rel=1e-12)
    assert resolved["memory"] == pytest.approx(489.0) and resolved["latency"] == pytest.approx(0.8 * PARENT_TIME)
    bounds = resource_bounds(search.instances[2], resolved)
    # 2x throughput = half the time (4.875 ms) is tighter than 0.8x latency; minus the non-block 0.75 ms
    assert bounds["time"] == pytest.approx(4.875 - 0.75) and bounds["memory"] == pytest.approx(489 - 50)
    rec = search.run(targets)[0]
    # per layer: (kv2, noop) 1.5 ms / 164 B, (noop, 100) 3 ms / 300 B, (noop, noop) free, the parent 4.5 ms;
    # within 4.125 ms and 439 B the best is (kv2, noop) twice: kl 0.7 + 1.4 (others: 2.8, 3.4, 4.4, 4.7)
    assert [(x["attention"], x["ffn"]) for x in rec["layers"]] == [("attn_kv2", "ffn_noop")] * 2
    assert rec["objective"] == pytest.approx(2.1)
    assert rec["costs"]["time_ms"] == pytest.approx(2 * 1.5 + 0.75)
    assert rec["constraints"]["throughput"]["relative_to_parent"] == 2.0


def test_lm_loss_and_token_acc_sum_changes_against_the_parent():
    scores, costs = hand_tables()
    for metric, sense, expected in (("lm_loss", "minimize", 2.1), ("token_acc", "maximize", -0.14)):
        rec = Search(scores, costs, metric=metric, kinds={"throughput"}).run(
            {"throughput": parse_target("throughput", "2x")}
        )[0]
        assert rec["sense"] == sense and rec["objective"] == pytest.approx(expected)


@pytest.mark.parametrize(
    "kind, text, value, relative",
    [
        ("memory", "80GiB", 80 * 2**30, False),
        ("memory", "512 MiB", 512 * 2**20, False),
        ("memory", "40GB", 40e9, False),
        ("memory", 1e9, 1e9, False),
        ("memory", "0.5x", 0.5, True),
        ("throughput", "5000 tok/s", 5000, False),
        ("throughput", "2.0x", 2.0, True),
        ("latency", "250ms", 250, False),
        ("latency", "0.25s", 250, False),
        ("latency", "1e3", 1000, False),
    ],
)
def test_parse_target(kind, text, value, relative):
    t = parse_target(kind, text)
    assert t.value == pytest.approx(value) and t.relative == relative


@pytest.mark.parametrize(
    "kind, text", [("memory", "80 GB/s"), ("throughput", "fast"), ("latency", "-3ms"), ("memory", "0x")]
)
def test_bad_targets_fail_in_one_line(kind, text):
    with pytest.raises(ConfigError, match=rf"search\.{kind} = '{text}'"):
        parse_target(kind, text)


# ---- infeasible budgets ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_tables():
    return synthetic_tables(
        6, seed=3, attention=("attn_kv8", "attn_kv2", "attn_noop"), ffn=("ffn_100", "ffn_50", "ffn_10", "ffn_noop")
    )


def test_infeasible_memory_names_the_threshold_that_is_exactly_feasible(small_tables):
    scores, costs = small_tables
    search = Search(scores, costs, kinds={"memory", "throughput"})
    fixed = {"throughput": parse_target("throughput", "1.5x")}
    with pytest.raises(InfeasibleError, match=r"memory 1 \(.*\) is binding: the smallest feasible is") as err:
        search.run({**fixed, "memory": parse_target("memory", 1)})
    value, batch = err.value.thresholds["memory"]
    assert set(err.value.thresholds) == {"memory"}
    rec = search.run({**fixed, "memory": parse_target("memory", value)})[0]
    assert rec["costs"]["memory_bytes"] <= value * (1 + 1e-9)
    assert batch in search.batches
    with pytest.raises(InfeasibleError):
        search.run({**fixed, "memory": parse_target("memory", value * (1 - 1e-6))})


def test_infeasible_throughput_names_the_largest_feasible(small_tables):
    scores, costs = small_tables
    search = Search(scores, costs, kinds={"memory", "throughput"})
    memory = {"memory": parse_target("memory", "0.6x")}
    with pytest.raises(InfeasibleError, match=r"throughput 1e9 .* the largest feasible is") as err:
        search.run({**memory, "throughput": parse_target("throughput", "1e9")})
    value, _ = err.value.thresholds["throughput"]
    assert search.run({**memory, "throughput": parse_target("throughput", value)})
    with pytest.raises(InfeasibleError):
        search.run({**memory, "throughput": parse_target("throughput", value * (1 + 1e-6))})


def tradeoff_tables():
    """2 layers choosing attn_kv2 (fast, 100 bytes) or attn_kv1 (slow, 10 bytes): memory and time conflict."""
    scores = pd.DataFrame(
        [
            {"layer": i, "attention": a, "ffn": "ffn_100", "kl": kl, "lm_loss": 2 + kl, "token_acc": 0.5}
            for i in range(2)
            for a, kl in (("attn_kv2", 0.0), ("attn_kv1", 0.5))
        ]
    )
    base = {"scenario": "s", "batch": 1, "input_len": 0, "output_len": 1, "decode_ms": 0.0, "kv_bytes_per_token": 0}
    costs = pd.DataFrame(
        [
            {**base, "kind": "attention", "variant": "attn_kv2", "prefill_ms": 1.0, "param_bytes": 100},
            {**base, "kind": "attention", "variant": "attn_kv1", "prefill_ms": 3.0, "param_bytes": 10},
            {**base, "kind": "ffn", "variant": "ffn_100", "prefill_ms": 0.0, "param_bytes": 0},
            {**base, "kind": "non_block", "variant": "non_block", "prefill_ms": 0.0, "param_bytes": 0},
        ]
    )
    return check_scores(scores), check_costs(costs)


def test_jointly_infeasible_targets_are_both_named():
    scores, costs = tradeoff_tables()
    search = Search(scores, costs, kinds={"memory", "latency"})
    targets = {"memory": parse_target("memory", 60), "latency": parse_target("latency", 4)}
    assert search.run({"memory": targets["memory"]}) and search.run({"latency": targets["latency"]})
    with pytest.raises(InfeasibleError, match="memory 60 .* is binding.*latency 4 .* is binding") as err:
        search.run(targets)
    # the least memory within 4 ms is one of each (1 + 3 ms, 110 bytes); the least time within 60 bytes, two attn_kv1
    assert err.value.thresholds == {"memory": (110.0, 1), "latency": (6.0, 1)}
    for kind, (value, _) in err.value.thresholds.items():
        other = {k: t for k, t in targets.items() if k != kind}
        assert search.run({**other, kind: parse_target(kind, value)})


# ---- verification ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def solved(small_tables):
    scores, costs = small_tables
    search = Search(scores, costs, kinds={"throughput", "memory"})
    return (
        scores,
        costs,
        search.run(
            {"throughput": parse_target("throughput", "1.5x"), "memory": parse_target("memory", "0.8x")},
            num_solutions=3,
            diversity=0.5,
        ),
    )


@pytest.mark.parametrize(
    "tamper, message",
    [
        (
            lambda r: r["layers"][0].update(ffn="ffn_noop" if r["layers"][0]["ffn"] != "ffn_noop" else "ffn_100"),
            "costs",
        ),
        (lambda r: r["costs"].update(memory_bytes=r["costs"]["memory_bytes"] * 0.99), "costs.memory_bytes"),
        (lambda r: r.update(objective=r["objective"] * 0.5 - 1e-3), "objective"),
        (lambda r: r["constraints"]["memory"].update(value=r["costs"]["memory_bytes"] * 0.99), "constraint memory"),
        (lambda r: r["layers"][1].update(attention="attn_kv3"), "not in the scores"),
        (lambda r: r["layers"].pop(), "layers but the scores have"),
    ],
)
def test_verification_catches_a_tampered_solution(solved, tamper, message):
    scores, costs, records = solved
    rec = {k: (v.copy() if isinstance(v, dict) else v) for k, v in records[0].items()}
    rec["layers"] = [dict(x) for x in records[0]["layers"]]
    rec["constraints"] = {k: dict(v) for k, v in records[0]["constraints"].items()}
    verify(rec, scores, costs)  # the untouched copy passes
    tamper(rec)
    with pytest.raises(VerificationError, match=message):
        verify(rec, scores, costs)


def test_returned_solutions_are_diverse_and_ordered(solved):
    _, _, records = solved
    assert len(records) == 3 and all(r["verified"] for r in records)
    need = records[0]["min_layers_differing"]
    assert need == 3
    check_diversity(records, need)
    assert [r["objective"] for r in records] == sorted(r["objective"] for r in records)
    with pytest.raises(VerificationError, match="differ in 0 layers"):
        check_diversity([records[0], records[0]], 1)


def test_search_picks_the_best_batch():
    scores, costs = synthetic_tables(
        4, seed=5, attention=("attn_kv8", "attn_kv2", "attn_noop"), ffn=("ffn_100", "ffn_50", "ffn_noop")
    )
    targets = {"throughput": parse_target("throughput", 2000.0), "memory": parse_target("memory", "8GiB")}
    best = Search(scores, costs, kinds=set(targets)).run(targets)[0]
    optima = {}
    for b in (1, 8, 64):
        inst = build_instance(scores, costs, "synthetic", b, "kl", ("attn_kv8", "ffn_100"))
        bounds = resource_bounds(inst, {"throughput": 2000.0, "memory": 8 * 2**30})
        res = {r: inst.resource(r) for r in bounds}
        _, values, ok = brute_force(inst.group, inst.options["objective"].to_numpy(), res, bounds)
        if ok.any():
            optima[b] = values[ok].min()
    assert len(optima) >= 2  # the batch choice is not trivial
    assert abs(best["objective"] - min(optima.values())) <= TOL
    assert best["scenario"]["batch"] in [b for b, v in optima.items() if v <= min(optima.values()) + TOL]
    assert {x["batch"] for x in best["batches"]} == {1, 8, 64}
