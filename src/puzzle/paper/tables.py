"""The paper's tables at this project's scale: one builder per table, from loaded children (`Child`)
and further records, returning a frame whose `paper_*` columns hold the paper's numbers (PAPER, from
PAPER.md section 7) for the matching row; `write_table` writes it as OUT.csv and OUT.md.

"Accuracy" at this scale is next-token accuracy on the test shard (the paper's is MMLU / MT-Bench);
throughput ratios are measured against the parent in the same evaluate job. No torch here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from puzzle import library
from puzzle.config import ConfigError
from puzzle.io import read_json, write_csv, write_text
from puzzle.paper.child import Child
from puzzle.paper.numbers import PAPER

GKD_TERMS = ("cosine", "kl", "lm")  # the order of config gkd.loss; loss names join them with "+"
QUALITY = ("lm_loss", "kl", "token_acc")


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
    """What BLD spent on a block library, from its entries' JSON records (bld.py), each checked
    against its tensor file (library.verify_entry), so the figures are those of the blocks in use."""
    records = sorted(Path(library_dir).glob("layer_*/*.json"))
    for p in records:
        library.verify_entry(p.with_suffix(".safetensors"))
    entries = [read_json(p) for p in records]
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
        raise ConfigError(
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


def table5(child: Child, evals: dict[str, dict[str, Any]], scratch: dict[str, Any]) -> pd.DataFrame:
    """Puzzle child (after GKD) vs a smaller homogeneous model trained from scratch with the parent's
    training, near the child's throughput. `evals`: the eval JSONs of parent, child and scratch from one
    evaluate job (timings interleaved); `scratch`: that model's config.json and report.json."""
    key = child.scenario_key
    config, report = scratch["config"], scratch["report"]
    shape = (
        f"{config['num_hidden_layers']} layers, hidden {config['hidden_size']}, "
        f"{config['num_key_value_heads']} KV heads, FFN {config['intermediate_size']}"
    )

    def row(label: str, ev: dict[str, Any], training: str) -> dict[str, Any]:
        return {
            "row": label,
            "training": training,
            "parameters": ev["parameters"],
            "tok_s": ev["throughput"][key]["tokens_per_s"],
            "measured_speedup": ev["throughput_ratio"][key],
            **quality(ev),
        }

    rows = [
        ("parent", row("parent", evals["parent"], "pretraining")),
        ("child", row("Puzzle child", evals["child"], "BLD + GKD from the parent")),
        (
            "scratch",
            row(f"from scratch ({shape})", evals["scratch"], f"pretraining, {report['tokens_seen']:,} tokens"),
        ),
    ]
    return with_paper(pd.DataFrame([r for _, r in rows]), "table5", [k for k, _ in rows])


def table6(
    child: Child,
    budget_evals: dict[str, dict[str, Any]],
    gkd_reports: dict[str, dict[str, Any]],
    parent_tokens: float,
) -> pd.DataFrame:
    """GKD token budget: the child before GKD, one row per budget (largest first), the parent.
    `budget_evals` / `gkd_reports`: budget name -> its eval JSON / its GKD report.json; `parent_tokens`:
    the parent's training tokens (nan when unknown, e.g. a downloaded parent)."""

    def row(label: str, ev: dict[str, Any], tokens: float, val_kl: float) -> dict[str, Any]:
        return {
            "row": label,
            "gkd_tokens": tokens,
            "pct_of_parent_tokens": 100 * tokens / parent_tokens,
            **quality(ev),
            "val_kl": val_kl,
        }

    before = next(iter(gkd_reports.values()))["val_kl_before"]  # every budget starts from the same child
    rows = [(None, row("no uptraining", child.evals["child"], 0, before))]
    ranked = sorted(budget_evals, key=lambda n: gkd_reports[n]["tokens"], reverse=True)
    for i, name in enumerate(ranked):
        r = gkd_reports[name]
        label = f"{r['tokens']:,} tokens"
        rows.append((f"budget{i + 1}", row(label, budget_evals[name], r["tokens"], r["val_kl_after"])))
    rows.append((None, row("parent", child.evals["parent"], math.nan, 0.0)))
    return with_paper(pd.DataFrame([r for _, r in rows]), "table6", [k for k, _ in rows])


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
        raise ConfigError(f"config error: GKD loss {terms!r}: expected terms of {list(GKD_TERMS)} joined by '+'")
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
