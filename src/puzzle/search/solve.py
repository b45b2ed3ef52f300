"""A whole search: the instances at every candidate batch of a scenario, solved by the MIP or a
baseline, verified, best batch kept; several diverse solutions, budget sweeps, and the binding
target named when a budget is infeasible.

Data flows one way: tables -> instance -> mip / baselines -> here -> cli.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from puzzle.blocks import ParentShape, block_config
from puzzle.config import ConfigError
from puzzle.search import baselines
from puzzle.search.instance import build_instance, parent_pair, resource_bounds, scenario_batches, threshold_value
from puzzle.search.mip import SOLVER_INTERFACE, SOLVER_NAME, Mip, check_diversity, min_differing, verify
from puzzle.search.targets import RESOURCE_OF, TARGET_KINDS, TOTAL_OF, UNIT_OF, Target, fmt, tighter

METHODS = ("mip", "greedy", "noop_only", "max_params", "random", "homogeneous")
MIP_METHODS = ("mip", "noop_only", "max_params")
MAX_PARAMS_GAP = 1e-3  # relative optimality gap of the max_params baseline (at least)


class InfeasibleError(ConfigError):
    """No architecture meets the targets. `thresholds`: kind -> (best feasible value, batch) for
    each binding target (largest throughput, smallest memory or latency under the others)."""

    def __init__(self, message: str, thresholds: dict[str, tuple[float, int]]) -> None:
        super().__init__(message)
        self.thresholds = thresholds


@dataclass
class Found:
    choice: np.ndarray
    rank: float  # the method's own objective at this batch (lower is better)
    solver: dict[str, Any]


class Search:
    """One search problem at every candidate batch of a scenario: instances, targets, MIPs.

    `kinds` lists every target kind any call will constrain, so each batch's MIP is built once
    (with those resources) and reused across budgets, solutions and baselines; naming fewer than
    all three lets dominance drop more options. Relative targets ("2x") resolve against the
    parent at the same scenario and batch.
    """

    def __init__(
        self,
        scores: pd.DataFrame,
        costs: pd.DataFrame,
        *,
        metric: str = "kl",
        scenario: str | None = None,
        batch_sizes: list[int] | None = None,
        parent_shape: ParentShape | None = None,
        multiple_of: int = 256,
        kinds: set[str] | tuple[str, ...] = TARGET_KINDS,
        time_limit_s: float = 60.0,
        mip_gap: float = 0.0,
    ) -> None:
        self.scores, self.costs, self.metric = scores, costs, metric
        self.parent_shape, self.multiple_of = parent_shape, multiple_of  # for block_configs
        self.pair = parent_pair(scores, parent_shape)
        self.scenario, self.batches = scenario_batches(costs, scenario, batch_sizes)
        self.instances = {b: build_instance(scores, costs, self.scenario, b, metric, self.pair) for b in self.batches}
        self.parent_totals = {b: inst.totals(inst.parent_choice) for b, inst in self.instances.items()}
        self.resources = sorted({RESOURCE_OF[k] for k in kinds})
        self.time_limit_s, self.mip_gap = time_limit_s, mip_gap
        self._mips: dict[tuple[int, str, int], Mip] = {}
        self._last: dict[tuple[int, str], np.ndarray] = {}  # warm starts across budgets

    @property
    def num_layers(self) -> int:
        return self.instances[self.batches[0]].num_layers

    def mip(self, batch: int, method: str, max_previous: int = 0) -> Mip:
        """The batch's persistent MIP for a method's space and objective (built on first use)."""
        space = method if method in MIP_METHODS else "mip"
        key = (batch, space, max_previous)
        if key not in self._mips:
            inst = self.instances[batch]
            objective = (
                -inst.options["param_bytes"].to_numpy()
                if space == "max_params"
                else inst.options["objective"].to_numpy()
            )
            allowed = baselines.noop_only_mask(inst) if space == "noop_only" else None
            # Most parameters under a memory bound is subset-sum-like: exact proofs can take minutes
            gap = max(self.mip_gap, MAX_PARAMS_GAP) if space == "max_params" else self.mip_gap
            self._mips[key] = Mip(
                inst.group,
                objective,
                {r: inst.resource(r) for r in self.resources},
                allowed=allowed,
                max_previous=max_previous,
                time_limit_s=self.time_limit_s,
                mip_gap=gap,
            )
        return self._mips[key]

    def resolve(self, targets: dict[str, Target], batch: int) -> dict[str, float]:
        return {k: t.resolve(self.parent_totals[batch]) for k, t in targets.items()}

    # ---- one batch ------------------------------------------------------------------------------

    def _solve_batch(
        self,
        method: str,
        batch: int,
        bounds: dict[str, float],
        previous: list[np.ndarray],
        min_diff: int,
        max_previous: int,
        seed: int,
        random_samples: int,
    ) -> Found | None:
        inst = self.instances[batch]
        t0 = time.perf_counter()
        if method in MIP_METHODS:
            mip = self.mip(batch, method, max_previous)
            start = (
                mip.diverse_start(previous[-1], previous, min_diff) if previous else self._last.get((batch, method))
            )
            res = mip.solve(bounds, previous, min_diff, start=start)
            if res is None:
                return None
            self._last[(batch, method)] = res.choice
            solver = {
                "name": SOLVER_NAME,
                "interface": SOLVER_INTERFACE,
                "status": res.status,
                "solve_time_s": res.solve_time_s,
                "build_time_s": mip.setup_time_s,
                "options_kept": len(mip.kept),
                "options": len(inst.options),
                "mip_gap": mip.mip_gap,
                "time_limit_s": self.time_limit_s,
            }
            return Found(res.choice, res.objective, solver)
        extra: dict[str, Any] = {}
        if method == "greedy":
            choice = baselines.greedy(inst, bounds)
        elif method == "homogeneous":
            choice = baselines.homogeneous(inst, bounds)
        else:
            choice, drawn = baselines.random_search(inst, bounds, seed, random_samples)
            extra = {"seed": seed, "samples_drawn": drawn, "samples_max": random_samples}
        if choice is None:
            return None
        solver = {"name": method, "status": "feasible", "solve_time_s": time.perf_counter() - t0, **extra}
        return Found(choice, float(inst.options["objective"].to_numpy()[choice].sum()), solver)

    # ---- a whole search ------------------------------------------------------------------------

    def run(
        self,
        targets: dict[str, Target],
        *,
        method: str = "mip",
        num_solutions: int = 1,
        diversity: float = 0.2,
        seed: int = 0,
        random_samples: int = 100_000,
    ) -> list[dict[str, Any]]:
        """Up to `num_solutions` verified solution records, best first; InfeasibleError if none."""
        if method not in METHODS:
            raise ConfigError(f"search.method = {method!r}: expected one of {list(METHODS)}")
        if num_solutions > 1 and method not in MIP_METHODS:
            raise ConfigError(
                f"search.num_solutions = {num_solutions}: expected 1 for method {method!r} "
                f"(several need a MIP method {list(MIP_METHODS)})"
            )
        unknown = {RESOURCE_OF[k] for k in targets} - set(self.resources)
        if unknown:
            raise ValueError(f"targets on {sorted(unknown)} but this Search was built for {self.resources}")
        resolved = {b: self.resolve(targets, b) for b in self.batches}
        bounds = {b: resource_bounds(self.instances[b], resolved[b]) for b in self.batches}
        min_diff = min_differing(self.num_layers, diversity)
        records: list[dict[str, Any]] = []
        previous: list[np.ndarray] = []
        for k in range(num_solutions):
            best: tuple[int, Found] | None = None
            tried = []
            for b in self.batches:
                found = self._solve_batch(
                    method, b, bounds[b], previous, min_diff, num_solutions - 1, seed, random_samples
                )
                tried.append(
                    {
                        "batch": b,
                        "status": found.solver["status"] if found else "infeasible",
                        "objective": self.instances[b].objective(found.choice) if found else None,
                    }
                )
                if found and (best is None or self._better(found, b, *best)):
                    best = (b, found)
            if best is None:
                if k == 0:
                    raise self.explain_infeasible(method, targets, resolved)
                print(
                    f"search: found {k} solutions differing in >= {min_diff} layers (asked for {num_solutions})",
                    file=sys.stderr,
                )
                break
            b, found = best
            if found.solver["status"] not in ("optimal", "feasible"):  # feasible: a baseline's answer
                print(
                    f"search: HiGHS stopped early ({found.solver['status']}); solution {k} may not be optimal",
                    file=sys.stderr,
                )
            record = self.record(method, b, found, targets, resolved[b], tried)
            if num_solutions > 1:
                record.update(solution_index=k, diversity=diversity, min_layers_differing=min_diff)
            verify(record, self.scores, self.costs)
            record["verified"] = True
            records.append(record)
            previous.append(found.choice)
        check_diversity(records, min_diff if num_solutions > 1 else 0)
        return records

    def _better(self, found: Found, batch: int, best_batch: int, best: Found) -> bool:
        """Lower objective wins; a tie (to 1e-9) goes to the higher throughput."""
        tol = 1e-9 * max(1.0, abs(best.rank))
        if found.rank < best.rank - tol:
            return True
        if found.rank > best.rank + tol:
            return False
        tput = self.instances[batch].totals(found.choice)["throughput_tok_s"]
        return tput > self.instances[best_batch].totals(best.choice)["throughput_tok_s"]

    def record(
        self,
        method: str,
        batch: int,
        found: Found,
        targets: dict[str, Target],
        resolved: dict[str, float],
        tried: list[dict[str, Any]],
    ) -> dict[str, Any]:
        """The solution.json content of one architecture."""
        inst = self.instances[batch]
        rows = inst.options.iloc[found.choice]
        layers = [{"attention": a, "ffn": f} for a, f in zip(rows["attention"], rows["ffn"])]
        out: dict[str, Any] = {
            "method": method,
            "metric": self.metric,
            "sense": "maximize" if self.metric == "token_acc" else "minimize",
            "objective": inst.objective(found.choice),
            "scenario": {
                "name": inst.scenario,
                "batch": batch,
                "input_len": inst.input_len,
                "output_len": inst.output_len,
            },
            "constraints": {
                k: {
                    "requested": t.text,
                    "value": resolved[k],
                    "unit": UNIT_OF[k],
                    "relative_to_parent": t.value if t.relative else None,
                }
                for k, t in targets.items()
            },
            "costs": inst.totals(found.choice),
            "parent": {
                "attention": self.pair[0],
                "ffn": self.pair[1],
                "objective": 0.0,
                "costs": self.parent_totals[batch],
            },
            "num_layers": inst.num_layers,
            "layers": layers,
        }
        if self.parent_shape is not None:
            out["block_configs"] = [
                block_config(x["attention"], x["ffn"], self.parent_shape, self.multiple_of).to_dict() for x in layers
            ]
        out["solver"] = found.solver
        out["batches"] = tried
        return out

    # ---- infeasible budgets ----------------------------------------------------------------------

    def explain_infeasible(
        self, method: str, targets: dict[str, Target], resolved: dict[int, dict[str, float]]
    ) -> InfeasibleError:
        """Name the binding target(s) and the best value each could have: the least of its resource
        under the targets on other resources (a MIP per batch; the best batch wins)."""
        asked = (
            ", ".join(f"{k} {'>=' if k == 'throughput' else '<='} {t.text}" for k, t in targets.items())
            or "no targets"
        )
        space = "noop_only" if method == "noop_only" else "mip"
        if method not in MIP_METHODS:
            for b in self.batches:
                if self.mip(b, "mip").solve(resource_bounds(self.instances[b], resolved[b])) is not None:
                    return InfeasibleError(
                        f"method {method} found no architecture with {asked}, but the MIP does (at batch {b})", {}
                    )
        best: dict[str, tuple[float, int]] = {}
        for alone in (False, True):  # first under the other targets, then (if none binds) each on its own
            for b in self.batches:
                inst, mip = self.instances[b], self.mip(b, space)
                for kind in targets:
                    others = (
                        {} if alone else {k: v for k, v in resolved[b].items() if RESOURCE_OF[k] != RESOURCE_OF[kind]}
                    )
                    res = mip.solve(resource_bounds(inst, others), minimize=RESOURCE_OF[kind])
                    if res is None:
                        continue
                    value = threshold_value(inst, kind, res.objective)
                    if tighter(kind, resolved[b][kind], value) and (
                        kind not in best or tighter(kind, value, best[kind][0])
                    ):
                        best[kind] = (value, b)
            if best:
                break
        if not best:
            return InfeasibleError(f"no architecture meets {asked} together at batches {self.batches}", {})
        parts = []
        for kind, (value, b) in best.items():
            rel = value / self.parent_totals[b][TOTAL_OF[kind]]
            word = "largest" if kind == "throughput" else "smallest"
            parts.append(
                f"{kind} {targets[kind].text} ({fmt(kind, resolved[b][kind])} at batch {b}) is binding: "
                f"the {word} feasible is {fmt(kind, value)} ({rel:.4f}x the parent) at batch {b}"
            )
        space_note = " in the no-op-only space" if space == "noop_only" else ""
        return InfeasibleError(f"infeasible{space_note} with {asked}: " + "; ".join(parts), best)

    # ---- budget sweeps ---------------------------------------------------------------------------

    def sweep(
        self,
        kind: str,
        points: list[Target],
        fixed: dict[str, Target],
        **run_kwargs: Any,
    ) -> list[list[dict[str, Any]] | InfeasibleError]:
        """One `run` per budget on `kind` (other targets fixed); results in the order given, solved
        loosest first: an optimum that still fits a tighter budget is its optimum too, with no solve."""
        first = self.batches[0]
        order = sorted(
            range(len(points)),
            key=lambda i: points[i].resolve(self.parent_totals[first]),
            reverse=kind != "throughput",
        )
        results: list[Any] = [None] * len(points)
        for i in order:
            try:
                results[i] = self.run({**fixed, kind: points[i]}, **run_kwargs)
            except InfeasibleError as err:
                results[i] = err
        return results


def pareto_flags(rows: pd.DataFrame) -> np.ndarray:
    """Which feasible sweep points no other point beats in objective, throughput and memory at once."""
    ok = rows["status"] == "ok"
    sign = -1 if (rows["sense"] == "maximize").any() else 1
    v = np.column_stack([sign * rows["objective"], -rows["throughput_tok_s"], rows["memory_bytes"]])
    flags = np.zeros(len(rows), dtype=bool)
    for i in np.flatnonzero(ok):
        others = v[ok.to_numpy() & (np.arange(len(rows)) != i)]
        dominated = ((others <= v[i]).all(1) & (others < v[i]).any(1)).any()
        flags[i] = not dominated
    return flags
