"""The search's mixed-integer program (Pyomo, solved by HiGHS through highspy), and its checks.

    minimize    sum_j objective_j x_j
    subject to  sum_{j in layer i} x_j = 1                      for every layer i
                sum_j cost_r(j) x_j <= bound_r                   for every bounded resource r
                sum_i x_{i, y_i} <= L - min_differing            for every earlier solution y
                x_j binary

Pure: it sees arrays (a layer index, an objective and per-resource costs per option), never files.
One `Mip` is one persistent model: bounds, diversity constraints, the objective and a warm
start change between solves without rebuilding it (the appsi HiGHS interface pushes only the
changes). `verify` re-derives a written solution from the raw tables without using any of this.
"""

from __future__ import annotations

import contextlib
import gc
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import pyomo.environ as pe
from pyomo.contrib.appsi.base import TerminationCondition
from pyomo.contrib.appsi.solvers import Highs
from pyomo.core.expr.numeric_expr import LinearExpression

SOLVER_NAME = "highs"
SOLVER_INTERFACE = "pyomo.contrib.appsi (persistent)"
GOAL = "objective"
_INFEASIBLE = (TerminationCondition.infeasible, TerminationCondition.infeasibleOrUnbounded)
# output_flag off: HiGHS's log lines otherwise cost a Python callback each
_HIGHS_OPTIONS = {
    "mip_abs_gap": 0.0,
    "primal_feasibility_tolerance": 1e-9,
    "mip_feasibility_tolerance": 1e-9,
    "output_flag": False,
}
_HEURISTICS = ("mip_heuristic_run_rins", "mip_heuristic_run_rens", "mip_heuristic_run_root_reduced_cost")


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """Pyomo allocates many small objects; with a large heap (pandas tables) the cyclic collector
    would otherwise run full passes mid-build and take most of the time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class SolverError(RuntimeError):
    """The solver stopped without an answer (time limit with no feasible point, numerical trouble)."""


class VerificationError(ValueError):
    """A solution that does not match the tables it claims to come from."""


@dataclass(frozen=True)
class Result:
    choice: np.ndarray  # option index chosen in each layer
    objective: float  # sum of the model's objective over the choice
    status: str  # optimal, or time_limit (the best point HiGHS had when its time ran out)
    solve_time_s: float


def dominator_counts(group: np.ndarray, vectors: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """For each option, how many options of its layer are no worse in every column of `vectors`
    (objective and costs, all minimized) and strictly better in one; exact ties go to the earlier."""
    counts = np.zeros(len(group), dtype=int)
    order = np.flatnonzero(allowed)
    for idx in np.split(order, np.flatnonzero(np.diff(group[order])) + 1):
        v = vectors[idx]
        no_worse = (v[:, None, :] <= v[None, :, :]).all(-1)  # [k, j]: k no worse than j
        better = (v[:, None, :] < v[None, :, :]).any(-1)
        earlier = np.arange(len(idx))[:, None] < np.arange(len(idx))[None, :]
        dominates = no_worse & (better | earlier)
        np.fill_diagonal(dominates, False)
        counts[idx] = dominates.sum(0)
    return counts


def _power_of_two_scale(values: np.ndarray) -> float:
    top = float(np.abs(values).max()) if len(values) else 0.0
    return 2.0 ** -math.ceil(math.log2(top)) if top > 0 else 1.0


def min_differing(num_layers: int, fraction: float) -> int:
    """Layers in which each new solution must differ from every earlier one (at least 1)."""
    return max(1, math.ceil(fraction * num_layers - 1e-9))


class _Model:
    """One Pyomo model of the program over the kept options with its persistent HiGHS solver;
    binary for the MIP, continuous in [0, 1] for its LP relaxation."""

    def __init__(self, mip: Mip, relaxed: bool) -> None:
        self.mip = mip
        m = self.model = pe.ConcreteModel()
        m.x = pe.Var(range(len(mip.kept)), domain=pe.Reals if relaxed else pe.Binary, bounds=(0, 1))
        m.one = pe.Constraint(
            range(mip.num_layers), rule=lambda _, i: self.linear(np.ones(len(mip.members[i])), mip.members[i]) == 1
        )
        m.bound = pe.Param(list(mip.resources), mutable=True, initialize=0.0)
        m.cap = pe.Constraint(list(mip.resources), rule=lambda _, r: self.linear(mip.coefs[r]) <= m.bound[r])
        m.goal = pe.Objective(list(mip.coefs), rule=lambda _, k: self.linear(mip.coefs[k]))
        for k in mip.coefs:  # one active objective at a time
            m.goal[k].activate() if k == GOAL else m.goal[k].deactivate()
        self.diversity: dict[tuple[int, ...], Any] = {}
        self.solver = Highs()
        self.solver.highs_options = dict(_HIGHS_OPTIONS)
        cfg = self.solver.config
        cfg.load_solution, cfg.stream_solver, cfg.time_limit, cfg.mip_gap = False, False, mip.time_limit_s, mip.mip_gap
        upd = self.solver.update_config
        upd.check_for_new_or_removed_vars = False  # the variables never change...
        upd.update_vars = not relaxed  # ...but the MIP's upper bounds do (reduced-cost fixing)
        self.solver.set_instance(m)

    def linear(self, coefs: np.ndarray, positions: Sequence[int] | None = None) -> LinearExpression:
        x = self.model.x
        pos = range(len(coefs)) if positions is None else positions
        return LinearExpression(
            constant=0.0, linear_coefs=[float(c) for c in coefs], linear_vars=[x[int(p)] for p in pos]
        )

    def set(self, bounds: dict[str, float], goal: str, previous: Sequence[np.ndarray], min_diff: int) -> None:
        m = self.model
        for r in self.mip.resources:
            if r in bounds:
                m.bound[r] = bounds[r]
                m.cap[r].activate()
            else:
                m.cap[r].deactivate()
        for k in self.mip.coefs:
            m.goal[k].activate() if k == goal else m.goal[k].deactivate()
        wanted = set()
        for prev in previous:
            key = (min_diff, *map(int, prev))
            wanted.add(key)
            if key not in self.diversity:
                pos = [self.mip.pos[int(j)] for j in prev if int(j) in self.mip.pos]
                con = pe.Constraint(expr=self.linear(np.ones(len(pos)), pos) <= self.mip.num_layers - min_diff)
                m.add_component(f"differ_{len(self.diversity)}", con)
                self.diversity[key] = con
        for key, con in self.diversity.items():
            con.activate() if key in wanted else con.deactivate()


class Mip:
    """Multiple-choice knapsack over layers, as a persistent Pyomo model solved by HiGHS.

    Exact preprocessing, none of which changes the optimum:
    - dominance: an option dominated (objective and every resource) by more options of its layer
      than there will be earlier solutions is dropped; a dominator is always free to replace it
      without breaking a bound or a diversity constraint;
    - reduced-cost fixing: with the LP relaxation's bound z_LP and reduced costs d, any solution
      that picks option j costs at least z_LP + d_j; options with z_LP + d_j above an incumbent's
      value are fixed to 0 before HiGHS starts, so it branches over a few options per layer.
    """

    def __init__(
        self,
        group: np.ndarray,
        objective: np.ndarray,
        resources: dict[str, np.ndarray],
        *,
        allowed: np.ndarray | None = None,
        max_previous: int = 0,
        time_limit_s: float = 60.0,
        mip_gap: float = 0.0,
    ) -> None:
        with _no_gc():
            t0 = time.perf_counter()
            self.group = np.asarray(group)
            self.num_layers = int(self.group.max()) + 1
            self.resources = {r: np.asarray(c, dtype=float) for r, c in resources.items()}
            self.max_previous, self.time_limit_s, self.mip_gap = max_previous, time_limit_s, mip_gap
            allowed = np.ones(len(self.group), bool) if allowed is None else np.asarray(allowed, bool)
            if set(self.group[allowed]) != set(range(self.num_layers)):
                raise ValueError("every layer needs at least one allowed option")
            objective = np.asarray(objective, dtype=float)
            vectors = np.column_stack([objective, *self.resources.values()])
            self.kept = np.flatnonzero(allowed & (dominator_counts(self.group, vectors, allowed) <= max_previous))
            self.pos = {int(j): p for p, j in enumerate(self.kept)}
            self.layer_of = self.group[self.kept]
            self.members = np.split(np.arange(len(self.kept)), np.flatnonzero(np.diff(self.layer_of)) + 1)
            # Powers of two keep coefficients O(1) (bytes reach 1e11) and the scaling exact.
            columns = {GOAL: objective[self.kept], **{r: c[self.kept] for r, c in self.resources.items()}}
            self.scale = {k: _power_of_two_scale(c) for k, c in columns.items()}
            # objective vectors over the kept options: the score, or a resource to minimize
            self.coefs = {k: c * self.scale[k] for k, c in columns.items()}
            self._mip = _Model(self, relaxed=False)
            self._lp = _Model(self, relaxed=True)
            # proved answers per (goal, earlier solutions): each settles any tighter budget it fits
            self._proved: dict[tuple[Any, ...], list[tuple[dict[str, float], Result | None]]] = {}
            self.setup_time_s = time.perf_counter() - t0

    def solve(
        self,
        bounds: dict[str, float],
        previous: Sequence[np.ndarray] = (),
        min_diff: int = 1,
        start: np.ndarray | None = None,
        minimize: str | None = None,
    ) -> Result | None:
        """Best choice under `bounds` (resource -> upper bound on its sum; others unbounded), or
        None when infeasible. `minimize` = a resource name minimizes that resource instead."""
        unknown = set(bounds) - set(self.resources)
        if unknown:
            raise ValueError(f"bounds on {sorted(unknown)} but the model has resources {sorted(self.resources)}")
        if len(previous) > self.max_previous:
            raise ValueError(
                f"{len(previous)} earlier solutions but the model was reduced for at most {self.max_previous}"
            )
        goal = GOAL if minimize is None else minimize
        finite = {r: float(b) for r, b in bounds.items() if math.isfinite(b)}
        key = (goal, min_diff if len(previous) else 0, *(tuple(map(int, p)) for p in previous))
        t0 = time.perf_counter()
        for old, res in self._proved.get(key, ()):
            if self._settles(old, res, finite):
                return None if res is None else replace(res, solve_time_s=time.perf_counter() - t0)
        result = self._solve(finite, goal, previous, min_diff, start)
        if result is None or result.status == "optimal":
            self._proved.setdefault(key, []).append((finite, result))
        return result

    def _settles(self, old: dict[str, float], res: Result | None, bounds: dict[str, float]) -> bool:
        """Whether an answer proved under `old` bounds holds under `bounds`: when every bound is now
        as tight or tighter the feasible set only shrank, so infeasible stays infeasible and an
        optimum that still fits stays optimal."""
        if not all(r in bounds and bounds[r] <= b for r, b in old.items()):
            return False
        return res is None or all(self.resources[r][res.choice].sum() <= b for r, b in bounds.items())

    def _solve(
        self,
        bounds: dict[str, float],
        goal: str,
        previous: Sequence[np.ndarray],
        min_diff: int,
        start: np.ndarray | None,
    ) -> Result | None:
        scaled = {r: b * self.scale[r] for r, b in bounds.items()}
        with _no_gc():
            t0 = time.perf_counter()
            for model in (self._lp, self._mip):
                model.set(scaled, goal, previous, min_diff)
            lp = self._lp.solver.solve(self._lp.model)
            if lp.termination_condition in _INFEASIBLE:
                return None  # no fractional point, so no integer one
            if lp.termination_condition != TerminationCondition.optimal:
                raise SolverError(f"HiGHS stopped on the LP relaxation ({lp.termination_condition.name})")
            x = self._lp.model.x
            rc = lp.solution_loader.get_reduced_costs()
            reduced = np.array([rc[x[p]] for p in range(len(self.kept))])
            frac = lp.solution_loader.get_primals()
            bound = float(lp.best_objective_bound)
            values = np.array([frac[x[p]] for p in range(len(self.kept))])
            incumbent = self._incumbent(goal, scaled, values, reduced, bound, previous, min_diff, start)
            # HiGHS's own incumbent searches pay off only without a start, or with diversity rows
            # (where many near-equal choices of layers to change leave much to find)
            result = self._branch(goal, bound, reduced, incumbent, heuristics=incumbent is None or bool(previous))
            elapsed = time.perf_counter() - t0
        if result is None:
            return None
        positions, status = result
        choice = self.kept[positions]
        choice = choice[np.argsort(self.group[choice])]
        values = self.coefs[goal][positions].sum() / self.scale[goal]
        return Result(choice, float(values), status, elapsed)

    def diverse_start(self, choice: np.ndarray, previous: Sequence[np.ndarray], min_diff: int) -> np.ndarray | None:
        """A warm start for the next diverse solution: `choice` with its `min_diff` cheapest swaps
        to a kept option no more costly in any resource (so every bound still holds) and unlike
        every earlier solution's pick in that layer."""
        objective = self.coefs[GOAL]
        costs = (
            np.column_stack([self.coefs[r] for r in self.resources])
            if self.resources
            else np.zeros((len(self.kept), 0))
        )
        taken = np.array(previous)  # (solutions, layers) option indices
        swaps = []  # (objective increase, layer, kept position)
        for layer, members in enumerate(self.members):
            cur = self.pos.get(int(choice[layer]))
            if cur is None:
                return None
            ok = (costs[members] <= costs[cur]).all(1) & ~np.isin(self.kept[members], taken[:, layer])
            if ok.any():
                best = members[ok][np.argmin(objective[members[ok]])]
                swaps.append((objective[best] - objective[cur], layer, best))
        if len(swaps) < min_diff:
            return None
        start = np.array(choice).copy()
        for _, layer, p in sorted(swaps)[:min_diff]:
            start[layer] = self.kept[p]
        return start

    def _branch(
        self,
        goal: str,
        bound: float,
        reduced: np.ndarray,
        incumbent: np.ndarray | None,
        heuristics: bool,
    ) -> tuple[np.ndarray, str] | None:
        """Solve the MIP over the options whose reduced cost leaves them a chance to beat the
        incumbent; without one, guess a gap and widen it until the answer proves itself."""
        coefs = self.coefs[goal]
        tol = 1e-7 * max(1.0, abs(bound))  # the LP's reduced costs are exact only to its tolerances
        gap = coefs[incumbent].sum() - bound if incumbent is not None else 1e-3 * max(1.0, abs(bound))
        while True:
            fixed = reduced > gap + tol
            for p, var in self._mip.model.x.items():
                var.setub(0 if fixed[p] else 1)
            found = self._solve_mip(incumbent, heuristics)
            if found is None:
                if not fixed.any():
                    return None
                gap *= 10
                continue
            positions, status = found
            value = coefs[positions].sum()
            if value <= bound + gap + tol or not fixed.any() or status != "optimal":
                return positions, status
            # every option left out costs more than `value` would: one more solve settles it
            gap, incumbent = value - bound, positions

    def _solve_mip(self, start: np.ndarray | None, heuristics: bool) -> tuple[np.ndarray, str] | None:
        m, solver = self._mip.model, self._mip.solver
        on = set(start.tolist()) if start is not None else set()
        for p, var in m.x.items():
            var.set_value((1 if p in on else 0) if start is not None else None, skip_validation=True)
        solver.config.warmstart = start is not None
        solver.highs_options = {**_HIGHS_OPTIONS, **{k: heuristics for k in _HEURISTICS}}
        res = solver.solve(m)
        tc = res.termination_condition
        if tc in _INFEASIBLE:
            return None
        if res.best_feasible_objective is None:
            raise SolverError(f"HiGHS stopped ({tc.name}) without a feasible solution; raise search.time_limit_s")
        values = res.solution_loader.get_primals()
        positions = np.flatnonzero([values[m.x[p]] > 0.5 for p in range(len(self.kept))])
        if len(positions) != self.num_layers or set(self.layer_of[positions]) != set(range(self.num_layers)):
            raise SolverError("HiGHS returned a point that does not pick one option per layer")
        return positions, {
            TerminationCondition.optimal: "optimal",
            TerminationCondition.maxTimeLimit: "time_limit",
        }.get(tc, tc.name)

    def _incumbent(
        self,
        goal: str,
        scaled: dict[str, float],
        frac: np.ndarray,
        reduced: np.ndarray,
        bound: float,
        previous: Sequence[np.ndarray],
        min_diff: int,
        start: np.ndarray | None,
    ) -> np.ndarray | None:
        """A feasible point to start from (positions of kept options): the better of the caller's
        start and the LP solution rounded and repaired, then improved by one- and two-layer swaps."""
        costs = np.column_stack([self.coefs[r] for r in scaled]) if scaled else np.zeros((len(self.kept), 0))
        prev = np.array([[self.pos.get(int(j), -1) for j in p] for p in previous]).reshape(
            len(previous), self.num_layers
        )
        search = _LocalSearch(
            self.layer_of, self.coefs[goal], costs, np.array(list(scaled.values())), prev, self.num_layers - min_diff
        )
        cands = [search.repair(np.array([mem[np.argmax(frac[mem])] for mem in self.members]))]
        if start is not None and all(int(j) in self.pos for j in start):
            cands.append(
                search.repair(np.array([self.pos[int(j)] for j in start]))
            )  # a looser budget's optimum may not fit
        ok = [c for c in cands if c is not None and search.feasible(c)]
        if not ok:
            return None
        best = search.improve(min(ok, key=lambda c: search.coefs[c].sum()))
        # only options that can appear in a better solution are worth pairing
        core = np.flatnonzero(reduced <= search.coefs[best].sum() - bound + 1e-7 * max(1.0, abs(bound)))
        return search.pairs(best, core)


class _LocalSearch:
    """Swaps on a choice (kept positions, one per layer) that keep it inside the bounds and unlike
    every earlier solution in enough layers: a cheap, good incumbent for HiGHS to start from."""

    def __init__(
        self, layer: np.ndarray, coefs: np.ndarray, costs: np.ndarray, ub: np.ndarray, prev: np.ndarray, limit: int
    ) -> None:
        self.layer, self.coefs, self.costs, self.ub = layer, coefs, costs, ub
        self.prev, self.limit = prev, limit  # earlier solutions (positions) and most layers shared with each
        self.scale = np.where(ub > 0, ub, 1.0)

    def feasible(self, cur: np.ndarray) -> bool:
        fits = (self.costs[cur].sum(0) <= self.ub * (1 + 1e-12)).all()
        return bool(fits and ((self.prev == cur).sum(1) <= self.limit).all())

    def _shared_after(self, cur: np.ndarray, options: np.ndarray) -> np.ndarray:
        """(earlier solutions, options): change in layers shared if each option replaced its layer's pick."""
        layer = self.layer[options]
        return (options == self.prev[:, layer]).astype(int) - (cur[layer] == self.prev[:, layer])

    def repair(self, cur: np.ndarray) -> np.ndarray | None:
        """Into the bounds by the swaps removing the most excess per objective lost (diversity is the caller's)."""
        cur = cur.copy()
        for _ in range(4 * len(cur)):
            total = self.costs[cur].sum(0)
            excess = (np.maximum(total - self.ub, 0) / self.scale).sum()
            if excess == 0:
                return cur
            after = total + self.costs - self.costs[cur][self.layer]  # totals if option j replaced its layer's pick
            gain = excess - (np.maximum(after - self.ub, 0) / self.scale).sum(1)
            useful = np.flatnonzero(gain > 1e-15)
            if not len(useful):
                return None
            delta = self.coefs[useful] - self.coefs[cur][self.layer[useful]]
            j = useful[np.argmin(delta / gain[useful])]
            cur[self.layer[j]] = j
        return None

    def improve(self, cur: np.ndarray) -> np.ndarray:
        """The best single-layer gain that stays feasible, until there is none."""
        cur = cur.copy()
        every = np.arange(len(self.layer))
        for _ in range(4 * len(cur)):
            after = self.costs[cur].sum(0) + self.costs - self.costs[cur][self.layer]
            delta = self.coefs - self.coefs[cur][self.layer]
            shared = (self.prev == cur).sum(1)[:, None] + self._shared_after(cur, every)
            ok = (after <= self.ub).all(1) & (shared <= self.limit).all(0) & (delta < -1e-15)
            if not ok.any():
                return cur
            j = np.flatnonzero(ok)[np.argmin(delta[ok])]
            cur[self.layer[j]] = j
        return cur

    def pairs(self, cur: np.ndarray, core: np.ndarray) -> np.ndarray:
        """The best swap of two layers at once among the `core` options, until there is none
        (single swaps stall where a gain in one layer must be paid for in another)."""
        cur = cur.copy()
        layer = self.layer[core]
        for _ in range(4 * len(cur)):
            d_obj = self.coefs[core] - self.coefs[cur][layer]
            d_cost = self.costs[core] - self.costs[cur][layer]
            gain = d_obj[:, None] + d_obj[None, :]
            fits = ((self.costs[cur].sum(0) + d_cost[:, None, :] + d_cost[None, :, :]) <= self.ub).all(-1)
            d_shared = self._shared_after(cur, core)
            shared = (self.prev == cur).sum(1)[:, None, None] + d_shared[:, :, None] + d_shared[:, None, :]
            usable = fits & (shared <= self.limit).all(0) & (layer[:, None] != layer[None, :]) & (gain < -1e-12)
            if not usable.any():
                return cur
            a, b = np.unravel_index(np.argmin(np.where(usable, gain, np.inf)), gain.shape)
            cur[layer[a]], cur[layer[b]] = core[a], core[b]
        return cur


# ---- checks on written solutions ------------------------------------------------------------------


def _close(a: float, b: float, rel_tol: float) -> bool:
    return math.isclose(a, b, rel_tol=rel_tol, abs_tol=rel_tol)


def verify(
    solution: dict[str, Any], scores: pd.DataFrame, costs: pd.DataFrame, rel_tol: float = 1e-9
) -> dict[str, float]:
    """Recompute a solution's objective and costs from the raw tables, row by row in plain python
    (not the solver's arrays), and check them against its claims and its constraints.

    Returns the recomputed costs; raises VerificationError naming every mismatch.
    """
    problems: list[str] = []
    sc = solution["scenario"]
    batch, input_len, output_len = int(sc["batch"]), int(sc["input_len"]), int(sc["output_len"])
    metric = solution["metric"]
    parent = (solution["parent"]["attention"], solution["parent"]["ffn"])
    # only the metric's column: whole records of every composition would cost more than the check
    score = {
        (int(i), a, f): v for i, a, f, v in zip(scores["layer"], scores["attention"], scores["ffn"], scores[metric])
    }
    per_layer = "layer" in costs.columns
    sub = costs[(costs["scenario"] == sc["name"]) & (costs["batch"] == batch)]
    cost_row = {
        (r["kind"], r["variant"], int(r["layer"]) if per_layer and r["kind"] != "non_block" else None): r
        for r in sub.to_dict("records")
    }
    num_layers = int(scores["layer"].nunique())
    layers = solution["layers"]
    if len(layers) != num_layers:
        problems.append(f"{len(layers)} layers but the scores have {num_layers}")
    objective = prefill = decode = params = kv = 0.0
    for i, block in enumerate(layers):
        row, base = score.get((i, block["attention"], block["ffn"])), score.get((i, *parent))
        if row is None or base is None:
            problems.append(
                f"layer {i}: {block['attention']}+{block['ffn']} (or the parent's pair) is not in the scores"
            )
            continue
        objective += row - base
        for kind in ("attention", "ffn"):
            c = cost_row.get((kind, block[kind], i if per_layer else None))
            if c is None:
                problems.append(f"layer {i}: no cost row for {kind} {block[kind]!r}")
                continue
            prefill += c["prefill_ms"]
            decode += c["decode_ms"]
            params += c["param_bytes"]
            kv += c["kv_bytes_per_token"]
    for c in (r for (kind, _, _), r in cost_row.items() if kind == "non_block"):
        prefill, decode, params, kv = (
            prefill + c["prefill_ms"],
            decode + c["decode_ms"],
            params + c["param_bytes"],
            kv + c["kv_bytes_per_token"],
        )
    time_ms = prefill + output_len * decode
    memory = params + batch * (input_len + output_len) * kv
    got = {
        "memory_bytes": memory,
        "param_bytes": params,
        "kv_cache_bytes": memory - params,
        "time_ms": time_ms,
        "prefill_ms": prefill,
        "decode_ms": decode,
        "latency_ms": time_ms,
        "throughput_tok_s": batch * output_len / (time_ms / 1000.0) if time_ms > 0 else math.inf,
    }
    for key, value in got.items():
        claimed = solution["costs"].get(key)
        if claimed is None or not _close(float(claimed), value, rel_tol):
            problems.append(f"costs.{key} = {claimed} but the tables give {value}")
    if not _close(float(solution["objective"]), objective, rel_tol):
        problems.append(f"objective = {solution['objective']} but the tables give {objective}")
    for kind, con in solution.get("constraints", {}).items():
        have = got[
            "throughput_tok_s" if kind == "throughput" else "memory_bytes" if kind == "memory" else "latency_ms"
        ]
        ok = have >= con["value"] * (1 - rel_tol) if kind == "throughput" else have <= con["value"] * (1 + rel_tol)
        if not ok:
            problems.append(
                f"constraint {kind} {'>=' if kind == 'throughput' else '<='} {con['value']} violated: {have}"
            )
    if problems:
        raise VerificationError("solution does not verify: " + "; ".join(problems))
    return got


def layers_differing(a: list[dict[str, str]], b: list[dict[str, str]]) -> int:
    return sum((x["attention"], x["ffn"]) != (y["attention"], y["ffn"]) for x, y in zip(a, b))


def check_diversity(solutions: Sequence[dict[str, Any]], min_diff: int) -> None:
    """Every pair of solutions differs in at least `min_diff` layers."""
    for i, a in enumerate(solutions):
        for j, b in enumerate(solutions[:i]):
            d = layers_differing(a["layers"], b["layers"])
            if d < min_diff:
                raise VerificationError(f"solutions {j} and {i} differ in {d} layers: expected at least {min_diff}")
