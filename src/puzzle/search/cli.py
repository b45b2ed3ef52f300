"""`python -m puzzle search`: choose one attention + one FFN variant per layer.

Minimizes the summed replace-1-block metric (KL by default) under throughput, latency and
memory targets with a MIP (Pyomo + HiGHS), or runs one of the paper's baselines; sweeps the
batch sizes of the scenario and keeps the best; writes a verified `solution.json`.

    python -m puzzle search --scores scores.csv --costs costs.csv --throughput 2x --memory 80GiB \\
        [--parent-config config.json] [--scenario chatbot] [--num-solutions 3 --diversity 0.2] \\
        [--method greedy] [--sweep 1.5x 2x 2.5x --out-dir sweep/] --out solution.json
    python -m puzzle search --nvlabs-library block_library.json --throughput 3000 --out solution.json

No torch: plans from tables alone.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pandas as pd

from puzzle import config as config_mod
from puzzle.blocks import ParentShape
from puzzle.config import ConfigError
from puzzle.io import read_json, write_csv, write_json
from puzzle.naming import SolutionId, budget_value
from puzzle.search.nvlabs import nvlabs_tables
from puzzle.search.solve import METHODS, InfeasibleError, Search, pareto_flags
from puzzle.search.tables import METRICS, check_complete, load_costs, load_scores
from puzzle.search.targets import TARGET_KINDS, Target, parse_target


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config_mod.add_arguments(parser)
    io = parser.add_argument_group("inputs and outputs")
    io.add_argument("--scores", help="scores.csv (layer, attention, ffn, kl, lm_loss, token_acc)")
    io.add_argument("--costs", help="costs.csv (kind, variant, scenario, batch, ..., kv_bytes_per_token)")
    io.add_argument("--nvlabs-library", help="NVlabs/puzzle block_library.json instead of --scores/--costs")
    io.add_argument("--nvlabs-measurement", help="its measurement_info.json (default: beside the library)")
    io.add_argument(
        "--export-tables",
        metavar="DIR",
        help="also write the tables read from --nvlabs-library as DIR/scores.csv, DIR/costs.csv",
    )
    io.add_argument("--parent-config", help="parent HF config.json (or its folder): adds Nemotron-NAS block_configs")
    io.add_argument(
        "--multiple-of",
        type=int,
        help="FFN width multiple for block_configs (default: the config's search_space.ffn.multiple_of)",
    )
    io.add_argument(
        "--out", default="solution.json", help="solution file; solution k > 0 of several goes to <stem>_<k>.json"
    )
    io.add_argument("--out-dir", help="sweep output folder (default: the folder of --out)")
    s = parser.add_argument_group("search (override the config's search section)")
    s.add_argument("--method", choices=METHODS)
    s.add_argument("--metric", choices=["kl", "lm_loss", "token_acc"])
    s.add_argument("--scenario")
    s.add_argument("--batch-sizes", type=int, nargs="+", help="candidate batches (default: all in costs.csv)")
    s.add_argument("--throughput", help="tok/s, or a factor of the parent's like 2x")
    s.add_argument("--memory", help="bytes, 80GiB, 512MiB, or a factor of the parent's like 0.5x")
    s.add_argument("--latency", help="ms, '250ms', '0.25s', or a factor of the parent's like 0.5x")
    s.add_argument("--num-solutions", type=int)
    s.add_argument("--diversity", type=float, help="fraction of layers each solution must change vs every earlier one")
    s.add_argument(
        "--budget",
        help="one budget as <resource>_<value>[@<method|metric>[-s<seed>]] (e.g. throughput_2x, "
        "throughput_2x@greedy): how the workflow names a solution",
    )
    s.add_argument("--sweep", nargs="+", help="budgets on --sweep-resource, one solution set per budget")
    s.add_argument("--sweep-resource", choices=TARGET_KINDS)
    s.add_argument("--time-limit-s", type=float)
    s.add_argument("--mip-gap", type=float)
    s.add_argument("--seed", type=int)
    s.add_argument("--random-samples", type=int)


def budget_settings(budget: str) -> dict[str, Any]:
    """The search settings a budget names (`--budget`, how the workflow names a solution): its target
    (every target None for `unconstrained`), no sweep, and the method or metric of its @-suffix with
    its seed. A block library (`@bld-<name>`) or random weights (`scratch`) change the workflow's
    inputs, not the search."""
    sid = SolutionId.parse(budget)
    out: dict[str, Any] = {k: None for k in TARGET_KINDS} if sid.kind is None else {sid.kind: sid.value}
    out["sweep"] = []
    if sid.search is not None:
        if sid.search not in (*METHODS, *METRICS):
            raise ConfigError(
                f"--budget suffix @{sid.search}: expected @<method or metric>[-s<seed>] with one of "
                f"{[*METHODS, *METRICS]}, or @bld-<library>"
            )
        out["method" if sid.search in METHODS else "metric"] = sid.search
    if sid.seed is not None:
        out["seed"] = sid.seed
    return out


def _config(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """The whole validated config, and its search section with command-line overrides on top."""
    whole = config_mod.from_args(args)
    overrides = {k: getattr(args, k) for k in whole["search"] if getattr(args, k, None) is not None}
    if getattr(args, "budget", None):
        overrides.update(budget_settings(args.budget))
    return whole, config_mod.validate(config_mod.deep_merge(whole, {"search": overrides}), stage="search")["search"]


def _parent(args: argparse.Namespace, whole: dict[str, Any]) -> ParentShape | None:
    """--parent-config, else the experiment's parent when the config names one (--config, or
    --cfg JSON with a parent section); else None (block_configs are then left out)."""
    if args.parent_config:
        p = Path(args.parent_config)
        p = p / "config.json" if p.is_dir() else p
        if not p.exists():
            raise ConfigError(
                f"--parent-config {args.parent_config!r}: expected a config.json or a folder holding one"
            )
        return ParentShape.from_config(read_json(p))
    named = bool(getattr(args, "config", None)) or "parent" in json.loads(getattr(args, "cfg", None) or "{}")
    return ParentShape.from_config(config_mod.parent_config(whole)) if named else None


def _tables(args: argparse.Namespace) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, str]]:
    if args.nvlabs_library:
        lib = Path(args.nvlabs_library)
        meas = Path(args.nvlabs_measurement) if args.nvlabs_measurement else lib.with_name("measurement_info.json")
        for p, flag in ((lib, "--nvlabs-library"), (meas, "--nvlabs-measurement")):
            if not p.exists():
                raise ConfigError(f"{flag} {str(p)!r}: file does not exist")
        scores, costs = nvlabs_tables(read_json(lib), read_json(meas))
        if args.export_tables:
            write_csv(Path(args.export_tables) / "scores.csv", scores)
            write_csv(Path(args.export_tables) / "costs.csv", costs)
        return scores, costs, {"nvlabs_library": str(lib), "nvlabs_measurement": str(meas)}
    if not (args.scores and args.costs):
        raise ConfigError("expected --scores and --costs, or --nvlabs-library")
    return load_scores(args.scores), load_costs(args.costs), {"scores": args.scores, "costs": args.costs}


def _solution_path(out: Path, k: int) -> Path:
    return out if k == 0 else out.with_name(f"{out.stem}_{k}{out.suffix}")


def _write_solutions(path: Path, records: list[dict[str, Any]], inputs: dict[str, str]) -> None:
    for k, rec in enumerate(records):
        rec["inputs"] = inputs
        write_json(_solution_path(path, k), rec)


def _write_sweep(
    out_dir: Path, kind: str, points: list[Target], results: list[Any], inputs: dict[str, str]
) -> pd.DataFrame:
    """One folder per budget, named as the workflow names it (`throughput_2x/solution.json`), and
    `sweep.csv` with a Pareto column."""
    rows = []
    for point, result in zip(points, results):
        row = {"target": point.text, "kind": kind}
        if isinstance(result, InfeasibleError):
            rows.append({**row, "status": "infeasible", "message": str(result)})
            continue
        path = out_dir / SolutionId(None, None, kind, budget_value(point.text)).budget / "solution.json"
        _write_solutions(path, result, inputs)
        best = result[0]
        rows.append(
            {
                **row,
                "status": "ok",
                "value": best["constraints"][kind]["value"],
                "batch": best["scenario"]["batch"],
                "sense": best["sense"],
                "objective": best["objective"],
                "solutions": len(result),
                **{c: best["costs"][c] for c in ("throughput_tok_s", "memory_bytes", "latency_ms")},
                "path": str(path),
                "message": "",
            }
        )
    table = pd.DataFrame(rows)
    if (table["status"] == "ok").any():
        table["pareto"] = pareto_flags(table)
    write_csv(out_dir / "sweep.csv", table)
    return table


def main(args: argparse.Namespace) -> None:
    whole, cfg = _config(args)
    scores, costs, inputs = _tables(args)
    shape = _parent(args, whole)
    if shape is not None:
        check_complete(scores, shape.num_hidden_layers, path=inputs.get("scores"))
    targets = {k: t for k in TARGET_KINDS if (t := parse_target(k, cfg[k])) is not None}
    kind = cfg["sweep_resource"]
    points = [parse_target(kind, v) for v in cfg["sweep"]]
    search = Search(
        scores,
        costs,
        metric=cfg["metric"],
        scenario=cfg["scenario"],
        batch_sizes=cfg["batch_sizes"] or None,
        parent_shape=shape,
        multiple_of=args.multiple_of or whole["search_space"]["ffn"]["multiple_of"],
        kinds=set(targets) | ({kind} if points else set()),
        time_limit_s=cfg["time_limit_s"],
        mip_gap=cfg["mip_gap"],
    )
    run_kwargs = dict(
        method=cfg["method"],
        num_solutions=cfg["num_solutions"],
        diversity=cfg["diversity"],
        seed=cfg["seed"],
        random_samples=cfg["random_samples"],
    )
    out = Path(args.out)
    if points:
        out_dir = Path(args.out_dir) if args.out_dir else out.parent
        fixed = {k: t for k, t in targets.items() if k != kind}
        table = _write_sweep(out_dir, kind, points, search.sweep(kind, points, fixed, **run_kwargs), inputs)
        print(
            f"search: {(table['status'] == 'ok').sum()} of {len(table)} {kind} budgets feasible "
            f"-> {out_dir / 'sweep.csv'}"
        )
        return
    records = search.run(targets, **run_kwargs)
    _write_solutions(out, records, inputs)
    best = records[0]
    c, pc = best["costs"], best["parent"]["costs"]
    speed = f"{c['throughput_tok_s'] / pc['throughput_tok_s']:.2f}x the parent"
    if "time_ms_lo" in c:  # costs with intervals: the speed-up's, from both architectures' bounds
        speed += f" (in [{pc['time_ms_lo'] / c['time_ms_hi']:.2f}, {pc['time_ms_hi'] / c['time_ms_lo']:.2f}])"
    print(
        f"search: {best['method']} {best['metric']} objective {best['objective']:.6g} "
        f"at batch {best['scenario']['batch']}: "
        f"{c['throughput_tok_s']:.1f} tok/s, {speed}, {c['memory_bytes'] / 2**30:.2f} GiB, "
        f"{c['latency_ms']:.1f} ms -> {out} ({len(records)} solution(s))"
    )
