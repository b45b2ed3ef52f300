"""The Snakemake workflow: config validation before any job, dry-run plans, and the micro DAG."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from puzzle import config as config_mod
from puzzle import plan as plan_mod

LLAMA_8B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
    "intermediate_size": 14336, "num_attention_heads": 32, "num_key_value_heads": 8,
    "num_hidden_layers": 32, "vocab_size": 128256, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
}


def snakemake(repo, workdir, *args, env):
    """Run the repo's workflow in an isolated working directory (its own .snakemake and results)."""
    shutil.copytree(repo / "config", workdir / "config", dirs_exist_ok=True, symlinks=False)
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(repo / "workflow" / "Snakefile"),
         "--directory", str(workdir), *args],
        capture_output=True, text=True, env=env,
    )


REAL_CONFIGS = Path(__file__).parent / "data" / "real-configs"


def _rule_resources(stdout: str) -> dict[str, dict[str, str]]:
    """rule name -> its `resources:` of the first job in a dry run, as key -> value."""
    out: dict[str, dict[str, str]] = {}
    for m in re.finditer(r"^(?:local)?rule (\w+):\n(?:    .*\n)*?    resources: (.*)$", stdout, re.M):
        out.setdefault(m.group(1), dict(kv.split("=", 1) for kv in m.group(2).split(", ")))
    return out


@pytest.mark.parametrize("name, parent_json", [
    ("llama-3.1-8b-h100.yaml", "Llama-3.1-8B.config.json"),
    ("llama-3.3-70b-h100.yaml", "Llama-3.1-70B.config.json"),  # 3.3 has 3.1's shape
])
def test_real_model_config_dry_run_plans_without_training_a_parent(repo, tmp_path, venv_env, name, parent_json):
    parent = tmp_path / "parent"
    parent.mkdir()
    shutil.copy(REAL_CONFIGS / parent_json, parent / "config.json")  # only config.json: no weights
    text = tmp_path / "train.jsonl"
    text.write_text('{"text": "hello"}\n')
    cfg = yaml.safe_load((repo / "config" / name).read_text())
    cfg["parent"]["path"], cfg["data"]["files"] = str(parent), [str(text)]
    (tmp_path / "real.yaml").write_text(yaml.safe_dump(cfg))
    r = snakemake(repo, tmp_path / "wd", "-n", "--configfile", str(tmp_path / "real.yaml"), env=venv_env)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "rule data:" in r.stdout and "rule parent:" not in r.stdout
    # 0.25B BLD tokens per block: the parent runs inside the BLD jobs, so only held-out activations are dumped
    assert "activations/files/valid" in r.stdout and "activations/files/train" not in r.stdout
    assert "input: " + str(parent) + f", results/{cfg['experiment']}/data/files/train.bin" in r.stdout
    # every job's resources are the planner's, and every GPU job fits an 8 x H100-80GB node
    full = config_mod.load_layered([repo / "config" / "config.yaml", tmp_path / "real.yaml"])
    plan = plan_mod.build(full, config_mod.parent_config(full))
    planned = _rule_resources(r.stdout)
    for rule, stage in {"data": "data", "activations": "activations", "bld": "bld", "score": "score",
                        "costs": "costs", "search": "search", "assemble": "assemble", "gkd": "gkd",
                        "evaluate": "evaluate"}.items():
        want = plan.resources(stage, full["slurm"])
        got = planned[rule]
        assert {k: got.get(k) for k in ("mem_mb", "runtime", "gpu", "nodes")} == {
            k: (str(want[k]) if k in want else None) for k in ("mem_mb", "runtime", "gpu", "nodes")}, (rule, got)
        s = plan[stage]
        assert s.gpu_bytes_per_gpu <= 0.8 * 80e9 and s.gpus_per_job // s.nodes <= 8, s  # plan.gpu_memory_fraction
    if name.startswith("llama-3.3-70b"):  # the 141 GB parent spans GPUs: BLD trains on a 4th beside its prefix
        assert {r: planned[r]["gpu"] for r in ("activations", "bld", "score", "evaluate")} == {
            "activations": "3", "bld": "4", "score": "3", "evaluate": "5"}
    # Tables 5 and 9 need the embedded parent and corpus: only the paper target stops, naming both keys
    r = snakemake(repo, tmp_path / "wd", "-n", "paper", "--configfile", str(tmp_path / "real.yaml"), env=venv_env)
    out = r.stderr + r.stdout
    assert r.returncode != 0 and "paper.artifacts has table9: expected data.source = embedded, not 'files'" in out
    assert "paper.artifacts has table5: the model trained from scratch uses the embedded parent's training" in out


def test_bad_config_stops_before_any_job_with_one_line(repo, tmp_path, venv_env):
    bad = tmp_path / "bad.yaml"
    bad.write_text("parent:\n  train:\n    steps: -5\n")
    r = snakemake(repo, tmp_path / "wd", "-n", "--configfile", str(bad), env=venv_env)
    assert r.returncode != 0
    assert "config error: parent.train.steps = -5: expected a number >= 1" in r.stderr
    assert not (tmp_path / "wd" / "results").exists()
    # a valid config whose plan cannot run (puzzle.plan) stops the same way, naming the stage and numbers
    bad.write_text("plan:\n  disk_limit_gb: 1.0e-9\n")
    r = snakemake(repo, tmp_path / "wd", "-n", "--configfile", str(bad), env=venv_env)
    assert (
        r.returncode != 0 and "plan error: disk: " in r.stderr and "more than plan.disk_limit_gb = 1e-09" in r.stderr
    )
    assert not (tmp_path / "wd" / "results").exists()


def test_micro_pipeline_end_to_end(repo, tmp_path, venv_env):
    wd = tmp_path / "wd"
    micro = str(repo / ".test" / "config" / "config.yaml")
    r = snakemake(repo, wd, "--cores", "2", "--configfile", micro, env=venv_env)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((wd / "results/micro/parent/report.json").read_text())
    assert report["steps"] == 40 and report["heldout_loss"]["valid"] < report["baselines"]["valid"]["unigram"] + 0.5
    meta = json.loads((wd / "results/micro/data/mixed/meta.json").read_text())
    assert meta["vocab_size"] == 512 and set(meta["sources"]) == {"stdlib", "pydoc", "kjv"}
    assert (wd / "results/micro/logs/parent.log").stat().st_size > 0
    # the search planned a child that meets its budget, and the child was distilled and evaluated
    sol = json.loads((wd / "results/micro/search/h100-analytic/tiny/throughput_1.3x/solution.json").read_text())
    assert sol["verified"] and len(sol["block_configs"]) == 2
    assert sol["costs"]["throughput_tok_s"] >= 1.3 * sol["parent"]["costs"]["throughput_tok_s"] * (1 - 1e-9)
    summary = pd.read_csv(wd / "results/micro/eval/summary.csv")
    assert set(summary["model"]) == {"parent", "child", "gkd"}
    assert summary.loc[summary["model"] == "parent", "kl"].item() == 0.0
    # a second run has nothing to do; changing the parent's budget reruns the parent only
    r = snakemake(repo, wd, "-n", "--configfile", micro, env=venv_env)
    assert "Nothing to be done" in r.stdout + r.stderr
    over = tmp_path / "more.yaml"
    over.write_text("parent:\n  train:\n    steps: 41\n")
    r = snakemake(repo, wd, "-n", "--configfile", micro, str(over), env=venv_env)
    assert "rule parent:" in r.stdout and "rule data:" not in r.stdout
    # a changed GKD job killed midway: Snakemake deletes its output folder; the same command then
    # redoes GKD, the evaluation and the summary (params upstream), instead of "Nothing to be done"
    over.write_text("gkd:\n  lr: 0.005\n")
    shutil.rmtree(wd / "results/micro/gkd/h100-analytic/tiny/throughput_1.3x")
    r = snakemake(repo, wd, "-n", "--configfile", micro, str(over), env=venv_env)
    plan = r.stdout + r.stderr
    assert "rule gkd:" in plan and "rule evaluate:" in plan and "rule eval_summary:" in plan, plan[-3000:]
    assert "rule assemble:" not in plan and "rule bld:" not in plan
