"""`python -m puzzle report <artifact> ...`: analogues of the paper's tables and figures.

Each artifact is a subcommand that takes exactly the flags it reads: explicit input files (search
solutions, eval JSONs, costs.csv, a budget sweep). A table (puzzle.paper.tables) is written as OUT.csv
and OUT.md, a figure (puzzle.paper.figures) as OUT.png.

    python -m puzzle report table1  --child SOLUTION EVAL_DIR --out paper/table1
    python -m puzzle report table13 --child MIP_SOLUTION EVAL_DIR --child GREEDY_SOLUTION EVAL_DIR --out paper/table13
    python -m puzzle report fig8    --sweep SWEEP_DIR --costs costs.csv --solution SOLUTION --out paper/fig8

No torch here.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from puzzle.config import ConfigError
from puzzle.io import read_json
from puzzle.paper import figures, tables
from puzzle.paper.child import Child, load_child

_CHILD = ("SOLUTION", "EVAL_DIR")
_CHILD_HELP = "its solution.json and its eval folder (parent.json, child.json, gkd.json)"

# Every flag an artifact may read, each defined once: key -> (option, add_argument keywords).
FLAGS: dict[str, tuple[str, dict[str, Any]]] = {
    "child": ("--child", {"nargs": 2, "required": True, "metavar": _CHILD, "help": f"the child: {_CHILD_HELP}"}),
    "children": (
        "--child",
        {
            "dest": "children",
            "nargs": 2,
            "action": "append",
            "required": True,
            "metavar": _CHILD,
            "help": f"a child, the experiment's own first: {_CHILD_HELP}; repeatable",
        },
    ),
    "library": (
        "--library",
        {
            "action": "append",
            "required": True,
            "metavar": "LIBRARY_DIR",
            "help": "each --child's block library folder, in the same order",
        },
    ),
    "paper_scenario": (
        "--paper-scenario",
        {
            "action": "append",
            "default": [],
            "metavar": "OURS=PAPER",
            "help": "our scenario name = a Table 2 row (e.g. gen_32_128='Text Generation'); repeatable",
        },
    ),
    "loss_eval": (
        "--loss-eval",
        {"required": True, "metavar": "EVAL_DIR", "help": "eval folder with one {loss}.json per GKD loss variant"},
    ),
    "variant": (
        "--variant",
        {
            "action": "append",
            "required": True,
            "metavar": "LOSS=GKD_DIR",
            "help": "a GKD loss variant and its output folder; repeatable",
        },
    ),
    "scratch_eval": (
        "--scratch-eval",
        {"required": True, "metavar": "EVAL_DIR", "help": "eval folder with parent.json, child.json and scratch.json"},
    ),
    "scratch": (
        "--scratch",
        {"required": True, "metavar": "MODEL_DIR", "help": "the model trained from scratch (its config and report)"},
    ),
    "budget_eval": (
        "--budget-eval",
        {"required": True, "metavar": "EVAL_DIR", "help": "eval folder with one {budget}.json per GKD budget"},
    ),
    "budget": (
        "--budget",
        {
            "action": "append",
            "required": True,
            "metavar": "BUDGET=GKD_DIR",
            "help": "a GKD budget and its output folder (report.json); repeatable",
        },
    ),
    "parent": (
        "--parent",
        {"required": True, "metavar": "PARENT_DIR", "help": "the parent (its report.json, when it was trained here)"},
    ),
    "compressed": (
        "--compressed",
        {
            "nargs": 2,
            "action": "append",
            "required": True,
            "metavar": ("NAME=FOLDER", "EVAL_JSON"),
            "help": "a compressed parent (folder with compress.json) and its eval JSON; repeatable",
        },
    ),
    "sweep": (
        "--sweep",
        {"required": True, "help": "folder of `puzzle search --sweep` (sweep.csv + one folder per budget)"},
    ),
    "costs": ("--costs", {"required": True, "help": "costs.csv of the search's target"}),
    "solution": ("--solution", {"required": True, "help": "the experiment's solution.json"}),
}


@dataclass(frozen=True)
class Artifact:
    """One `puzzle report` subcommand: the FLAGS it reads, its help, and what it makes of them: a
    table's frame (`table`) or a figure written to a path (`figure`)."""

    flags: tuple[str, ...]
    help: str
    table: Callable[[argparse.Namespace], pd.DataFrame] | None = None
    figure: Callable[[argparse.Namespace, Path], None] | None = None


def _child(args: argparse.Namespace) -> Child:
    return load_child(*args.child)


def _children(args: argparse.Namespace) -> list[Child]:
    return [load_child(s, e) for s, e in args.children]


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    pairs = [i.split("=", 1) for i in items]
    if any(len(p) != 2 for p in pairs):
        raise ConfigError(f"config error: {flag} {items}: expected NAME=VALUE")
    return dict(pairs)


def _table5(args: argparse.Namespace) -> pd.DataFrame:
    evals = {m: read_json(Path(args.scratch_eval) / f"{m}.json") for m in ("parent", "child", "scratch")}
    scratch = {f: read_json(Path(args.scratch) / f"{f}.json") for f in ("config", "report")}
    return tables.table5(_child(args), evals, scratch)


def _table6(args: argparse.Namespace) -> pd.DataFrame:
    budgets = _pairs(args.budget, "--budget")
    evals = {n: read_json(Path(args.budget_eval) / f"{n}.json") for n in budgets}
    reports = {n: read_json(Path(d) / "report.json") for n, d in budgets.items()}
    parent_report = Path(args.parent) / "report.json"  # only a parent trained here has one
    tokens = read_json(parent_report)["tokens_seen"] if parent_report.exists() else math.nan
    return tables.table6(_child(args), evals, reports, tokens)


def _table17(args: argparse.Namespace) -> pd.DataFrame:
    losses = _pairs(args.variant, "--variant")
    evals = {n: read_json(Path(args.loss_eval) / f"{n}.json") for n in losses}
    reports = {n: read_json(Path(d) / "report.json") for n, d in losses.items()}
    return tables.table17(_child(args), evals, reports)


def _table18(args: argparse.Namespace) -> pd.DataFrame:
    compressed = {}
    for name_dir, ev in args.compressed:
        name, _, folder = name_dir.partition("=")
        if not folder:
            raise ConfigError(f"config error: --compressed {name_dir}: expected NAME=FOLDER EVAL_JSON")
        compressed[name] = (read_json(Path(folder) / "compress.json"), read_json(ev))
    return tables.table18(_child(args), compressed)


def _library_ablation(name: str, varies: str) -> Artifact:
    return Artifact(
        ("children", "library"),
        f"the same search on block libraries of another BLD {varies}, with what each BLD spent",
        table=lambda a: tables.library_ablation(name, _children(a), a.library),
    )


def _search_ablation(name: str, search: str) -> Artifact:
    return Artifact(
        ("children",),
        f"the experiment's child beside {search}, predicted and measured, before and after GKD",
        table=lambda a: tables.search_ablation(name, _children(a)),
    )


ARTIFACTS: dict[str, Artifact] = {
    "table1": Artifact(
        ("child",), "quality retained per metric, parent vs child after GKD", table=lambda a: tables.table1(_child(a))
    ),
    "table2": Artifact(
        ("child", "paper_scenario"),
        "measured throughput per timed scenario, parent vs child after GKD, and the search's prediction",
        table=lambda a: tables.table2(_child(a), _pairs(a.paper_scenario, "--paper-scenario")),
    ),
    "table5": Artifact(
        ("child", "scratch_eval", "scratch"),
        "the child beside a smaller model trained from scratch on the parent's tokens, near its throughput",
        table=_table5,
    ),
    "table6": Artifact(
        ("child", "budget_eval", "budget", "parent"),
        "one row per GKD token budget, with the share of the parent's training tokens",
        table=_table6,
    ),
    "table8": _library_ablation("table8", "mode (coupled / decoupled)"),
    "table9": _library_ablation("table9", "corpus (narrow / mixed)"),
    "table10": _library_ablation("table10", "token budget"),
    "table11": _search_ablation("table11", "one searched with LM-loss scores"),
    "table12": _search_ablation("table12", "one searched among no-op variants only"),
    "table13": _search_ablation("table13", "the greedy search's"),
    "table14": _search_ablation("table14", "one that keeps the most parameters"),
    "table15": _search_ablation("table15", "random architectures and random weights"),
    "table16": Artifact(("child",), "parent, child before and after GKD", table=lambda a: tables.table16(_child(a))),
    "table17": Artifact(("child", "loss_eval", "variant"), "one row per GKD loss combination", table=_table17),
    "table18": Artifact(("child", "compressed"), "the child beside the parent compressed otherwise", table=_table18),
    "fig5": Artifact(
        ("children", "sweep"),
        "accuracy vs throughput with the efficient frontier, predicted and measured",
        figure=lambda a, out: figures.fig5(a.sweep, _children(a), out),
    ),
    "fig6": Artifact(
        ("costs", "solution"),
        "per-layer runtime of the child's attention and FFN relative to the parent's",
        figure=lambda a, out: figures.fig6(a.costs, a.solution, out),
    ),
    "fig7": Artifact(
        ("children",),
        "children scored by KL vs LM loss: accuracy after GKD vs throughput",
        figure=lambda a, out: figures.fig7(_children(a), out),
    ),
    "fig8": Artifact(
        ("sweep", "costs", "solution"),
        "heatmaps of the sweep's chosen subblocks' runtime, per target and layer",
        figure=lambda a, out: figures.fig8(a.sweep, a.costs, a.solution, out),
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="artifact", metavar="<artifact>", required=True)
    for name, artifact in ARTIFACTS.items():
        p = sub.add_parser(name, help=artifact.help, description=f"{name}: {artifact.help}")
        for key in artifact.flags:
            option, kwargs = FLAGS[key]
            p.add_argument(option, **kwargs)
        p.add_argument("--out", required=True, help="output stem: tables write OUT.csv + OUT.md, figures OUT.png")


def main(args: argparse.Namespace) -> None:
    out = Path(args.out)
    artifact = ARTIFACTS[args.artifact]
    if artifact.table is not None:
        tables.write_table(artifact.table(args), args.artifact, out)
        print(f"report: {args.artifact} -> {out.with_suffix('.csv')}, {out.with_suffix('.md')}")
    else:
        artifact.figure(args, out.with_suffix(".png"))
        print(f"report: {args.artifact} -> {out.with_suffix('.png')}")
