"""The planner, on the public config.json files of Llama-3.1-8B and -70B (no weights)."""

import json
import math
from pathlib import Path

import pytest
import yaml

from puzzle import bld_plan, cli, cost_model, library, plan
from puzzle import config as config_mod

REAL = Path(__file__).parent / "data" / "real-configs"
CFG_8B = json.loads((REAL / "Llama-3.1-8B.config.json").read_text())
CFG_70B = json.loads((REAL / "Llama-3.1-70B.config.json").read_text())


def test_activation_dump_bytes_by_hand():
    # 8B: x, h, y x 4096 x 2 bytes x 32 layers = 786,432 B = 768 KiB per token (SCALE.md)
    assert plan.activation_dump_bytes(CFG_8B, 1) == 3 * 4096 * 2 * 32 == 768 * 1024
    # 70B: 3 x 8192 x 2 x 80 = 3,932,160 B per token; the paper's 1B BLD tokens: 3.9 PB
    assert plan.activation_dump_bytes(CFG_70B, 10**9) == 3_932_160 * 10**9


def test_activation_tensors_match_the_stage():
    from puzzle import activations

    assert plan.ACTIVATION_TENSORS == len(activations.TENSORS)
    assert set(plan.ACTIVATION_DTYPE_BYTES) == set(activations.DTYPES)
    assert all(activations.DTYPES[k].itemsize == v for k, v in plan.ACTIVATION_DTYPE_BYTES.items())


# ---- the stage plan -----------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
GB = 1e9


def real_config(tmp_path, name, parent_cfg, **over):
    """A real config with parent.path at a folder holding only config.json (no weights) and one text file."""
    parent = tmp_path / "parent"
    parent.mkdir(exist_ok=True)
    (parent / "config.json").write_text(json.dumps(parent_cfg))
    (tmp_path / "train.jsonl").write_text('{"text": "hello"}\n')
    paths = {"parent": {"path": str(parent)}, "data": {"files": [str(tmp_path / "train.jsonl")]}}
    return config_mod.load(REPO / "config" / name, config_mod.deep_merge(paths, over))


def test_8b_model_bytes_and_gkd_by_hand(tmp_path):
    cfg = real_config(tmp_path, "llama-3.1-8b-h100.yaml", CFG_8B)
    p = plan.build(cfg, CFG_8B)
    arch = cost_model.Arch.from_config(CFG_8B)
    # per layer: q, o 4096^2 + k, v 4096 x 1024 + norm = 41,947,136; SwiGLU 3 x 4096 x 14336 + norm = 176,164,864;
    # x 32 layers + embedding and head 2 x 128,256 x 4096 + final norm = 8,030,261,248 parameters
    assert plan.model_params(arch) == 32 * (41_947_136 + 176_164_864) + 1_050_677_248 == 8_030_261_248
    assert plan.model_bytes(arch, "bfloat16") == 16_060_522_496  # 16.06 GB of bf16 weights
    # GKD, 8 processes, child at the parent's size, bf16 parent replicated (gkd_memory's docstring):
    # 16 P / 8 + 2 (R + 2L) + 4 (R + L) + 2 P, with R = 1,050,677,248 and L = 218,112,000
    r, layer, params = 1_050_677_248, 218_112_000, 8_030_261_248
    gkd = p["gkd"]
    assert (gkd.jobs, gkd.gpus_per_job, gkd.nodes) == (1, 8, 1)
    by_hand = 16 * params // 8 + 2 * (r + 2 * layer) + 4 * (r + layer) + 2 * params
    assert gkd.gpu_bytes_per_gpu == by_hand == 40_170_004_480
    # host: 8 ranks x (4 GB process + the embedding 128,256 x 4096 read in float32 through a bf16 staging buffer:
    # 6 B x 525,336,576), more than rank 0's gathered bf16 child at the end (16.06 GB + one float32 embedding)
    assert plan.largest_tensor(arch) == 128_256 * 4096 == 525_336_576
    assert gkd.host_bytes == 8 * 4_000_000_000 + 8 * 6 * 525_336_576 == 57_216_155_648
    # every 8B inference stage fits one GPU: the bf16 parent is 16.06 GB of 64 usable
    for stage in ("activations", "bld", "score", "costs", "evaluate"):
        assert p[stage].gpus_per_job == 1 and p[stage].gpu_bytes_per_gpu <= 0.8 * 80 * GB, p[stage]
    assert p["score"].jobs == p["bld"].jobs == 32
    # activations: only the held-out dump (online teacher): 8 windows x 4096 tokens x 768 KiB
    assert p["activations"].jobs == 1 and p["activations"].disk_bytes == 8 * 4096 * 768 * 1024
    assert p["assemble"].disk_bytes == 16_060_522_496 and p["assemble"].gpus_per_job == 0
    assert p.problems() == []


def test_70b_inference_stages_span_several_gpus_of_one_node(tmp_path):
    cfg = real_config(tmp_path, "llama-3.3-70b-h100.yaml", CFG_70B)
    p = plan.build(cfg, CFG_70B)
    weights = plan.model_bytes(cost_model.Arch.from_config(CFG_70B), "bfloat16")
    assert weights == pytest.approx(141.1 * GB, rel=1e-3)
    for stage in plan.SPANS_GPUS:  # activations, evaluate, score: placed over the job's GPUs
        s = p[stage]
        assert 1 < s.gpus_per_job <= 8 and s.gpu_bytes_per_gpu <= 0.8 * 80 * GB, s
        # the fewest GPUs: one fewer would not hold the stage's bytes
        assert s.gpu_bytes_per_gpu * s.gpus_per_job > 0.8 * 80 * GB * (s.gpus_per_job - 1), s
    assert p["activations"].gpus_per_job == 3  # ceil(141.1 / 64)
    assert p["evaluate"].gpus_per_job == 5  # the parent and one child: ceil((282.2 + logits) / 64)
    # score: the parent's layers split, and on any one GPU at worst a batch's float32 logits (parent's and a
    # candidate's: batch 1 x 4096 x vocab 128,256), the cached layer inputs (64 windows x 4096 tokens x 8192 x bf16)
    # and one layer's candidate blocks in bf16: attention with 8, 4, 2, 1 K/V heads of 128 (q and o 8192 x 8192,
    # norm 8192) and FFNs of widths 28672, 24832, 21504, 14336, 7168, 5632, 2816 (sum 104,960; norm 8192)
    attention = 4 * (2 * 8192**2 + 8192) + 2 * 8192 * 128 * (8 + 4 + 2 + 1)
    ffn = 3 * 8192 * 104_960 + 7 * 8192
    whole = 8 * 4096 * 128_256 + 64 * 4096 * 8192 * 2 + 2 * (attention + ffn)
    assert p["score"].gpus_per_job == 3 == math.ceil(weights / (0.8 * 80 * GB - whole))
    assert p["score"].gpu_bytes_per_gpu == math.ceil(weights / 3) + whole
    gkd = p["gkd"]
    assert (gkd.gpus_per_job, gkd.nodes) == (40, 5) and gkd.gpu_bytes_per_gpu <= 0.8 * 80 * GB
    # host per node: rank 0's gathered bf16 child at the end (141,107,412,992 B + one float32 embedding 128,256 x 8192)
    # beside 8 processes, more than 8 ranks each reading that embedding (8 x 6 B x 1,050,673,152 = 50.4 GB)
    assert gkd.host_bytes == 8 * 4_000_000_000 + weights + 4 * 128_256 * 8192 == 177_310_105_600
    # BLD: every trained entry of a layer in one group on the training GPU, the whole bf16 parent (the last
    # layer's job) over ceil(141.1 / 64) = 3 others
    arch = cost_model.Arch.from_config(CFG_70B)
    trained = [n for n in library.entries(cfg, arch.shape) if library.needs_training(n, arch.shape)]
    state = sum(bld_plan.entry_state_bytes(n, arch, 256) for n in trained)
    assert bld_plan.parent_bytes(arch) + state > 0.8 * 80 * GB > state
    assert p["bld"].gpus_per_job == 1 + 3 == 1 + math.ceil(bld_plan.parent_bytes(arch) / (0.8 * 80 * GB))
    assert p["bld"].gpu_bytes_per_gpu == max(state, math.ceil(bld_plan.parent_bytes(arch) / 3))
    # every stage fits: the plan runs
    assert p.problems() == []


def test_a_70b_bld_budget_below_the_parent_groups_the_entries_on_the_training_gpu_alone(tmp_path):
    # bld.gpu_memory_gb = 30: the 141 GB online parent cannot share it, so it goes over the job's other GPUs and
    # the 30 GB are the training state's (before, this was refused)
    cfg = real_config(tmp_path, "llama-3.3-70b-h100.yaml", CFG_70B, bld={"gpu_memory_gb": 30})
    arch = cost_model.Arch.from_config(CFG_70B)
    trained = [n for n in library.entries(cfg, arch.shape) if library.needs_training(n, arch.shape)]
    groups = bld_plan.layer_groups(cfg, CFG_70B, trained, "online")
    states = [sum(bld_plan.entry_state_bytes(n, arch, 256) for n in g) for g in groups]
    assert len(groups) > 1 and [n for g in groups for n in g] == trained and max(states) <= 30 * GB
    p = plan.build(cfg, CFG_70B)
    assert p["bld"].gpus_per_job == 4 and p["bld"].gpu_bytes_per_gpu == math.ceil(bld_plan.parent_bytes(arch) / 3)
    assert p.problems() == []


def test_infeasible_plans_name_the_stage_and_the_numbers(tmp_path):
    cfg = real_config(tmp_path, "llama-3.3-70b-h100.yaml", CFG_70B, slurm={"gpus_per_node": 1, "gkd_gpus": 1})
    with pytest.raises(plan.PlanError, match=r"^plan error: activations: 3 GPUs per job on one node, more than "
                                             r"slurm.gpus_per_node = 1 \(and \d+ more\)$"):
        plan.build(cfg, CFG_70B).check()
    # GKD on one node: 40 GPUs' worth of state on 8
    cfg = real_config(tmp_path, "llama-3.3-70b-h100.yaml", CFG_70B, slurm={"gkd_nodes": 1})
    problems = [line for line in plan.build(cfg, CFG_70B).problems() if line.startswith("gkd: ")]
    assert len(problems) == 1 and "GB per GPU on 8 GPU(s), more than plan.gpu_memory_fraction 0.8 x 80 GB of a " \
        "h100_sxm" in problems[0], problems
    cfg = real_config(tmp_path, "llama-3.1-8b-h100.yaml", CFG_8B, plan={"disk_limit_gb": 100})
    with pytest.raises(plan.PlanError, match=r"^plan error: disk: 428.0 GB written in all \(bld 273.8 GB\), "
                                             r"more than plan.disk_limit_gb = 100$"):
        plan.build(cfg, CFG_8B).check()
    cfg = real_config(tmp_path, "llama-3.1-8b-h100.yaml", CFG_8B, slurm={"node_memory_gb": 30})
    assert plan.build(cfg, CFG_8B).problems()[0] == (
        "activations: 45.8 GB of host memory per job, more than slurm.node_memory_gb = 30")


def test_cli_layers_configs_prints_the_table_and_stops_an_infeasible_plan(tmp_path, capsys):
    parent = tmp_path / "parent"
    parent.mkdir()
    (parent / "config.json").write_text(json.dumps(CFG_8B))
    (tmp_path / "t.jsonl").write_text('{"text": "hello"}\n')
    over = tmp_path / "over.yaml"
    over.write_text(yaml.safe_dump({"parent": {"path": str(parent)}, "data": {"files": [str(tmp_path / "t.jsonl")]}}))
    real = str(REPO / "config" / "llama-3.1-8b-h100.yaml")
    assert cli.main(["plan", "--config", real, "--config", str(over)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["stage", "jobs", "GPUs/job", "GPU", "GB/GPU", "host", "GB", "disk", "GB", "PFLOPs",
                              "hours"]
    assert [line.split()[0] for line in out[1:10]] == [
        "data", "activations", "bld", "score", "costs", "search", "assemble", "gkd", "evaluate"]
    assert out[2].split()[:4] == ["activations", "1", "1", "16.1"]
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text("plan:\n  disk_limit_gb: 1\n")
    assert cli.main(["plan", "--config", real, "--config", str(over), "--config", str(tiny)]) == 2
    assert capsys.readouterr().err.startswith("puzzle plan: plan error: disk: 428.0 GB written in all")


def test_embedded_and_micro_keep_small_cpu_requests():
    micro = config_mod.load_layered([REPO / "config" / "config.yaml", REPO / ".test" / "config" / "config.yaml"])
    p = plan.build(micro, config_mod.parent_config(micro))
    assert p.problems() == []
    for s in p.stages:
        res = p.resources(s.stage, micro["slurm"])
        # what a 24 GB CI runner schedules next to another job; one GPU request, as before the planner
        assert res["mem_mb"] <= 8000 and res.get("gpu", 1) <= 1, (s.stage, res)


def test_schema_devices_are_the_cost_models():
    enum = config_mod.schema()["properties"]["plan"]["properties"]["device"]["enum"]
    assert sorted(enum) == sorted(cost_model.DEVICES)
