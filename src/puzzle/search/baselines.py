"""Baselines of the paper's ablations, on the same instance and under the same bounds as the MIP.

    greedy        App. F.2.2: per-layer budget shares, layers in ascending mean score, leftovers carried
    random        uniform samples from the library until one meets the bounds (rejection sampling)
    homogeneous   every layer the same composition; the best that fits
    noop_only     the MIP restricted to the parent's subblocks and no-ops (`noop_only_mask`)
    max_params    the MIP maximizing parameters instead of quality (in `search.solve`)

Bounds are upper bounds on the block sums of each resource (`instance.resource_bounds`).
A baseline returns option indices, one per layer (rows of `Instance.options`), or None.
"""

from __future__ import annotations

import numpy as np

from puzzle.blocks import ATTN_NOOP, FFN_NOOP
from puzzle.search.instance import Instance


def feasible_rows(inst: Instance, choices: np.ndarray, bounds: dict[str, float]) -> np.ndarray:
    """Which rows of `choices` (architectures x layers, option indices) stay within every bound."""
    ok = np.ones(len(choices), dtype=bool)
    for r, bound in bounds.items():
        ok &= inst.resource(r)[choices].sum(axis=1) <= bound
    return ok


def greedy(inst: Instance, bounds: dict[str, float]) -> np.ndarray | None:
    """The paper's greedy baseline (App. F.2.2): each layer gets an equal share of every budget
    plus what earlier layers left unused; layers are visited from the lowest mean score over
    their variants up, each taking its best-scoring variant that fits its allowance."""
    obj, group = inst.options["objective"].to_numpy(), inst.group
    costs = {r: inst.resource(r) for r in bounds}
    share = {r: b / inst.num_layers for r, b in bounds.items()}
    carry = dict.fromkeys(bounds, 0.0)
    layer_score = np.bincount(group, obj) / np.bincount(group)
    choice = np.empty(inst.num_layers, dtype=int)
    for layer in np.argsort(layer_score, kind="stable"):
        idx = np.flatnonzero(group == layer)
        allow = {r: share[r] + carry[r] for r in bounds}
        fits = np.ones(len(idx), dtype=bool)
        for r in bounds:
            fits &= costs[r][idx] <= allow[r]
        if fits.any():
            j = idx[fits][np.argmin(obj[idx[fits]])]
        else:  # nothing fits: the variant that overruns its allowance least, paid from later layers
            over = np.max([(costs[r][idx] - allow[r]) / max(abs(share[r]), 1e-300) for r in bounds], axis=0)
            j = idx[np.argmin(over)]
        choice[layer] = j
        carry = {r: allow[r] - costs[r][j] for r in bounds}
    return choice if feasible_rows(inst, choice[None, :], bounds)[0] else None


def random_search(
    inst: Instance, bounds: dict[str, float], seed: int, samples: int, chunk: int = 4096
) -> tuple[np.ndarray | None, int]:
    """The first of up to `samples` uniformly random architectures that meets the bounds, and how
    many were drawn. Options are sorted by layer, so layer i's options are a contiguous run."""
    rng = np.random.default_rng(seed)
    counts = np.bincount(inst.group)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    drawn = 0
    while drawn < samples:
        n = min(chunk, samples - drawn)
        picks = starts + (rng.random((n, inst.num_layers)) * counts).astype(int)
        ok = feasible_rows(inst, picks, bounds)
        if ok.any():
            first = int(np.argmax(ok))
            return picks[first], drawn + first + 1
        drawn += n
    return None, drawn


def homogeneous(inst: Instance, bounds: dict[str, float]) -> np.ndarray | None:
    """The best architecture that repeats one composition in every layer (ties: the faster)."""
    opts = inst.options
    pairs = opts.groupby(["attention", "ffn"], sort=False).indices  # pair -> option indices, in layer order
    choices = np.array([idx for idx in pairs.values() if len(idx) == inst.num_layers])
    choices = choices[feasible_rows(inst, choices, bounds)]
    if not len(choices):
        return None
    obj = opts["objective"].to_numpy()[choices].sum(axis=1)
    time_ms = inst.resource("time")[choices].sum(axis=1)
    return choices[np.lexsort((time_ms, obj))[0]]


def noop_only_mask(inst: Instance) -> np.ndarray:
    """Options built from the parent's own subblocks and no-ops only (the no-op-only search space)."""
    opts = inst.options
    return (
        opts["attention"].isin([inst.parent[0], ATTN_NOOP]) & opts["ffn"].isin([inst.parent[1], FFN_NOOP])
    ).to_numpy()
