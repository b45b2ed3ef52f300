"""The paper's figures at this project's scale (Figs. 5-8), each written as one PNG whose bytes
depend only on its inputs, and the frame helpers behind them (efficient frontier, per-layer runtime,
a budget sweep's feasible points). No torch here; matplotlib is imported only when a figure is drawn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from puzzle.io import atomic_path, read_json
from puzzle.paper.child import Child
from puzzle.paper.numbers import PAPER
from puzzle.search.tables import load_costs


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
    """Write the figure as OUT.png and close it."""
    with atomic_path(out) as tmp:  # no version stamp: same inputs, same bytes
        fig.savefig(tmp, format="png", dpi=130, metadata={"Software": None})
    _pyplot().close(fig)


def _finish(fig: Any, axes: tuple[Any, ...], out: str | Path) -> None:
    """A light grid and a legend on each plot, then OUT.png."""
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, out)


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
    fig.suptitle("Fig. 5 analogue: accuracy vs throughput")
    _finish(fig, (ax_p, ax_m), out)


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
    _finish(fig, (ax, ax_p), out)


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
