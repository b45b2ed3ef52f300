"""The BLD planner, without torch: which teacher path a config takes, entry groups, prefix FLOPs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from puzzle import bld_plan, config, cost_model, plan

DATA = Path(__file__).parent / "data"
LLAMA_8B = json.loads((DATA / "Llama-3.1-8B.config.json").read_text())


def _real_8b(repo, tmp_path, **bld):
    parent = tmp_path / "parent"
    parent.mkdir(exist_ok=True)
    (parent / "config.json").write_text(json.dumps(LLAMA_8B))
    raw = yaml.safe_load((repo / "config" / "llama-3.1-8b-h100.yaml").read_text())
    raw["parent"]["path"], raw["data"]["files"] = str(parent), [str(parent / "config.json")]
    raw["bld"].update(bld)
    return config.validate(raw)


def test_a_stored_token_of_llama_8b_is_768_kib():
    assert plan.activation_dump_bytes(LLAMA_8B, 1, "bf16") == 768 * 1024  # x, h, y x 4096 x bf16 x 32 layers
    assert plan.activation_dump_bytes(LLAMA_8B, 250_000_000) == 196_608_000_000_000  # 197 TB


def test_auto_goes_online_for_the_real_8b_config_and_stays_stored_for_the_embedded_default(repo, tmp_path):
    real = _real_8b(repo, tmp_path)
    assert real["bld"]["tokens"] == 250_000_000 and real["bld"]["teacher"] == "auto"
    plan = bld_plan.teacher_path(real, LLAMA_8B)
    assert plan.path == "online" and "1.966e+05 GB, over bld.disk_budget_gb = 500" in plan.reason
    default = config.load(repo / "config" / "config.yaml")
    plan = bld_plan.teacher_path(default, config.parent_config(default))
    # 262,144 tokens x 3 x 128 x 2 B x 4 layers
    assert plan.path == "stored" and plan.dump_bytes == 262_144 * 3 * 128 * 2 * 4
    # the budget decides: 65,536 tokens of the 8B (51.5 GB) fit 500 GB
    assert bld_plan.teacher_path(_real_8b(repo, tmp_path, tokens=65_536), LLAMA_8B).path == "stored"
    assert bld_plan.teacher_path(_real_8b(repo, tmp_path, teacher="stored"), LLAMA_8B).path == "stored"


def test_groups_fill_the_budget_in_order_and_an_entry_too_big_alone_is_named():
    assert bld_plan.entry_groups(["a", "b", "c", "d"], [4, 5, 2, 7], 10) == [["a", "b"], ["c", "d"]]
    assert bld_plan.entry_groups(["a", "b"], [4, 5], None) == [["a", "b"]]
    with pytest.raises(ValueError, match="entry b alone needs"):
        bld_plan.entry_groups(["a", "b"], [4, 11e9], 10e9)


def test_entry_state_counts_trained_and_frozen_parameters():
    arch = cost_model.Arch.from_config(LLAMA_8B)
    attn = 2 * 4096 * 4096 + 2 * 4096 * 512 + 4096  # q, o + k, v of 4 KV heads x 128 + norm
    ffn = 3 * 4096 * 14336 + 4096
    assert bld_plan.entry_params("attn_kv4", arch, 256) == (attn, ffn)  # beside the frozen parent FFN
    assert bld_plan.entry_params("ffn_50", arch, 256) == (3 * 4096 * 7168 + 4096, 0)
    assert bld_plan.entry_params("ffn_100", arch, 256) == (0, 0)  # copied, never trained
    assert bld_plan.entry_state_bytes("attn_kv4", arch, 256) == 18 * attn + 6 * ffn


def test_prefix_overhead_is_the_parent_layers_before_each_job_over_the_training_work():
    arch = cost_model.Arch(hidden_size=8, num_attention_heads=2, num_key_value_heads=1, head_dim=4,
                           intermediate_size=16, num_hidden_layers=4, vocab_size=10)
    seq = 6
    # parent layer forward: 2 x (attention 2*8*8 + 2*8*4 + 8 = 200, ffn 3*8*16 + 8 = 392) + 2*seq*8 (scores, values)
    layer = 2 * (200 + 392) + 2 * seq * 8
    assert bld_plan.parent_layer_flops(arch, seq) == layer
    ffn_linear = 3 * 2 * (8 * 8 + 8)  # forward + backward of a trained linear FFN
    got = bld_plan.prefix_overhead(arch, [["ffn_linear"]], 8, seq)
    train = 4 * (ffn_linear + 2 * layer)
    assert got["train_flops_per_token"] == train
    assert got["prefix_flops_per_token"] == layer * (0 + 1 + 2 + 3)  # one job per layer
    assert bld_plan.prefix_overhead(arch, [["ffn_linear"]], 8, seq, 2)["prefix_flops_per_token"] == layer * 2
    assert bld_plan.prefix_overhead(arch, [["ffn_linear"]], 8, seq, 4)["overhead"] == 0
    # two groups: each runs the prefix (and its layer's targets) again
    two = bld_plan.prefix_overhead(arch, [["ffn_linear"], ["ffn_linear"]], 8, seq)
    assert two["prefix_flops_per_token"] == 2 * got["prefix_flops_per_token"]


def test_the_planner_prints_the_real_8b_path_and_imports_no_torch(repo, tmp_path):
    cfg = _real_8b(repo, tmp_path)
    code = ("import sys, json; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"  # import fails
            "from puzzle import cli\n"
            f"sys.exit(cli.main(['bld-plan', '--cfg', {json.dumps(json.dumps(cfg))}]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "teacher: online (auto: 250,000,000 BLD tokens x 32 layers" in r.stdout
    assert "9 trained per layer, in 1 group(s)" in r.stdout and "GPU-hours" in r.stdout
