"""`python -m puzzle search` end to end: solution files, block_configs, several solutions, sweeps,
one-line errors, the config section, and NVlabs/puzzle's published block-library format."""

import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from puzzle.blocks import ParentShape, block_config
from puzzle.cli import main as cli
from puzzle.search.mip import check_diversity, verify
from puzzle.search.nvlabs import nvlabs_tables
from puzzle.search.solve import Search
from puzzle.search.synthetic import synthetic_tables
from puzzle.search.tables import load_costs, load_scores

NVLABS = Path(__file__).parent / "data" / "nvlabs"
SOLUTION_KEYS = {
    "method", "metric", "sense", "objective", "scenario", "constraints", "costs", "parent", "num_layers", "layers",
    "solver", "batches", "verified", "inputs",
}
COST_KEYS = {
    "memory_bytes",
    "param_bytes",
    "kv_cache_bytes",
    "time_ms",
    "prefill_ms",
    "decode_ms",
    "throughput_tok_s",
    "latency_ms",
}


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    d = tmp_path_factory.mktemp("tables")
    scores, costs = synthetic_tables(
        6,
        seed=7,
        attention=("attn_kv8", "attn_kv2", "attn_linear", "attn_noop"),
        ffn=("ffn_100", "ffn_50", "ffn_25", "ffn_noop"),
    )
    scores.to_csv(d / "scores.csv", index=False)
    costs.to_csv(d / "costs.csv", index=False)
    parent = {
        "hidden_size": 8192,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "intermediate_size": 28672,
        "num_hidden_layers": 6,
    }
    (d / "config.json").write_text(json.dumps(parent))
    return d


def search(tables, *extra):
    return cli(
        ["search", "--scores", str(tables / "scores.csv"), "--costs", str(tables / "costs.csv"), *map(str, extra)]
    )


def test_solution_file(tables, tmp_path):
    out = tmp_path / "solution.json"
    assert search(tables, "--throughput", "1.5x", "--memory", "0.8x", "--parent-config", tables, "--out", out) == 0
    rec = json.loads(out.read_text())
    assert SOLUTION_KEYS | {"block_configs"} <= set(rec)
    assert COST_KEYS <= set(rec["costs"]) and COST_KEYS <= set(rec["parent"]["costs"])
    assert rec["constraints"]["memory"]["requested"] == "0.8x"
    assert rec["constraints"]["memory"]["value"] == pytest.approx(0.8 * rec["parent"]["costs"]["memory_bytes"])
    assert (
        rec["solver"]["name"] == "highs" and rec["solver"]["status"] == "optimal" and rec["solver"]["solve_time_s"] > 0
    )
    assert rec["scenario"]["batch"] in {b["batch"] for b in rec["batches"]} and rec["num_layers"] == 6 == len(
        rec["layers"]
    )
    shape = ParentShape.from_config(json.loads((tables / "config.json").read_text()))
    assert rec["block_configs"] == [
        block_config(x["attention"], x["ffn"], shape, 256).to_dict() for x in rec["layers"]
    ]
    verify(rec, load_scores(tables / "scores.csv"), load_costs(tables / "costs.csv"))
    # without a parent config only the variant names are written
    assert search(tables, "--throughput", "1.5x", "--out", tmp_path / "plain.json") == 0
    assert "block_configs" not in json.loads((tmp_path / "plain.json").read_text())


def test_several_diverse_solutions(tables, tmp_path):
    out = tmp_path / "s.json"
    assert search(tables, "--throughput", "1.5x", "--num-solutions", 3, "--diversity", 0.5, "--out", out) == 0
    recs = [json.loads(p.read_text()) for p in (out, tmp_path / "s_1.json", tmp_path / "s_2.json")]
    assert [r["solution_index"] for r in recs] == [0, 1, 2] and recs[0]["min_layers_differing"] == 3
    check_diversity(recs, 3)
    assert recs[0]["objective"] <= recs[1]["objective"] <= recs[2]["objective"]


def test_sweep_writes_a_pareto_table(tables, tmp_path):
    assert search(tables, "--memory", "0.9x", "--sweep", "1.2x", "2x", "1.5x", "100x", "--out-dir", tmp_path) == 0
    table = pd.read_csv(tmp_path / "sweep.csv")
    assert table["target"].tolist() == ["1.2x", "2x", "1.5x", "100x"]
    assert table["status"].tolist() == ["ok", "ok", "ok", "infeasible"]
    assert "throughput" in table["message"].iloc[3] and "largest feasible" in table["message"].iloc[3]
    ok = table[table["status"] == "ok"].sort_values("value")
    assert ok["objective"].is_monotonic_increasing  # tighter targets cost quality
    assert table.loc[table["status"] == "ok", "pareto"].all()
    for path in ok["path"]:
        assert json.loads(Path(path).read_text())["verified"]
    assert (tmp_path / "throughput_1.2x" / "solution.json").exists()


def test_infeasible_budget_is_one_line_naming_the_constraint(tables, tmp_path, capsys):
    assert search(tables, "--throughput", "1.2x", "--memory", "1MiB", "--out", tmp_path / "x.json") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "memory 1MiB" in err and "the smallest feasible is" in err
    assert not (tmp_path / "x.json").exists()


def test_config_section_and_bad_values(tables, tmp_path, capsys):
    cfg = json.dumps({"search": {"throughput": "1.5x", "method": "greedy", "batch_sizes": [8]}})
    assert search(tables, "--cfg", cfg, "--out", tmp_path / "g.json") == 0
    rec = json.loads((tmp_path / "g.json").read_text())
    assert (
        rec["method"] == "greedy"
        and rec["scenario"]["batch"] == 8
        and rec["constraints"]["throughput"]["requested"] == "1.5x"
    )
    # the command line wins over the config
    assert search(tables, "--cfg", cfg, "--method", "mip", "--out", tmp_path / "m.json") == 0
    assert json.loads((tmp_path / "m.json").read_text())["method"] == "mip"
    assert search(tables, "--cfg", json.dumps({"search": {"num_solutions": 0}}), "--out", tmp_path / "b.json") == 2
    assert "search.num_solutions = 0" in capsys.readouterr().err
    assert search(tables, "--memory", "80 GB/s", "--out", tmp_path / "b.json") == 2
    assert "search.memory = '80 GB/s'" in capsys.readouterr().err
    assert search(tables, "--batch-sizes", 3, "--out", tmp_path / "b.json") == 2
    assert "batches [3] have no costs" in capsys.readouterr().err


def test_search_runs_without_torch(tables, tmp_path, venv_env):
    """The search plans on a laptop: it must work where torch cannot even be imported."""
    code = (
        "import argparse, sys\n"
        "sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
        "from puzzle.search import cli as search\n"
        "p = argparse.ArgumentParser(); search.add_arguments(p)\n"
        f"search.main(p.parse_args(['--scores', {str(tables / 'scores.csv')!r},"
        f" '--costs', {str(tables / 'costs.csv')!r},"
        f" '--throughput', '1.5x', '--out', {str(tmp_path / 'n.json')!r}]))\n"
        "assert sys.modules['torch'] is None\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=venv_env, capture_output=True)
    assert json.loads((tmp_path / "n.json").read_text())["verified"]


# ---- NVlabs/puzzle block_library.json ---------------------------------------------------------------


def nvlabs_brute_force(library, runtime_budget):
    """The authors' own formulation on their own JSON: min sum kl_div s.t. sum stats.runtime_ms <= budget."""
    layers = [list(v.values()) for _, v in sorted(library.items(), key=lambda kv: int(kv[0].split("_")[1]))]
    best = None
    for combo in itertools.product(*layers):
        if sum(b["stats"]["runtime_ms"] for b in combo) <= runtime_budget:
            kl = sum(b["metrics"]["kl_div"] for b in combo)
            best = kl if best is None else min(best, kl)
    return best


def our_names(key):
    """'attention = no_op (parent * 0%)\t&&\tffn = intermediate size 14e3 (parent * 50%)' -> (attn_noop, ffn_50)."""
    attn, ffn = key.split("&&")
    pct = re.search(r"parent \* (\d+)%", ffn).group(1)
    return ("attn_noop" if "no_op" in attn else "attn_kv8"), ("ffn_noop" if "no_op" in ffn else f"ffn_{pct}")


def test_nvlabs_library_becomes_our_tables():
    library = json.loads((NVLABS / "block_library.json").read_text())
    measurement = json.loads((NVLABS / "measurement_info.json").read_text())
    scores, costs = nvlabs_tables(library, measurement)
    assert len(scores) == 3 * 8 and set(scores["attention"]) == {"attn_kv8", "attn_noop"}
    assert set(scores["ffn"]) == {"ffn_100", "ffn_50", "ffn_25", "ffn_noop"}
    assert costs["param_bytes"].dtype.kind == "i" and costs["kv_bytes_per_token"].dtype.kind == "i"
    search = Search(scores, costs)
    options = search.instances[256].options.set_index(["layer", "attention", "ffn"])
    # each block's memory, runtime and kl are the library's
    for layer_key, blocks in library.items():
        for key, block in blocks.items():
            row = options.loc[(int(layer_key.split("_")[1]), *our_names(key))]
            assert row["memory_bytes"] == block["stats"]["memory_mib"] * 2**20
            assert row["time_ms"] == pytest.approx(block["stats"]["runtime_ms"], rel=1e-15)
            assert row["kl"] == block["metrics"]["kl_div"]
    # throughput as the authors' examples/utils.py computes it: batch * sequence_length / runtime
    assert search.parent_totals[256]["throughput_tok_s"] == pytest.approx(
        256 * 1200 / (3 * 816.9870558160842 / 1000), rel=1e-12
    )


@pytest.mark.parametrize("factor", [1.2, 1.6, 2.5])
def test_mip_on_the_nvlabs_format_equals_the_authors_formulation(tmp_path, factor):
    library = json.loads((NVLABS / "block_library.json").read_text())
    parent_runtime = 3 * 816.9870558160842
    out = tmp_path / "nv.json"
    assert (
        cli(
            [
                "search",
                "--nvlabs-library",
                str(NVLABS / "block_library.json"),
                "--throughput",
                f"{factor}x",
                "--export-tables",
                str(tmp_path),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    rec = json.loads(out.read_text())
    assert rec["objective"] == pytest.approx(nvlabs_brute_force(library, parent_runtime / factor), abs=1e-9)
    assert rec["scenario"] == {"name": "nvlabs", "batch": 256, "input_len": 0, "output_len": 1200}
    verify(rec, load_scores(tmp_path / "scores.csv"), load_costs(tmp_path / "costs.csv"))
    assert np.isclose(rec["costs"]["throughput_tok_s"], 256 * 1200 / (rec["costs"]["time_ms"] / 1000))


def test_costs_with_intervals_give_the_speed_up_an_interval_and_noisy_rows_a_warning(tables, tmp_path, capsys):
    # costs.csv as costs.py writes it: each time with an interval (here +-10%), one row marked noisy
    c = pd.read_csv(tables / "costs.csv")
    for k in ("prefill_ms", "decode_ms"):
        c[k + "_lo"], c[k + "_hi"] = 0.9 * c[k], 1.1 * c[k]
    c["noisy"] = (c["variant"] == "ffn_50") & (c.index == c.index[c["variant"] == "ffn_50"][0])
    c.to_csv(tmp_path / "costs.csv", index=False)
    out = tmp_path / "solution.json"
    assert (
        cli(
            [
                "search",
                "--scores",
                str(tables / "scores.csv"),
                "--costs",
                str(tmp_path / "costs.csv"),
                "--throughput",
                "1.5x",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "['ffn_50']" in captured.err and "marked noisy" in captured.err
    rec = json.loads(out.read_text())
    costs = rec["costs"]
    assert costs["time_ms_lo"] == pytest.approx(0.9 * costs["time_ms"]) and costs["time_ms_hi"] == pytest.approx(
        1.1 * costs["time_ms"]
    )
    assert costs["throughput_tok_s_lo"] < costs["throughput_tok_s"] < costs["throughput_tok_s_hi"]
    speed = costs["throughput_tok_s"] / rec["parent"]["costs"]["throughput_tok_s"]
    lo, hi = (float(x) for x in re.search(r"x the parent \(in \[([\d.]+), ([\d.]+)\]\)", captured.out).groups())
    assert lo == pytest.approx(speed * 0.9 / 1.1, abs=0.01) and hi == pytest.approx(speed * 1.1 / 0.9, abs=0.01)
