"""Paper tables and figures (puzzle.paper) on small synthetic inputs, the search's @-suffixed budgets,
and the `paper` target's plan."""

import argparse
import json
import math
import re

import numpy as np
import pandas as pd
import pytest
import yaml

from puzzle import library
from puzzle.config import ConfigError
from puzzle.evaluate import relative
from puzzle.io import save_safetensors
from puzzle.paper import figures, tables
from puzzle.paper.child import load_child
from puzzle.search import cli as search
from puzzle.search.tables import check_costs
from test_workflow import snakemake

SCENARIO = {"name": "chat", "batch": 4, "input_len": 8, "output_len": 16}
KEY = "chat_b4"


def eval_row(model, token_acc, lm_loss, kl, tok_s, parent=None):
    """An eval JSON as `puzzle evaluate` writes it (retained % and ratios from evaluate.relative)."""
    row = {"model": model, "quality": {"lm_loss": lm_loss, "kl": kl, "token_acc": token_acc},
           "throughput": {KEY: {"batch": 4, "input_len": 8, "output_len": 16, "tokens_per_s": tok_s}}}
    row.update(relative(row, parent or row))
    return row


def solution(method="mip", metric="kl", tok_s=20.0, layers=None, seed=None, objective=0.1):
    return {
        "method": method,
        "metric": metric,
        "objective": objective,
        "scenario": SCENARIO,
        "costs": {"throughput_tok_s": tok_s},
        "parent": {"attention": "attn_kv2", "ffn": "ffn_100", "costs": {"throughput_tok_s": 10.0}},
        "layers": layers or [{"attention": "attn_kv2", "ffn": "ffn_50"}, {"attention": "attn_noop", "ffn": "ffn_100"}],
        "solver": {} if seed is None else {"seed": seed},
    }


def write_child(root, name, sol, acc=(0.5, 0.45, 0.48), tok_s=(100.0, 150.0)):
    """search/<name>/solution.json and eval/<name>/{parent,child,gkd}.json; acc = parent, child, gkd accuracy."""
    (root / "search" / name).mkdir(parents=True)
    (root / "search" / name / "solution.json").write_text(json.dumps(sol))
    parent = eval_row("parent", acc[0], 2.0, 0.0, tok_s[0])
    rows = {
        "parent": parent,
        "child": eval_row("child", acc[1], 2.5, 0.3, tok_s[1], parent),
        "gkd": eval_row("gkd", acc[2], 2.2, 0.1, tok_s[1], parent),
    }
    (root / "eval" / name).mkdir(parents=True)
    for m, r in rows.items():
        (root / "eval" / name / f"{m}.json").write_text(json.dumps(r))
    return root / "search" / name / "solution.json", root / "eval" / name


def child(tmp_path, name="main", **kw):
    return load_child(*write_child(tmp_path, name, solution(**kw)))


def test_table1_retained_is_child_over_parent_for_accuracy_and_parent_over_child_for_loss(tmp_path):
    t = tables.table1(child(tmp_path)).set_index("metric")
    assert t.loc["token_acc", "retained_pct"] == pytest.approx(100 * 0.48 / 0.5)
    assert t.loc["lm_loss", "retained_pct"] == pytest.approx(100 * 2.0 / 2.2)
    assert math.isnan(t.loc["kl", "retained_pct"]) and t.loc["kl", "child"] == 0.1
    assert t.loc["token_acc", "paper_retained_pct"] == 98.4


def test_table2_measured_and_predicted_speedup_beside_the_papers_row(tmp_path):
    t = tables.table2(child(tmp_path), {"chat": "Chatbot"})
    row = t.iloc[0]
    assert (row["scenario"], row["parent_tok_s"], row["child_tok_s"]) == ("chat", 100.0, 150.0)
    assert row["speedup"] == pytest.approx(1.5) and row["predicted_speedup"] == pytest.approx(2.0)
    assert (row["paper_speedup"], row["paper_child_tok_s"]) == (2.07, 5478)


def test_search_ablation_rows_carry_the_papers_numbers_of_their_method(tmp_path):
    mip = child(tmp_path, "mip")
    greedy = load_child(*write_child(tmp_path, "greedy", solution("greedy", tok_s=12.0), acc=(0.5, 0.3, 0.4)))
    t = tables.search_ablation("table13", [mip, greedy])
    assert list(t["row"]) == ["parent", "mip (kl)", "greedy (kl)"]
    assert t["paper_mmlu"].tolist()[1:] == [78.39, 70.74] and math.isnan(t["paper_mmlu"][0])
    assert t["predicted_speedup"].tolist() == pytest.approx([1.0, 2.0, 1.2])
    assert t["token_acc_before_gkd"].tolist() == [0.5, 0.45, 0.3]
    assert t["retained_token_acc_pct_after_gkd"].tolist() == pytest.approx([100.0, 96.0, 80.0])
    # an LM-loss-scored MIP and a seeded random child map to their own rows
    lm = child(tmp_path, "lm", metric="lm_loss")
    rnd = child(tmp_path, "rnd", method="random", seed=3)
    assert tables.search_ablation("table11", [mip, lm])["paper_half_mmlu"].tolist()[1:] == [64.94, 66.24]
    t15 = tables.search_ablation("table15", [mip, rnd])
    assert t15["row"][2] == "random seed 3 (kl)" and t15["paper_avg"].tolist() == [85.48, 84.30, 74.01]
    # random weights: the budget folder says so (rules/search.smk)
    scratch = load_child(*write_child(tmp_path, "throughput_2x@random-s3-scratch", solution(method="random", seed=3)))
    parent_arch = load_child(*write_child(tmp_path, "unconstrained@scratch", solution()))
    t15 = tables.search_ablation("table15", [mip, rnd, scratch, parent_arch])
    assert t15["paper_avg"].tolist()[3:] == [16.02, 16.46]
    assert t15["row"][3] == "fully random: random seed 3 architecture, random weights"


def test_table18_puts_the_compressed_parents_beside_the_child_with_their_kept_fraction(tmp_path):
    main = child(tmp_path)
    parent = main.evals["parent"]
    for m in ("parent", "gkd"):
        main.evals[m]["parameters"] = {"parent": 1000, "gkd": 800}[m]
    wanda = eval_row("wanda", 0.30, 3.0, 0.6, 100.0, parent)  # dense: the parent's speed
    t = tables.table18(main, {"wanda": ({"parameters": {"fraction": 0.56}}, wanda)})
    assert t["row"].tolist() == ["parent", "Puzzle child", "wanda"]
    assert t["kept_params_fraction"].tolist() == [1.0, 0.8, 0.56]
    assert t["measured_speedup"].tolist() == [1.0, 1.5, 1.0] and t["token_acc"].tolist() == [0.5, 0.48, 0.30]
    assert t["retained_token_acc_pct"].tolist() == pytest.approx([100.0, 96.0, 60.0])
    assert t["paper_relative_pct"].tolist() == [100.0, 99.49, 92.23]


def test_table17_one_row_per_loss_with_its_terms_and_validation_kl(tmp_path):
    main = child(tmp_path)
    evals = {
        "kl+cosine": eval_row("kl+cosine", 0.49, 2.1, 0.05, 150.0, main.evals["parent"]),
        "lm": eval_row("lm", 0.47, 2.05, 0.2, 150.0, main.evals["parent"]),
    }
    reports = {
        "kl+cosine": {"val_kl_before": 0.4, "val_kl_after": 0.06},
        "lm": {"val_kl_before": 0.4, "val_kl_after": 0.3},
    }
    t = tables.table17(main, evals, reports)
    assert list(t["row"]) == ["no uptraining", "cosine+kl", "lm", "parent"]
    assert t[["loss_cosine", "loss_kl", "loss_lm"]].values.tolist() == [
        [False] * 3,
        [True, True, False],
        [False, False, True],
        [False] * 3,
    ]
    assert t["val_kl"].tolist() == [0.4, 0.06, 0.3, 0.0]
    assert t["token_acc"].tolist() == [0.45, 0.49, 0.47, 0.5]
    assert t["paper_mmlu"].tolist() == [78.39, 79.61, 78.55, 81.66]


def test_table5_puts_the_model_from_scratch_beside_the_child_at_their_measured_speeds(tmp_path):
    main = child(tmp_path)
    parent = eval_row("parent", 0.5, 2.0, 0.0, 100.0)
    evals = {
        "parent": parent,
        "child": eval_row("child", 0.48, 2.2, 0.1, 210.0, parent),
        "scratch": eval_row("scratch", 0.40, 2.6, 0.5, 220.0, parent),
    }
    for m, n in (("parent", 1000), ("child", 600), ("scratch", 500)):
        evals[m]["parameters"] = n
    config = {"num_hidden_layers": 3, "hidden_size": 128, "num_key_value_heads": 1, "intermediate_size": 344}
    t = tables.table5(main, evals, {"config": config, "report": {"tokens_seen": 4096000}})
    assert t["row"].tolist() == ["parent", "Puzzle child", "from scratch (3 layers, hidden 128, 1 KV heads, FFN 344)"]
    assert t["training"][2] == "pretraining, 4,096,000 tokens"
    assert t["measured_speedup"].tolist() == pytest.approx([1.0, 2.1, 2.2])
    assert t["tok_s"].tolist() == [100.0, 210.0, 220.0] and t["parameters"].tolist() == [1000, 600, 500]
    assert t["retained_token_acc_pct"].tolist() == pytest.approx([100.0, 96.0, 80.0])
    assert t["retained_lm_loss_pct"].tolist() == pytest.approx([100.0, 100 * 2.0 / 2.2, 100 * 2.0 / 2.6])
    assert t["paper_throughput_tok_s"].tolist() == [3385, 5856, 5737]
    assert t["paper_accuracy"].tolist() == [76.40, 73.98, 70.36]


def test_table6_one_row_per_budget_largest_first_with_its_share_of_the_parents_tokens(tmp_path):
    main = child(tmp_path)
    parent = main.evals["parent"]
    evals = {
        "tokens1000": eval_row("tokens1000", 0.44, 2.4, 0.3, 150.0, parent),
        "tokens4000": eval_row("tokens4000", 0.48, 2.2, 0.1, 150.0, parent),
        "tokens2000": eval_row("tokens2000", 0.46, 2.3, 0.2, 150.0, parent),
    }
    reports = {n: {"tokens": int(n[6:]), "val_kl_before": 0.4, "val_kl_after": 0.4 / int(n[6:])} for n in evals}
    t = tables.table6(main, evals, reports, 80_000)
    assert t["row"].tolist() == ["no uptraining", "4,000 tokens", "2,000 tokens", "1,000 tokens", "parent"]
    assert t["gkd_tokens"].tolist()[:4] == [0, 4000, 2000, 1000] and math.isnan(t["gkd_tokens"][4])
    assert t["pct_of_parent_tokens"].tolist()[:4] == pytest.approx([0.0, 5.0, 2.5, 1.25])
    assert t["retained_token_acc_pct"].tolist() == pytest.approx([90.0, 96.0, 92.0, 88.0, 100.0])
    assert t["val_kl"].tolist() == pytest.approx([0.4, 0.0001, 0.0002, 0.0004, 0.0])
    assert t["paper_tokens_b"].tolist()[1:4] == [8.68, 2.9, 0.72] and math.isnan(t["paper_tokens_b"][0])
    assert t["paper_preserved_pct"].tolist()[1:4] == [99.63, 98.47, 97.79]
    # a parent not trained here: no share
    assert math.isnan(tables.table6(main, evals, reports, math.nan)["pct_of_parent_tokens"][1])


def test_frontier_is_exactly_the_non_dominated_points():
    x = np.array([1.0, 1.5, 2.0, 3.0, 2.0])
    y = np.array([0.9, 0.9, 0.8, 0.5, 0.7])
    # (1, .9) loses to (1.5, .9): as good, and faster; (2, .7) loses to (2, .8)
    assert figures.frontier(x, y).tolist() == [False, True, True, True, False]
    # lower is better: (3, .5) beats every slower point; (1.5, .9) and (2, .8) are now dominated
    assert figures.frontier(x, y, y_higher_better=False).tolist() == [False, False, False, True, False]


def costs_frame(per_layer=False):
    rows = [
        ("attention", "attn_kv2", 10.0, 1.0),
        ("attention", "attn_noop", 0.0, 0.0),
        ("ffn", "ffn_100", 4.0, 2.0),
        ("ffn", "ffn_50", 2.0, 1.0),
        ("non_block", "non_block", 1.0, 0.1),
    ]
    frame = pd.DataFrame(
        [
            {
                "kind": k,
                "variant": v,
                "scenario": "chat",
                "batch": 4,
                "input_len": 8,
                "output_len": 16,
                "prefill_ms": p,
                "decode_ms": d,
                "param_bytes": 100,
                "kv_bytes_per_token": 0,
            }
            for k, v, p, d in rows
        ]
    )
    if per_layer:  # layer 1's FFNs are twice as slow, the ratio the same
        frame = pd.concat([frame.assign(layer=0), frame.assign(layer=1)])
        frame.loc[(frame["layer"] == 1) & (frame["kind"] == "ffn"), ["prefill_ms", "decode_ms"]] *= 2
        frame.loc[frame["kind"] == "non_block", "layer"] = None
        frame = frame.drop_duplicates(["kind", "variant", "layer"])
    return frame


@pytest.mark.parametrize("per_layer", [False, True])
def test_layer_runtime_is_the_chosen_subblock_over_the_parents(per_layer):
    rt = figures.layer_runtime(check_costs(costs_frame(per_layer)), solution())
    # ffn_50 / ffn_100 = (2 + 16 * 1) / (4 + 16 * 2) = 0.5; a no-op costs nothing
    assert rt[["attention", "ffn"]].values.tolist() == [[1.0, 0.5], [0.0, 1.0]]


def test_identical_inputs_give_identical_tables(tmp_path):
    main = child(tmp_path)
    for out in ("a", "b"):
        tables.write_table(tables.table16(main), "table16", tmp_path / out / "table16")
    for ext in (".csv", ".md"):
        assert (tmp_path / "a" / f"table16{ext}").read_bytes() == (tmp_path / "b" / f"table16{ext}").read_bytes()
    md = (tmp_path / "a" / "table16.md").read_text()
    assert "| child with GKD | 2.2 | 0.1 | 0.48 | 96 |" in md and "Table 16" in md


def write_sweep(root, layers_by_target):
    rows = []
    for i, (target, layers) in enumerate(layers_by_target.items()):
        if layers is None:
            rows.append({"target": target, "status": "infeasible", "objective": None, "path": None})
            continue
        d = root / f"throughput_{target}"
        d.mkdir(parents=True)
        (d / "solution.json").write_text(json.dumps(solution(tok_s=10.0 + 5 * i, layers=layers, objective=0.1 * i)))
        rows.append(
            {
                "target": target,
                "status": "ok",
                "objective": 0.1 * i,
                "path": f"elsewhere/throughput_{target}/solution.json",
            }
        )
    pd.DataFrame(rows).to_csv(root / "sweep.csv", index=False)


def test_figures_are_pngs_and_the_same_inputs_give_the_same_bytes(tmp_path):
    import matplotlib.image

    main = child(tmp_path, "main")
    lm = child(tmp_path, "lm", metric="lm_loss")
    sweep = tmp_path / "sweep"
    full = [{"attention": "attn_kv2", "ffn": "ffn_100"}] * 2
    write_sweep(sweep, {"1.5x": full, "2x": main.solution["layers"], "50x": None})
    costs = tmp_path / "costs.csv"
    costs_frame().to_csv(costs, index=False)
    sol = tmp_path / "search" / "main" / "solution.json"
    figures.fig5(sweep, [main], tmp_path / "fig5.png")
    figures.fig6(costs, sol, tmp_path / "fig6.png")
    figures.fig6(costs, sol, tmp_path / "fig6_again.png")
    figures.fig7([main, lm], tmp_path / "fig7.png")
    figures.fig8(sweep, costs, sol, tmp_path / "fig8.png")
    for name in ("fig5", "fig6", "fig7", "fig8"):
        image = matplotlib.image.imread(tmp_path / f"{name}.png")
        assert image.shape[0] > 300 and image.shape[1] > 500, name
    assert (tmp_path / "fig6.png").read_bytes() == (tmp_path / "fig6_again.png").read_bytes()
    # the infeasible target is left out; the rest are sorted by predicted speed-up
    assert figures.read_sweep(sweep)["target"].tolist() == ["1.5x", "2x"]


def test_report_cli_writes_csv_and_markdown(tmp_path):
    from puzzle import cli

    sol, ev = write_child(tmp_path, "main", solution())
    assert (
        cli.main(
            [
                "report",
                "table2",
                "--child",
                str(sol),
                str(ev),
                "--paper-scenario",
                "chat=Text Generation",
                "--out",
                str(tmp_path / "paper" / "table2"),
            ]
        )
        == 0
    )
    assert pd.read_csv(tmp_path / "paper" / "table2.csv")["paper_speedup"].tolist() == [2.17]
    assert (tmp_path / "paper" / "table2.md").read_text().startswith("# table2 analogue")


@pytest.mark.parametrize(
    "budget, expected",
    [
        ("throughput_2x", {"method": "mip", "metric": "kl", "seed": 0}),
        ("throughput_2x@greedy", {"method": "greedy", "metric": "kl", "seed": 0}),
        ("throughput_2x@lm_loss", {"method": "mip", "metric": "lm_loss", "seed": 0}),
        ("throughput_2x@random-s3", {"method": "random", "metric": "kl", "seed": 3}),
        ("throughput_2x@bld-coupled", {"method": "mip", "metric": "kl", "seed": 0}),  # another library: same search
        (
            "throughput_2x@random-s3-scratch",
            {"method": "random", "metric": "kl", "seed": 3},
        ),  # random weights: same search
    ],
)
def test_search_budget_suffix_names_the_method_metric_and_seed(budget, expected):
    parser = argparse.ArgumentParser()
    search.add_arguments(parser)
    _, cfg = search._config(parser.parse_args(["--budget", budget]))
    assert cfg["throughput"] == "2x" and {k: cfg[k] for k in expected} == expected


def test_unconstrained_budget_drops_the_configured_targets():
    parser = argparse.ArgumentParser()
    search.add_arguments(parser)
    _, cfg = search._config(
        parser.parse_args(["--budget", "unconstrained@scratch", "--cfg", json.dumps({"search": {"throughput": "2x"}})])
    )
    assert (cfg["throughput"], cfg["memory"], cfg["latency"], cfg["method"]) == (None, None, None, "mip")


def test_search_budget_suffix_rejects_unknown_names():
    with pytest.raises(search.ConfigError, match="@fast"):
        search.budget_settings("throughput_2x@fast")


def write_library(
    root, name, mode="decoupled", corpus="mixed", tokens=4096, trained=(("attn_kv1", 1.5), ("ffn_50", 2.5))
):
    """A block library's entries as bld.py writes them (a tensor file, then its JSON record with the
    file's size and sha256): trained entries (name, wall s) and a no-op."""
    d = root / name / "library" / "layer_0"
    d.mkdir(parents=True)
    common = {"mode": mode, "train_activations": f"results/x/activations/{corpus}/train"}
    records = {e: {**common, "tokens": tokens, "steps": 4, "wall_s": wall} for e, wall in trained}
    for entry, record in {**records, "ffn_noop": {**common, "tokens": 0, "steps": 0, "wall_s": 0.0}}.items():
        save_safetensors(d / f"{entry}.safetensors", {})
        library.write_entry_json(d / f"{entry}.safetensors", record)
    return root / name / "library"


def test_library_ablation_rows_report_what_bld_spent_and_the_papers_row_of_each_library(tmp_path):
    main = child(tmp_path, "main")
    other = load_child(*write_child(tmp_path, "other", solution(tok_s=21.0), acc=(0.5, 0.40, 0.47)))
    libs = [
        write_library(tmp_path / "lib", "experiment"),
        write_library(tmp_path / "lib", "coupled", mode="coupled", trained=(("attn_kv1+ffn_50", 3.0),) * 1),
    ]
    t8 = tables.library_ablation("table8", [main, other], libs)
    assert t8["row"].tolist() == ["experiment", "coupled"] and t8["bld_mode"].tolist() == ["decoupled", "coupled"]
    assert t8["trained_blocks"].tolist() == [2, 1] and t8["bld_tokens"].tolist() == [8192, 4096]
    assert t8["bld_s"].tolist() == [4.0, 3.0]
    assert t8["paper_accuracy"].tolist() == [72.92, 73.98]
    assert t8["token_acc_before_gkd"].tolist() == [0.45, 0.40] and t8["measured_speedup"].tolist() == [1.5, 1.5]
    narrow = write_library(tmp_path / "lib", "narrow", corpus="bible")
    assert tables.library_ablation("table9", [main, other], [libs[0], narrow])["paper_mmlu"].tolist() == [78.39, 74.84]
    quarter = write_library(tmp_path / "lib", "tokens1024", tokens=1024)
    t10 = tables.library_ablation("table10", [main, other], [libs[0], quarter])
    assert t10["tokens_per_block"].tolist() == [4096, 1024] and t10["paper_mmlu"].tolist() == [78.54, 78.27]
    with pytest.raises(ConfigError, match="--library"):
        tables.library_ablation("table8", [main, other], libs[:1])


def planned_jobs(stdout):
    """{(rule, output): (input, shell command)} of a `snakemake -n -p` plan."""
    jobs = {}
    for block in re.split(r"\n(?=\[[^\]]+\]\n(?:local)?rule )", stdout):
        rule = re.search(r"^(?:local)?rule (\S+):", block, re.M)
        if rule is None:
            continue
        field = {k: v for k, v in re.findall(r"^    (input|output): (.*)$", block, re.M)}
        shell = block.split("resources:", 1)[-1].split("\n", 1)[-1].strip()
        jobs[(rule.group(1), field.get("output"))] = (field.get("input"), shell)
    return jobs


def test_paper_target_plans_the_ablations_and_a_changed_loss_list_replans_table17_only(repo, tmp_path, venv_env):
    micro = repo / ".test" / "config" / "config.yaml"
    r = snakemake(repo, tmp_path / "wd", "-n", "-p", "paper", "--configfile", str(micro), env=venv_env)
    assert r.returncode == 0, r.stderr + r.stdout
    before = planned_jobs(r.stdout)
    searched = {
        re.search(r"search/h100-analytic/tiny/([^/]+)/solution.json", out).group(1)
        for rule, out in before
        if rule == "search"
    }
    ablations = (
        "lm_loss",
        "noop_only",
        "greedy",
        "max_params",
        "random-s0",
        "random-s0-scratch",
        "bld-coupled",
        "bld-narrow",
        "bld-tokens2048",
    )
    assert searched == {"throughput_1.3x", "unconstrained@scratch", *(f"throughput_1.3x@{v}" for v in ablations)}
    random_init = {
        out.rsplit("/", 1)[1]: shell
        for (rule, out), (_, shell) in before.items()
        if rule == "assemble" and "--random-weights" in shell
    }
    assert sorted(random_init) == ["throughput_1.3x@random-s0-scratch", "unconstrained@scratch"]
    assert "--random-weights 0" in random_init["throughput_1.3x@random-s0-scratch"]
    rules = {rule for rule, _ in before}
    assert {f"paper_table{t}" for t in (1, 2, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)} | {
        f"paper_fig{f}" for f in (5, 6, 7, 8)
    } <= rules
    assert {"paper_compress", "paper_compress_eval"} <= rules
    assert "paper_sweep" in rules
    # Table 9's narrow library learns from the Bible's activations, tokenized by data_corpus
    assert [out for rule, out in before if rule == "data_corpus"] == [
        ", ".join(f"results/micro/data/bible/{s}" for s in ("train.bin", "valid.bin", "test.bin", "meta.json"))
    ]
    narrow = [inp for (rule, out), (inp, _) in before.items() if rule == "paper_bld" and "/narrow/" in out]
    assert len(narrow) == 2 and all("activations/bible/train" in i for i in narrow)

    def replan(**paper_section):
        cfg = yaml.safe_load(micro.read_text())
        cfg["paper"].update(paper_section)
        (tmp_path / "changed.yaml").write_text(yaml.safe_dump(cfg))
        r = snakemake(
            repo, tmp_path / "wd", "-n", "-p", "paper", "--configfile", str(tmp_path / "changed.yaml"), env=venv_env
        )
        assert r.returncode == 0, r.stderr + r.stdout
        after = planned_jobs(r.stdout)
        # Snakemake reruns a job when its inputs or its command change
        changed = {rule for rule, out in before.keys() ^ after.keys()}
        return changed | {
            rule for key in before.keys() & after.keys() if before[key] != after[key] for rule in [key[0]]
        }

    assert replan(gkd_losses=["cosine+kl", "kl"]) == {
        "paper_gkd_loss",
        "paper_gkd_loss_eval",
        "paper_table17",
    }  # lm -> kl
    assert replan(gkd_budgets=[0.25, 1]) == {"paper_gkd_budget", "paper_gkd_budget_eval", "paper_table6"}
    # another shape from scratch: that model's training only (its eval and Table 5 follow from its new output)
    assert replan(scratch={"num_layers": 1, "intermediate_size": 64}) == {"paper_scratch"}
    # another BLD token budget: its library, scores and child, and Table 10 only
    assert replan(bld_tokens=[1024]) == {
        "paper_bld",
        "paper_score",
        "paper_scores",
        "search",
        "assemble",
        "gkd",
        "evaluate",
        "paper_table10",
    }
