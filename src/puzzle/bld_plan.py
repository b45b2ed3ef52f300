"""How a BLD job is planned, without torch: where its teacher activations come from, which entries
train together, and what running the parent's prefix inside each job costs.

Teacher. A stored token costs 3 tensors (layer input x, FFN input h, output y) x hidden x dtype
bytes in every layer: 768 KiB at Llama-3.1-8B in bf16, so the paper's 0.25B BLD tokens per block
would be 197 TB. `bld.teacher: auto` stores the training activations only when a dump of every
token BLD trains on fits `bld.disk_budget_gb`; otherwise the BLD job runs the frozen parent
itself and produces each step's inputs and targets in memory. Validation activations (a small
fixed set every nMSE reads) are always stored.

Work split. One job per layer (the workflow's fan-out); the parent's layers before it run on the
job's own GPU (no pipeline). Entries whose training state together exceeds `bld.gpu_memory_gb`
train in groups, one pass over the token schedule each, so the prefix runs once per group.
`prefix_overhead` gives that extra work as a fraction of the training FLOPs.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from puzzle import blocks, cost_model, library, plan
from puzzle import config as config_mod

# Bytes per parameter: trained = fp32 weight + grad + two AdamW moments + a bf16 autocast copy;
# frozen (the parent FFN beside a decoupled attention variant) = fp32 weight + its bf16 copy.
TRAINED_BYTES, FROZEN_BYTES = 4 + 4 + 8 + 2, 4 + 2
# Only used to turn FLOPs into the printed GPU-hours: dense bf16 on an H100 at ~40% of its 989 TFLOP/s.
ASSUMED_TFLOPS = 400.0


def seq_len(cfg: dict[str, Any]) -> int:
    """Tokens per teacher window (stored or online): `activations.seq_len`, else the embedded
    parent's training length, else 256."""
    if cfg["activations"]["seq_len"]:
        return int(cfg["activations"]["seq_len"])
    return int(cfg["parent"]["train"]["seq_len"]) if not cfg["parent"]["path"] else 256


@dataclass(frozen=True)
class TeacherPath:
    path: str  # "stored" or "online"
    reason: str
    dump_bytes: int  # a dump of every BLD token (what storing them would take)


def teacher_path(cfg: dict[str, Any], parent_cfg: dict[str, Any]) -> TeacherPath:
    """Stored or online, and why (`bld.teacher`; auto compares the dump with `bld.disk_budget_gb`)."""
    bld, shape = cfg["bld"], library.parent_shape(parent_cfg)
    need = plan.activation_dump_bytes(parent_cfg, bld["tokens"], cfg["activations"]["dtype"])
    size = f"{bld['tokens']:,} BLD tokens x {shape.num_hidden_layers} layers would be {need / 1e9:,.4g} GB"
    if bld["teacher"] != "auto":
        return TeacherPath(bld["teacher"], f"bld.teacher = {bld['teacher']} ({size})", need)
    budget = bld["disk_budget_gb"] * 1e9
    if need <= budget:
        return TeacherPath("stored", f"auto: {size}, within bld.disk_budget_gb = {bld['disk_budget_gb']:g}", need)
    return TeacherPath("online", f"auto: {size}, over bld.disk_budget_gb = {bld['disk_budget_gb']:g}", need)


def parent_arch(cfg: dict[str, Any], parent_cfg: dict[str, Any]) -> cost_model.Arch:
    """The parent's shape; the embedded default's config.json is not written yet, so its
    vocabulary comes from the tokenizer settings."""
    return cost_model.Arch.from_config({"vocab_size": cfg["data"]["tokenizer"]["vocab_size"], **parent_cfg})


# ---- entries: parameters, training state, groups ----------------------------------------------


def entry_params(entry: str, arch: cost_model.Arch, multiple: int) -> tuple[int, int]:
    """(trained, frozen) parameters of a library entry while it trains; (0, 0) if it is copied or empty."""
    if not library.needs_training(entry, arch.shape):
        return 0, 0
    attn, ffn = library.subblocks(entry)
    trained = sum(cost_model.param_count(v, arch, multiple) for v in (attn, ffn) if v is not None)
    frozen = cost_model.param_count(blocks.parent_variants(arch.shape)[1], arch, multiple) if ffn is None else 0
    return trained, frozen


def entry_state_bytes(entry: str, arch: cost_model.Arch, multiple: int) -> int:
    trained, frozen = entry_params(entry, arch, multiple)
    return TRAINED_BYTES * trained + FROZEN_BYTES * frozen


def entry_groups(names: list[str], state_bytes: list[int], budget_bytes: float | None) -> list[list[str]]:
    """Consecutive groups of entries whose training state fits `budget_bytes` (None: one group)."""
    if budget_bytes is None:
        return [list(names)]
    groups: list[list[str]] = [[]]
    used = 0
    for name, size in zip(names, state_bytes):
        if size > budget_bytes:
            raise ValueError(f"bld.gpu_memory_gb: entry {name} alone needs {size / 1e9:.3g} GB of training state, "
                             f"more than {budget_bytes / 1e9:.3g} GB")
        if groups[-1] and used + size > budget_bytes:
            groups.append([])
            used = 0
        groups[-1].append(name)
        used += size
    return groups


def layer_groups(cfg: dict[str, Any], parent_cfg: dict[str, Any], names: list[str], teacher: str) -> list[list[str]]:
    """A layer's trained entries in the groups that train together (the same for every layer): they
    share the job's GPU (`bld.gpu_memory_gb`) with, online, the bf16 parent up to the last layer when it
    fits there; a larger parent goes over the job's other GPUs (bld_teacher.prefix_devices, plan._bld)."""
    arch, multiple = parent_arch(cfg, parent_cfg), cfg["search_space"]["ffn"]["multiple_of"]
    gb = cfg["bld"]["gpu_memory_gb"]
    if gb is None:
        return [list(names)]
    online = parent_bytes(arch) if teacher == "online" else 0
    budget = gb * 1e9 - (online if online < gb * 1e9 else 0)
    return entry_groups(names, [entry_state_bytes(n, arch, multiple) for n in names], budget)


def parent_bytes(arch: cost_model.Arch) -> int:
    """The bf16 parent an online job holds at most (all layers: the last layer's job)."""
    return plan.model_bytes(arch, "bfloat16")


# ---- FLOPs: training work and the prefix's overhead --------------------------------------------


def _forward_flops(params: int, arch: cost_model.Arch, seq: int, attention: bool) -> float:
    """Forward FLOPs per token of a subblock: 2 per weight, plus causal attention's two products."""
    return 2.0 * params + (2.0 * seq * arch.num_attention_heads * arch.head_dim if attention else 0.0)


def parent_layer_flops(arch: cost_model.Arch, seq: int) -> float:
    attn, ffn = blocks.parent_variants(arch.shape)
    return _forward_flops(cost_model.param_count(attn, arch), arch, seq, True) + _forward_flops(
        cost_model.param_count(ffn, arch), arch, seq, False)


def entry_train_flops(entry: str, arch: cost_model.Arch, multiple: int, seq: int) -> float:
    """Training FLOPs per token: forward + backward (2x forward) of trained subblocks, forward +
    input gradient (1x forward) of the frozen parent FFN beside a decoupled attention variant."""
    if not library.needs_training(entry, arch.shape):
        return 0.0
    attn, ffn = library.subblocks(entry)
    flops = 0.0
    for v in (attn, ffn):
        if v is not None and v not in (blocks.ATTN_NOOP, blocks.FFN_NOOP):
            attention = blocks.kind_of(v) == "attention" and v != blocks.ATTN_LINEAR
            flops += 3 * _forward_flops(cost_model.param_count(v, arch, multiple), arch, seq, attention)
    if ffn is None:
        flops += 2 * _forward_flops(cost_model.param_count(blocks.parent_variants(arch.shape)[1], arch), arch, seq,
                                    False)
    return flops


def prefix_overhead(
    arch: cost_model.Arch, groups: list[list[str]], multiple: int, seq: int, layers_per_job: int = 1
) -> dict[str, float]:
    """FLOPs per token of the whole library when jobs own `layers_per_job` consecutive layers
    (1: the workflow's one job per layer; more: `puzzle bld --layer A-B` pipelined over ranks).

    train: every entry's training + each layer's own parent forward and targets, per group (needed
    in any layout); prefix: the parent layers before each job's first layer, run once per group
    inside the job (a pipeline over the whole model would not repeat them); overhead = prefix / train.
    """
    layer = parent_layer_flops(arch, seq)
    per_layer = sum(entry_train_flops(n, arch, multiple, seq) for g in groups for n in g) + 2 * layer * len(groups)
    train = per_layer * arch.num_hidden_layers
    firsts = range(0, arch.num_hidden_layers, layers_per_job)
    prefix = layer * len(groups) * sum(firsts)
    return {"train_flops_per_token": train, "prefix_flops_per_token": prefix, "overhead": prefix / train}


def describe(cfg: dict[str, Any], parent_cfg: dict[str, Any]) -> dict[str, Any]:
    """The plan of a config's BLD: teacher path and why, groups, FLOPs and GPU-hours (`puzzle bld-plan`)."""
    arch, multiple = parent_arch(cfg, parent_cfg), cfg["search_space"]["ffn"]["multiple_of"]
    teacher = teacher_path(cfg, parent_cfg)
    names = library.entries(cfg, arch.shape)
    groups = layer_groups(cfg, parent_cfg, [n for n in names if library.needs_training(n, arch.shape)], teacher.path)
    flops = prefix_overhead(arch, groups, multiple, seq_len(cfg))
    work = flops["train_flops_per_token"] + (flops["prefix_flops_per_token"] if teacher.path == "online" else 0)
    return {
        "teacher": teacher.path, "reason": teacher.reason, "dump_bytes": teacher.dump_bytes,
        "tokens_per_entry": cfg["bld"]["tokens"], "seq_len": seq_len(cfg), "groups_per_layer": len(groups),
        "trained_entries_per_layer": sum(library.needs_training(n, arch.shape) for n in names), **flops,
        "overhead_by_layers_per_job": {
            k: prefix_overhead(arch, groups, multiple, seq_len(cfg), k)["overhead"]
            for k in sorted({1, 4, 8, arch.num_hidden_layers}) if k <= arch.num_hidden_layers
        },
        "gpu_hours": work * cfg["bld"]["tokens"] / (ASSUMED_TFLOPS * 1e12) / 3600,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config_mod.add_arguments(parser)


def main(args: argparse.Namespace) -> None:
    cfg = config_mod.from_args(args)
    plan = describe(cfg, config_mod.parent_config(cfg))
    print(f"teacher: {plan['teacher']} ({plan['reason']})")
    print(f"entries: {plan['trained_entries_per_layer']} trained per layer, in {plan['groups_per_layer']} group(s); "
          f"{plan['tokens_per_entry']:,} tokens each, windows of {plan['seq_len']}")
    print(f"work: {plan['train_flops_per_token'] / 1e9:.4g} GFLOP/token training; the parent before each layer "
          f"(one job per layer, on its own GPU) adds {plan['overhead']:.1%}; with jobs of k layers pipelined over "
          "their ranks (puzzle bld --layer A-B): " + ", ".join(
              f"k={k}: {v:.1%}" for k, v in plan["overhead_by_layers_per_job"].items()))
    print(f"about {plan['gpu_hours']:,.1f} GPU-hours at {ASSUMED_TFLOPS:g} TFLOP/s")
