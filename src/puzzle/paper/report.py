"""`python -m puzzle report <artifact> ...`: analogues of the paper's tables and figures.

One function per artifact, from explicit input files (search solutions, eval JSONs, costs.csv,
a budget sweep); a table is written as OUT.csv and OUT.md with `paper_*` columns holding the
paper's numbers (PAPER, from PAPER.md section 7) for the matching row; a figure as OUT.png.

    python -m puzzle report table1  --child SOLUTION EVAL_DIR --out paper/table1
    python -m puzzle report table13 --child MIP_SOLUTION EVAL_DIR --child GREEDY_SOLUTION EVAL_DIR --out paper/table13
    python -m puzzle report fig8    --sweep SWEEP_DIR --costs costs.csv --solution SOLUTION --out paper/fig8

"Accuracy" at this scale is next-token accuracy on the test shard (the paper's is MMLU / MT-Bench);
throughput ratios are measured against the parent in the same evaluate job. No torch here.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from puzzle import config as config_mod
from puzzle.config import ConfigError
from puzzle.io import atomic_path, read_json, write_csv, write_text
from puzzle.naming import SolutionId
from puzzle.search.tables import load_costs

# the paper's numbers beside ours (PAPER.md section 7, ICML numbering): package data, like the schema
PAPER: dict[str, dict[str, Any]] = yaml.safe_load(resources.files("puzzle.paper").joinpath("numbers.yaml").read_text())

GKD_TERMS = ("cosine", "kl", "lm")  # the order of config gkd.loss; loss names join them with "+"
QUALITY = ("lm_loss", "kl", "token_acc")


# ---- inputs --------------------------------------------------------------------------------------


@dataclass
class Child:
    """One searched child: its solution.json and the eval JSONs of parent, child (pre-GKD) and gkd."""

    solution: dict[str, Any]
    evals: dict[str, dict[str, Any]]
    budget: str = ""  # the solution's folder name (rules/search.smk), e.g. throughput_2x@random-s0-scratch

    @property
    def id(self) -> SolutionId | None:
        """The solution id its folder name spells (rules/search.smk); None for a folder the workflow
        did not name (a solution.json searched by hand has no ablation suffix)."""
        try:
            return SolutionId.parse(self.budget)
        except ConfigError:
            return None

    @property
    def random_weights(self) -> bool:
        """Assembled with random weights (Table 15: `...scratch` budgets)."""
        return self.id is not None and self.id.scratch

    @property
    def key(self) -> str:
        """The PAPER row this child stands for: its method, or its metric when the MIP scored with another."""
        s = self.solution
        if self.random_weights:  # the unconstrained search's child is the parent's architecture
            return "parent_randomized" if self.id.kind is None else "fully_random"
        return s["metric"] if s["method"] == "mip" and s["metric"] != "kl" else s["method"]

    @property
    def label(self) -> str:
        s = self.solution
        seed = f" seed {s['solver']['seed']}" if "seed" in s["solver"] else ""
        if self.random_weights:
            return f"{self.key.replace('_', ' ')}: {s['method']}{seed} architecture, random weights"
        return f"{s['method']}{seed} ({s['metric']})"

    @property
    def scenario_key(self) -> str:
        """The key of the solution's own scenario in the eval JSONs (evaluate.scenario_key)."""
        s = self.solution["scenario"]
        return f"{s['name']}_b{s['batch']}"

    def predicted_speedup(self) -> float:
        s = self.solution
        return s["costs"]["throughput_tok_s"] / s["parent"]["costs"]["throughput_tok_s"]

    def measured_speedup(self, model: str = "gkd") -> float:
        return self.evals[model]["throughput_ratio"][self.scenario_key]


def load_child(solution: str | Path, eval_dir: str | Path) -> Child:
    evals = {m: read_json(Path(eval_dir) / f"{m}.json") for m in ("parent", "child", "gkd")}
    return Child(read_json(solution), evals, Path(solution).parent.name)


def quality(row: dict[str, Any]) -> dict[str, float]:
    """Quality of one eval JSON; retained % as evaluate defines it (token_acc model/parent, lm_loss parent/model)."""
    out = {k: row["quality"][k] for k in QUALITY}
    out.update({f"retained_{k}_pct": v for k, v in row["retained_pct"].items()})
    return out


def with_paper(frame: pd.DataFrame, artifact: str, keys: list[str | None]) -> pd.DataFrame:
    """`frame` plus the paper's numbers of the row each key names (paper_row, paper_<column>)."""
    rows = PAPER[artifact]["rows"]
    columns = list(dict.fromkeys(c for r in rows.values() for c in r))
    paper = pd.DataFrame([{f"paper_{c}": rows.get(k, {}).get(c) for c in columns} for k in keys], index=frame.index)
    return pd.concat([frame, paper], axis=1)


# ---- tables --------------------------------------------------------------------------------------


def table1(child: Child) -> pd.DataFrame:
    """Quality retained per metric: parent vs the Puzzle child after GKD."""
    parent, final = child.evals["parent"], child.evals["gkd"]
    frame = pd.DataFrame(
        {
            "metric": m,
            "parent": parent["quality"][m],
            "child": final["quality"][m],
            "retained_pct": final["retained_pct"].get(m, math.nan),
        }  # KL has no ratio: the parent's is 0
        for m in QUALITY
    )
    return with_paper(frame, "table1", list(frame["metric"]))


def table2(child: Child, paper_scenarios: dict[str, str]) -> pd.DataFrame:
    """Measured throughput per timed scenario, parent vs child after GKD; the MIP's prediction for the
    solution's own scenario. `paper_scenarios` maps our scenario names to Table 2's rows."""
    parent, final = child.evals["parent"], child.evals["gkd"]
    rows = []
    for key, t in final["throughput"].items():
        name = key.rsplit("_b", 1)[0]
        rows.append(
            {
                "scenario": name,
                "batch": t["batch"],
                "input_len": t["input_len"],
                "output_len": t["output_len"],
                "parent_tok_s": parent["throughput"][key]["tokens_per_s"],
                "child_tok_s": t["tokens_per_s"],
                "speedup": final["throughput_ratio"][key],
                "predicted_speedup": child.predicted_speedup() if key == child.scenario_key else math.nan,
            }
        )
    frame = pd.DataFrame(rows)
    return with_paper(frame, "table2", [paper_scenarios.get(n) for n in frame["scenario"]])


def _stage_columns(row: dict[str, Any], stage: str) -> dict[str, float]:
    q = quality(row)
    return {f"{k}_{stage}": q[k] for k in ("token_acc", "retained_token_acc_pct", "kl", "lm_loss")}


def search_ablation(artifact: str, children: list[Child]) -> pd.DataFrame:
    """Tables 11-15: children of different searches at one budget, predicted by the search and
    measured before and after GKD, the parent first."""
    parent = children[0].evals["parent"]
    rows = [
        {
            "row": "parent",
            "method": None,
            "metric": None,
            "batch": None,
            "predicted_tok_s": None,
            "predicted_speedup": 1.0,
            "measured_speedup": 1.0,
            "objective": 0.0,
            **_stage_columns(parent, "before_gkd"),
            **_stage_columns(parent, "after_gkd"),
        }
    ]
    for c in children:
        s = c.solution
        rows.append(
            {
                "row": c.label,
                "method": s["method"],
                "metric": s["metric"],
                "batch": s["scenario"]["batch"],
                "predicted_tok_s": s["costs"]["throughput_tok_s"],
                "predicted_speedup": c.predicted_speedup(),
                "measured_speedup": c.measured_speedup(),
                "objective": s["objective"],
                **_stage_columns(c.evals["child"], "before_gkd"),
                **_stage_columns(c.evals["gkd"], "after_gkd"),
            }
        )
    return with_paper(pd.DataFrame(rows), artifact, ["parent"] + [c.key for c in children])


def library_summary(library_dir: str | Path) -> dict[str, Any]:
    """What BLD spent on a block library, from its entries' JSON records (bld.py)."""
    entries = [read_json(p) for p in sorted(Path(library_dir).glob("layer_*/*.json"))]
    if not entries:
        raise FileNotFoundError(f"{library_dir}: no library entries (layer_*/*.json)")
    trained = [e for e in entries if e["steps"] > 0]
    return {
        "bld_mode": entries[0]["mode"],
        "bld_corpus": Path(entries[0]["train_activations"]).parent.name,  # activations/<corpus>/train
        "tokens_per_block": max((e["tokens"] for e in trained), default=0),
        "trained_blocks": len(trained),
        "bld_tokens": sum(e["tokens"] for e in trained),
        "bld_s": round(sum(e["wall_s"] for e in trained), 1),
    }


def library_ablation(artifact: str, children: list[Child], libraries: list[str | Path]) -> pd.DataFrame:
    """Tables 8-10: the same search on block libraries built differently (BLD mode, data, tokens);
    the first child is the experiment's own. Each row: what its BLD cost, and its child's quality."""
    if len(libraries) != len(children):
        raise config_mod.ConfigError(
            f"config error: {artifact}: {len(libraries)} --library for {len(children)} --child; expected one each"
        )
    rows, keys = [], []
    infos = [library_summary(lib) for lib in libraries]
    base = infos[0]
    for c, lib, info in zip(children, libraries, infos):
        rows.append(
            {
                "row": Path(lib).parent.name if c is not children[0] else "experiment",
                **info,
                "predicted_speedup": c.predicted_speedup(),
                "measured_speedup": c.measured_speedup(),
                "objective": c.solution["objective"],
                **_stage_columns(c.evals["child"], "before_gkd"),
                **_stage_columns(c.evals["gkd"], "after_gkd"),
            }
        )
        keys.append(
            {
                "table8": info["bld_mode"],
                "table9": "mixed" if info["bld_corpus"] == base["bld_corpus"] else "narrow",
                "table10": f"{info['tokens_per_block'] / base['tokens_per_block']:g}",
            }[artifact]
        )
    return with_paper(pd.DataFrame(rows), artifact, keys)


def table16(child: Child) -> pd.DataFrame:
    """Effect of GKD: parent, child before GKD, child after GKD."""
    names = {"parent": "parent", "child": "child without GKD", "gkd": "child with GKD"}
    frame = pd.DataFrame({"row": label, **quality(child.evals[m])} for m, label in names.items())
    return with_paper(frame, "table16", list(names))


def table18(child: Child, compressed: dict[str, tuple[dict[str, Any], dict[str, Any]]]) -> pd.DataFrame:
    """Puzzle (after GKD) vs the parent compressed by other means, none trained. `compressed`: method ->
    (its compress.json, its eval JSON). Their weights stay dense (2:4 zeros, or the SVD factors'
    product), so the measured speed is the parent's; kept_params_fraction is what they would keep."""
    parent, final = child.evals["parent"], child.evals["gkd"]

    def row(label: str, ev: dict[str, Any], kept: float, speedup: float, training: str) -> dict[str, Any]:
        return {
            "row": label,
            "training": training,
            "kept_params_fraction": kept,
            "measured_speedup": speedup,
            **quality(ev),
        }

    rows = [
        ("parent", row("parent", parent, 1.0, 1.0, "-")),
        (
            "puzzle",
            row(
                "Puzzle child",
                final,
                final["parameters"] / parent["parameters"],
                child.measured_speedup(),
                "BLD + GKD",
            ),
        ),
    ]
    for method, (record, ev) in compressed.items():
        speed = ev["throughput_ratio"].get(child.scenario_key, math.nan)
        rows.append((method, row(method, ev, record["parameters"]["fraction"], speed, "none")))
    return with_paper(pd.DataFrame([r for _, r in rows]), "table18", [k for k, _ in rows])


def loss_name(terms: list[str] | str) -> str:
    """Canonical name of a set of GKD loss terms ("kl+cosine" -> "cosine+kl")."""
    chosen = set(terms.split("+") if isinstance(terms, str) else terms)
    unknown = chosen - set(GKD_TERMS)
    if unknown or not chosen:
        raise config_mod.ConfigError(
            f"config error: GKD loss {terms!r}: expected terms of {list(GKD_TERMS)} joined by '+'"
        )
    return "+".join(t for t in GKD_TERMS if t in chosen)


def table17(
    child: Child, loss_evals: dict[str, dict[str, Any]], gkd_reports: dict[str, dict[str, Any]]
) -> pd.DataFrame:
    """GKD loss ablation: the child before GKD, one row per loss combination, the parent.
    `loss_evals` / `gkd_reports`: loss name -> its eval JSON / its GKD report.json (validation KL)."""

    def row(label: str, ev: dict[str, Any], val_kl: float, terms: set[str]) -> dict[str, Any]:
        return {"row": label, **{f"loss_{t}": t in terms for t in GKD_TERMS}, **quality(ev), "val_kl": val_kl}

    before = next(iter(gkd_reports.values()))["val_kl_before"]  # every variant starts from the same child
    rows = [("child", row("no uptraining", child.evals["child"], before, set()))]
    for name, ev in loss_evals.items():
        key = loss_name(name)
        rows.append((key, row(key, ev, gkd_reports[name]["val_kl_after"], set(key.split("+")))))
    rows.append(("parent", row("parent", child.evals["parent"], 0.0, set())))
    return with_paper(pd.DataFrame([r for _, r in rows]), "table17", [k for k, _ in rows])


# ---- figures -------------------------------------------------------------------------------------


def frontier(x: np.ndarray, y: np.ndarray, y_higher_better: bool = True) -> np.ndarray:
    """Which points no other point dominates (x higher is better; y as told): the efficient frontier."""
    x, y = np.asarray(x, float), np.asarray(y, float) * (1 if y_higher_better else -1)
    better_eq = (x[None, :] >= x[:, None]) & (y[None, :] >= y[:, None])
    strictly = (x[None, :] > x[:, None]) | (y[None, :] > y[:, None])
    return ~(better_eq & strictly).any(axis=1)


def layer_runtime(costs: pd.DataFrame, solution: dict[str, Any]) -> pd.DataFrame:
    """Per layer: the chosen attention's and FFN's runtime relative to the parent's subblock, at the
    solution's scenario and batch (prefill + output_len x decode, as the search counts it)."""
    s = solution["scenario"]
    sub = costs[(costs["scenario"] == s["name"]) & (costs["batch"] == s["batch"])]
    ms = sub["prefill_ms"] + s["output_len"] * sub["decode_ms"]
    by_layer = "layer" in sub.columns
    index = [sub["kind"], sub["variant"]] + ([sub["layer"]] if by_layer else [])
    time_of = dict(zip(zip(*index), ms))

    def t(kind: str, variant: str, layer: int) -> float:
        return time_of[(kind, variant, layer) if by_layer else (kind, variant)]

    parent = solution["parent"]
    return pd.DataFrame(
        {"layer": i, **{k: t(k, chosen[k], i) / t(k, parent[k], i) for k in ("attention", "ffn")}}
        for i, chosen in enumerate(solution["layers"])
    )


def _save(fig: Any, out: str | Path) -> None:
    with atomic_path(out) as tmp:
        fig.savefig(
            tmp, format="png", dpi=130, metadata={"Software": None}
        )  # no version stamp: same inputs, same bytes


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_sweep(sweep_dir: str | Path) -> pd.DataFrame:
    """The feasible points of a `puzzle search --sweep` folder with their solutions, by throughput."""
    d = Path(sweep_dir)
    table = pd.read_csv(d / "sweep.csv")
    table = table[table["status"] == "ok"].copy()
    # the folder the search wrote each point to, relative to the sweep folder (wherever it now lies)
    table["solution"] = [read_json(d / Path(p).parent.name / "solution.json") for p in table["path"]]
    table["predicted_speedup"] = [
        s["costs"]["throughput_tok_s"] / s["parent"]["costs"]["throughput_tok_s"] for s in table["solution"]
    ]
    return table.sort_values("predicted_speedup").reset_index(drop=True)


def _plot_frontier(ax: Any, x: np.ndarray, y: np.ndarray, higher: bool, label: str) -> None:
    on = frontier(x, y, higher)
    order = np.argsort(x[on])
    ax.plot(x[on][order], y[on][order], color="tab:red", lw=1.5, label=label, zorder=1)


def fig5(sweep_dir: str | Path, children: list[Child], out: str | Path) -> None:
    """Accuracy vs throughput with the efficient frontier: the sweep's MIP solutions as predicted
    (left) and the evaluated children as measured (right)."""
    plt = _pyplot()
    sweep = read_sweep(sweep_dir)
    fig, (ax_p, ax_m) = plt.subplots(1, 2, figsize=(11, 4.5))
    x, y = sweep["predicted_speedup"].to_numpy(), sweep["objective"].to_numpy()
    ax_p.scatter(x, y, color="tab:blue", label="MIP solution (one per throughput target)", zorder=2)
    for xi, yi, t in zip(x, y, sweep["target"]):
        ax_p.annotate(str(t), (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8)
    _plot_frontier(ax_p, x, y, False, "efficient frontier")
    ax_p.set(
        xlabel="predicted throughput / parent (x, from costs.csv)",
        ylabel="predicted quality loss: sum of replace-1-block KL (nats)",
        title="Search: predicted",
    )
    parent_acc = 100 * children[0].evals["parent"]["quality"]["token_acc"]
    xs = np.array([1.0] + [c.measured_speedup() for c in children])
    ys = np.array([parent_acc] + [100 * c.evals["gkd"]["quality"]["token_acc"] for c in children])
    ax_m.scatter(xs[1:], ys[1:], color="tab:green", label="Puzzle child after GKD", zorder=2)
    ax_m.scatter(
        [c.measured_speedup("child") for c in children],
        [100 * c.evals["child"]["quality"]["token_acc"] for c in children],
        facecolors="none",
        edgecolors="tab:green",
        label="same child before GKD",
        zorder=2,
    )
    ax_m.scatter([1.0], [parent_acc], marker="*", s=150, color="k", label="parent", zorder=3)
    _plot_frontier(ax_m, xs, ys, True, "efficient frontier (after GKD)")
    ax_m.set(
        xlabel="measured generation throughput / parent (x)",
        ylabel="next-token accuracy on the test shard (%)",
        title="Children: measured",
    )
    for ax in (ax_p, ax_m):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Fig. 5 analogue: accuracy vs throughput")
    fig.tight_layout()
    _save(fig, out)
    plt.close(fig)


def fig6(costs_csv: str | Path, solution: str | Path, out: str | Path) -> None:
    """Per-layer runtime of the child's attention and FFN relative to the parent's."""
    plt = _pyplot()
    sol = read_json(solution)
    rt = layer_runtime(load_costs(costs_csv), sol)
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(rt) + 3), 4.5))
    w = 0.4
    for shift, kind, color in ((-w / 2, "attention", "tab:blue"), (w / 2, "ffn", "tab:orange")):
        bars = ax.bar(rt["layer"] + shift, rt[kind], width=w, color=color, label=kind)
        if len(rt) <= 24:  # name each bar's variant while the labels still fit
            ax.bar_label(bars, [x[kind] for x in sol["layers"]], rotation=90, fontsize=7, padding=2)
    ax.axhline(1.0, color="k", lw=0.8, ls="--", label="parent")
    ax.set(xlabel="layer", ylabel="runtime relative to the parent's subblock", xticks=rt["layer"], ylim=(0, 1.45))
    ax.set_title(
        f"Fig. 6 analogue: per-layer runtime of the child "
        f"({sol['scenario']['name']}, batch {sol['scenario']['batch']})",
        fontsize=10,
    )
    ax.legend(fontsize=8, loc="upper right", ncol=3)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    _save(fig, out)
    plt.close(fig)


def fig7(children: list[Child], out: str | Path) -> None:
    """Children searched with KL vs LM-loss scores: accuracy after GKD vs measured throughput, beside
    the paper's (approximate) Fig. 7 points."""
    plt = _pyplot()
    fig, (ax, ax_p) = plt.subplots(1, 2, figsize=(11, 4.5))
    styles = {"kl": ("tab:blue", "o", "KL divergence"), "lm_loss": ("tab:orange", "s", "LM loss")}
    for metric, (color, marker, name) in styles.items():
        pts = sorted(
            (c.measured_speedup(), 100 * c.evals["gkd"]["quality"]["token_acc"])
            for c in children
            if c.solution["metric"] == metric
        )
        if pts:
            ax.plot(*zip(*pts), color=color, marker=marker, label=f"scored by {name}")
        ax_p.plot(*zip(*PAPER["fig7"][metric]), color=color, marker=marker, label=f"scored by {name}")
    ax.set(
        xlabel="measured generation throughput / parent (x)",
        ylabel="next-token accuracy after GKD (%)",
        title="ours: children scored by KL vs LM loss",
    )
    ax_p.set(
        xlabel="throughput (tokens/s, RTX 4090)",
        ylabel="accuracy (MT-Bench x 10 + MMLU) / 2",
        title="paper Fig. 7 (8B children; values approximate)",
    )
    for a in (ax, ax_p):
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, out)
    plt.close(fig)


def fig8(sweep_dir: str | Path, costs_csv: str | Path, solution: str | Path, out: str | Path) -> None:
    """Heatmaps of the sweep's MIP solutions: rows = throughput targets, columns = layers, colour =
    the chosen attention / FFN runtime relative to the parent's; the experiment's own child outlined."""
    plt = _pyplot()
    from matplotlib.patches import Rectangle

    sweep, costs, main = read_sweep(sweep_dir), load_costs(costs_csv), read_json(solution)
    runtimes = [layer_runtime(costs, s) for s in sweep["solution"]]
    fig, axes = plt.subplots(
        1,
        2,
        sharey=True,
        layout="constrained",
        figsize=(max(9, 0.25 * len(runtimes[0]) * 2 + 5), 0.45 * len(sweep) + 2.5),
    )
    for ax, kind in zip(axes, ("attention", "ffn")):
        grid = np.array([r[kind].to_numpy() for r in runtimes])
        im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto", origin="lower")
        step = max(1, grid.shape[1] // 20)  # at most ~20 layer ticks
        ax.set(
            xlabel="layer", title=f"{kind} subblock", xticks=range(0, grid.shape[1], step), yticks=range(len(sweep))
        )
        for i, s in enumerate(sweep["solution"]):
            if s["layers"] == main["layers"]:
                ax.add_patch(Rectangle((-0.5, i - 0.5), grid.shape[1], 1, fill=False, edgecolor="lime", lw=2.5))
    axes[0].set_yticklabels([f"{t} ({s:.2f}x)" for t, s in zip(sweep["target"], sweep["predicted_speedup"])])
    axes[0].set_ylabel("throughput target (predicted speed-up)")
    fig.colorbar(im, ax=list(axes), label="runtime relative to the parent's subblock")
    fig.suptitle("Fig. 8 analogue: MIP solutions across throughput targets (outlined: the experiment's child)")
    _save(fig, out)
    plt.close(fig)


# ---- writing tables ------------------------------------------------------------------------------


def _cell(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "✓" if v else "✗"
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, (float, np.floating)):
        return f"{v:.6g}"
    return str(v)


def markdown(frame: pd.DataFrame, title: str, note: str) -> str:
    """A GitHub Markdown table (6 significant digits; — for no value) under a title and a note."""
    head = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([f"# {title}", "", note, "", head, rule, *body, ""])


def write_table(frame: pd.DataFrame, artifact: str, out: str | Path) -> None:
    """OUT.csv and OUT.md (paper_* columns: the paper's numbers for that row, from PAPER.md section 7)."""
    out = Path(out)
    write_csv(out.with_suffix(".csv"), frame)
    note = (
        f"Paper: {PAPER[artifact]['source']}. "
        "Ours: the embedded experiment; accuracy = next-token accuracy, nats for losses."
    )
    write_text(out.with_suffix(".md"), markdown(frame, f"{artifact} analogue", note))


# ---- CLI -----------------------------------------------------------------------------------------

LIBRARY_ABLATIONS = ("table8", "table9", "table10")
ABLATIONS = ("table11", "table12", "table13", "table14", "table15")


def _children(args: argparse.Namespace) -> list[Child]:
    return [load_child(s, e) for s, e in args.child]


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    pairs = [i.split("=", 1) for i in items]
    if any(len(p) != 2 for p in pairs):
        raise config_mod.ConfigError(f"config error: {flag} {items}: expected NAME=VALUE")
    return dict(pairs)


def _table17(args: argparse.Namespace) -> pd.DataFrame:
    losses = _pairs(args.variant, "--variant")
    evals = {n: read_json(Path(args.loss_eval) / f"{n}.json") for n in losses}
    reports = {n: read_json(Path(d) / "report.json") for n, d in losses.items()}
    return table17(_children(args)[0], evals, reports)


def _table18(args: argparse.Namespace) -> pd.DataFrame:
    compressed = {}
    for name_dir, ev in args.compressed:
        name, _, folder = name_dir.partition("=")
        if not folder:
            raise config_mod.ConfigError(f"config error: --compressed {name_dir}: expected NAME=FOLDER EVAL_JSON")
        compressed[name] = (read_json(Path(folder) / "compress.json"), read_json(ev))
    return table18(_children(args)[0], compressed)


TABLES: dict[str, Callable[[argparse.Namespace], pd.DataFrame]] = {
    "table1": lambda a: table1(_children(a)[0]),
    "table2": lambda a: table2(_children(a)[0], _pairs(a.paper_scenario, "--paper-scenario")),
    **{t: (lambda a, t=t: library_ablation(t, _children(a), a.library)) for t in LIBRARY_ABLATIONS},
    **{t: (lambda a, t=t: search_ablation(t, _children(a))) for t in ABLATIONS},
    "table16": lambda a: table16(_children(a)[0]),
    "table17": _table17,
    "table18": _table18,
}
FIGURES: dict[str, Callable[[argparse.Namespace, Path], None]] = {
    "fig5": lambda a, out: fig5(a.sweep, _children(a), out),
    "fig6": lambda a, out: fig6(a.costs, a.solution, out),
    "fig7": lambda a, out: fig7(_children(a), out),
    "fig8": lambda a, out: fig8(a.sweep, a.costs, a.solution, out),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("artifact", choices=[*TABLES, *FIGURES])
    parser.add_argument(
        "--child",
        nargs=2,
        action="append",
        default=[],
        metavar=("SOLUTION", "EVAL_DIR"),
        help="a child: its solution.json and its eval folder (parent.json, child.json, gkd.json); repeatable",
    )
    parser.add_argument(
        "--library",
        action="append",
        default=[],
        metavar="LIBRARY_DIR",
        help="table8-10: each --child's block library folder, in the same order",
    )
    parser.add_argument(
        "--paper-scenario",
        action="append",
        default=[],
        metavar="OURS=PAPER",
        help="table2: our scenario name = a Table 2 row (e.g. gen_32_128='Text Generation')",
    )
    parser.add_argument("--loss-eval", help="table17: eval folder with one {loss}.json per GKD loss variant")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LOSS=GKD_DIR",
        help="table17: a GKD loss variant and its output folder",
    )
    parser.add_argument(
        "--compressed",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME=FOLDER", "EVAL_JSON"),
        help="table18: a compressed parent (folder with compress.json) and its eval JSON; repeatable",
    )
    parser.add_argument(
        "--sweep", help="fig5, fig8: folder of `puzzle search --sweep` (sweep.csv + one folder per budget)"
    )
    parser.add_argument("--costs", help="fig6, fig8: costs.csv of the search's target")
    parser.add_argument("--solution", help="fig6, fig8: the experiment's solution.json")
    parser.add_argument("--out", required=True, help="output stem: tables write OUT.csv + OUT.md, figures OUT.png")


def main(args: argparse.Namespace) -> None:
    out = Path(args.out)
    if args.artifact in TABLES:
        write_table(TABLES[args.artifact](args), args.artifact, out)
        print(f"report: {args.artifact} -> {out.with_suffix('.csv')}, {out.with_suffix('.md')}")
    else:
        FIGURES[args.artifact](args, out.with_suffix(".png"))
        print(f"report: {args.artifact} -> {out.with_suffix('.png')}")
