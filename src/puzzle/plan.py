"""The planner: what every stage needs (jobs, GPUs, memory, disk, FLOPs, hours), from the parent's
config.json and the experiment config alone, before anything is submitted.

    python -m puzzle plan --config config/llama-3.3-70b-h100.yaml

The rules take their `mem_mb`, `runtime` and GPUs from it (rules/common.smk), and the Snakefile stops
an infeasible plan before any job, as `puzzle plan` does: a job needing more than `plan.gpu_memory_fraction`
of a GPU's memory on every GPU of a node, more GPUs than `slurm.gpus_per_node`, more host memory than
`slurm.node_memory_gb`, or a disk total over `plan.disk_limit_gb`.

What is counted, per stage (P = parameters, bytes at the stored dtype of config.json unless the stage
sets its own). A stage whose loader places its model over the job's GPUs (SPANS_GPUS: checkpoint.load
over checkpoint.devices_for) and whose bytes do not fit one GPU gets ceil(bytes / usable GPU bytes) GPUs;
its hours are one GPU's, the GPUs holding layers in turn; what a job holds besides the parent's layers
(scoring's logits, cached inputs and candidate blocks) is counted whole on each GPU, where it may land.
BLD's online teacher prefix too, over the job's GPUs but the one training (bld_teacher.prefix_devices): a
job whose parent and training state do not fit one GPU gets 1 + ceil(parent / usable) GPUs. The costs stacks
run on one device, so their bytes must fit one GPU:

    data         CPU; shards = text bytes x shard itemsize / 4 (about 4 characters per token)
    activations  the parent + the dump (x, h, y per layer) of train (stored teacher only) and valid
    bld          one job per layer: the online parent (bf16) + the training state of a layer's
                 largest group (bld_plan), split as above when they exceed one GPU; library files + one
                 checkpoint (12 B / trained parameter)
    score        one job per layer: the parent + float32 logits of a batch (parent's and candidate's)
                 + the cached layer inputs + the layer's candidate blocks (every library entry of a layer);
                 FLOPs of every composition through the layers after it
    costs        measured targets: 3 x costs.n_copies parent layers + the non-block part + the KV
                 cache of the largest scenario; analytic targets are CPU jobs
    search       CPU, one job per solution
    assemble     CPU: the child (at most the parent's size) in memory and on disk
    gkd          gkd_memory.bytes_per_gpu on slurm.gkd_nodes x slurm.gkd_gpus processes, the child
                 taken at the parent's size (the largest a search can return); 6 P_child (+2 with
                 activation checkpointing) + 2 P_parent FLOPs per token; host per node: each rank's process and
                 one full tensor being read (the largest, float32 + stored staging), or rank 0's gathered child
    evaluate     the parent and one child (at most the parent's size) at a time, three models in turn

Imports no torch (it plans on a login node). Bytes are decimal (1 GB = 1e9 B).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any

from puzzle import bld_plan, blocks, cost_model, gkd_memory, library, score_plan
from puzzle import config as config_mod
from puzzle.blocks import ParentShape

# The activations stage stores x, h and y of every layer (activations.TENSORS; pinned by a test).
ACTIVATION_TENSORS = 3
ACTIVATION_DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
# What a torch process holds besides its model (interpreter, torch, CUDA context, pinned buffers);
# also the least memory any job asks for, so the embedded default keeps today's small requests.
PROCESS_BYTES = 4_000_000_000
# Minutes every GPU job gets besides its FLOPs (imports, reading the checkpoint, writing outputs).
STARTUP_MIN = 10
# Minutes a scoring job is cut to fill (scoring.parts = auto; score_plan.layer_parts).
SCORE_PART_MINUTES = 60
# Shortest runtime per rule (minutes): the rules' constants before the planner, kept for small jobs.
MIN_RUNTIME = {"data": 30, "parent": 60, "activations": 60, "bld": 120, "score": SCORE_PART_MINUTES, "costs": 120,
               "search": 15, "assemble": 30, "gkd": 240, "evaluate": 120}
CHARS_PER_TOKEN = 4  # a BPE token of English text or code
CHECKPOINT_BYTES = 4 + 8  # float32 weights + two AdamW moments per trained parameter
CSV_ROW_BYTES = 200  # one scored composition in scores/layer_i.csv
# evaluate scores the parent, the child and its GKD version, holding one of them beside the parent at a time
EVAL_MODELS, EVAL_HELD = 3, 2
# Stages whose model checkpoint.load places over all the job's GPUs (device=devices_for(...)); scoring runs each
# layer's parts on that layer's device (scoring.run_layer, checkpoint.weights_on).
SPANS_GPUS = frozenset({"activations", "evaluate", "score"})
STAGES = ("data", "parent", "activations", "bld", "score", "costs", "search", "assemble", "gkd", "evaluate")


class PlanError(config_mod.ConfigError):
    """A plan that cannot run; one line naming the stage and the numbers."""


def activation_dump_bytes(parent_cfg: dict[str, Any], tokens: int, dtype: str = "bf16") -> int:
    """Bytes the activations stage writes for `tokens` tokens of one split (x, h, y of every layer;
    the safetensors headers, a few hundred bytes per chunk file, are left out)."""
    shape = ParentShape.from_config(parent_cfg)  # only the widths: a vocabulary need not be known yet
    per_token = ACTIVATION_TENSORS * shape.hidden_size * ACTIVATION_DTYPE_BYTES[dtype] * shape.num_hidden_layers
    return int(tokens) * per_token


@dataclass(frozen=True)
class StagePlan:
    stage: str
    jobs: int
    gpus_per_job: int  # 0 = a CPU job
    gpu_bytes_per_gpu: int
    host_bytes: int  # per job (per node for a multi-node job)
    disk_bytes: int  # written by all jobs together
    flops: float  # all jobs together
    hours: float  # the longest job, at the device's peak
    nodes: int = 1  # per job


@dataclass(frozen=True)
class Plan:
    stages: tuple[StagePlan, ...]
    device: cost_model.Device
    gpu_fraction: float
    gpus_per_node: int
    node_bytes: float
    disk_limit_bytes: float | None
    utilization: float
    score_parts: dict[int, int]  # layer -> its scoring jobs (rules/scoring.smk)

    def __getitem__(self, stage: str) -> StagePlan:
        return next(s for s in self.stages if s.stage == stage)

    @property
    def disk_bytes(self) -> int:
        return sum(s.disk_bytes for s in self.stages)

    def problems(self) -> list[str]:
        """One line per reason the plan cannot run (empty: it can)."""
        out, usable = [], self.gpu_fraction * self.device.memory_gb * 1e9
        for s in self.stages:
            per_node = s.gpus_per_job // s.nodes
            if s.gpus_per_job and s.gpu_bytes_per_gpu > usable:
                one = "" if s.stage in SPANS_GPUS or s.stage == "gkd" or s.gpus_per_job > 1 else \
                    " (this stage runs its model on one GPU)"
                out.append(f"{s.stage}: {s.gpu_bytes_per_gpu / 1e9:.1f} GB per GPU on {s.gpus_per_job} GPU(s){one}, "
                           f"more than plan.gpu_memory_fraction {self.gpu_fraction:g} x {self.device.memory_gb:g} GB "
                           f"of a {self.device.name}")
            if per_node > self.gpus_per_node:
                out.append(f"{s.stage}: {per_node} GPUs per job on one node, more than slurm.gpus_per_node = "
                           f"{self.gpus_per_node}")
            if s.host_bytes > self.node_bytes:
                out.append(f"{s.stage}: {s.host_bytes / 1e9:.1f} GB of host memory per job, more than "
                           f"slurm.node_memory_gb = {self.node_bytes / 1e9:g}")
        if self.disk_limit_bytes is not None and self.disk_bytes > self.disk_limit_bytes:
            worst = max(self.stages, key=lambda s: s.disk_bytes)
            out.append(f"disk: {self.disk_bytes / 1e9:,.1f} GB written in all ({worst.stage} "
                       f"{worst.disk_bytes / 1e9:,.1f} GB), more than plan.disk_limit_gb = "
                       f"{self.disk_limit_bytes / 1e9:g}")
        return out

    def check(self) -> None:
        problems = self.problems()
        if problems:
            more = f" (and {len(problems) - 1} more)" if problems[1:] else ""
            raise PlanError(f"plan error: {problems[0]}{more}")

    def runtime_min(self, stage: str) -> int:
        """A job's time limit: its hours at `plan.utilization` of the peak, the startup, and at least
        the rule's old constant."""
        s = self[stage]
        return max(MIN_RUNTIME[stage], math.ceil(STARTUP_MIN + 60 * s.hours / self.utilization))

    def resources(self, stage: str, slurm: dict[str, Any]) -> dict[str, Any]:
        """A rule's `resources`: mem_mb (1e6 bytes, as Snakemake reads it), runtime (minutes) and, for a GPU
        job, the GPUs as rules request them (gpu + gpu_model + partition; GKD: gkd_launch's)."""
        from puzzle import gkd_launch  # torch-free

        if not any(s.stage == stage for s in self.stages):  # a rule this config never runs (parent beside a real one)
            return {"mem_mb": math.ceil(PROCESS_BYTES / 1e6), "runtime": MIN_RUNTIME[stage]}
        s = self[stage]
        out: dict[str, Any] = {"mem_mb": math.ceil(s.host_bytes / 1e6), "runtime": self.runtime_min(stage)}
        if stage == "gkd":
            return {**out, **gkd_launch.resources(slurm)}
        return {**out, **(gpu_request(s.gpus_per_job, slurm) if s.gpus_per_job else {})}

    def table(self) -> str:
        head = ("stage", "jobs", "GPUs/job", "GPU GB/GPU", "host GB", "disk GB", "PFLOPs", "hours")
        rows = [head] + [
            (s.stage, f"{s.jobs}", f"{s.gpus_per_job}" + (f" ({s.nodes} nodes)" if s.nodes > 1 else ""),
             f"{s.gpu_bytes_per_gpu / 1e9:.1f}", f"{s.host_bytes / 1e9:.1f}", f"{s.disk_bytes / 1e9:,.1f}",
             f"{s.flops / 1e15:,.1f}", f"{s.hours:,.2f}")
            for s in self.stages
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                 for r in rows]
        lines.append(f"disk in all: {self.disk_bytes / 1e9:,.1f} GB; hours: the longest job at the "
                     f"{self.device.name}'s {self.device.peak_tflops:g} TFLOP/s; runtime limits at "
                     f"{self.utilization:g} of it")
        return "\n".join(lines)


def gpu_request(gpus: int, slurm: dict[str, Any]) -> dict[str, Any]:
    """`gpu` (+ slurm.gpu_model, slurm.gpu_partition when set, and only with GPUs) of a one-node job."""
    place = {k: v for k, v in (("gpu_model", slurm["gpu_model"]), ("slurm_partition", slurm["gpu_partition"])) if v}
    return {"gpu": gpus, **(place if gpus else {})}


# ---- the parts every stage uses -----------------------------------------------------------------


def _dtype_name(name: str, parent_cfg: dict[str, Any]) -> str:
    """A config dtype as cost_model names it: auto = the stored dtype (the planner plans GPU jobs)."""
    if name == "auto":
        return stored_dtype(parent_cfg)
    return {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}.get(name, name)


def stored_dtype(parent_cfg: dict[str, Any]) -> str:
    """config.json's torch_dtype (or dtype); float32 when it names none (the embedded parent)."""
    name = parent_cfg.get("torch_dtype") or parent_cfg.get("dtype") or "float32"
    return name if name in cost_model.DTYPE_BYTES else "float32"


def model_bytes(arch: cost_model.Arch, dtype: str) -> int:
    """The parent's parameter bytes at `dtype` (every layer with its own block; cost_model's counts)."""
    return cost_model.memory_needed(arch, 1, 0, 0, cost_model.Placement(dtype))[0]


def model_params(arch: cost_model.Arch) -> int:
    return model_bytes(arch, "float32") // 4


def largest_tensor(arch: cost_model.Arch) -> int:
    """Parameters of the parent's largest tensor: the embedding (or head), an FFN matrix or a query projection."""
    return arch.hidden_size * max(arch.vocab_size, arch.intermediate_size, arch.num_attention_heads * arch.head_dim)


def forward_flops(arch: cost_model.Arch, seq: int) -> float:
    """The parent's forward FLOPs per token at windows of `seq` (the head on every position)."""
    return arch.num_hidden_layers * bld_plan.parent_layer_flops(arch, seq) + 2.0 * arch.hidden_size * arch.vocab_size


def _hours(flops: float, dev: cost_model.Device, gpus: int = 1) -> float:
    return flops / (max(gpus, 1) * dev.peak_tflops * 1e12) / 3600


def _solutions(cfg: dict[str, Any]) -> int:
    from puzzle.naming import solution_ids  # lazily: naming imports the search's budget parsing

    return len(solution_ids(cfg))


def _children(cfg: dict[str, Any]) -> int:
    chosen = cfg["assemble"]["solutions"]
    return len(chosen) if chosen is not None else _solutions(cfg)


def _text_bytes(cfg: dict[str, Any]) -> int:
    if cfg["data"]["source"] != "files":
        return 0  # the embedded corpora: a few MB
    return sum(os.path.getsize(f) for f in map(os.path.expanduser, cfg["data"]["files"]) if os.path.exists(f))


# ---- the plan -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Parts:
    """What every stage's plan reads: the config, the parent's shape and the hardware."""

    cfg: dict[str, Any]
    parent_cfg: dict[str, Any]
    arch: cost_model.Arch
    dev: cost_model.Device
    usable: float  # GPU bytes a job's planned bytes may take (plan.gpu_memory_fraction)

    @property
    def multiple(self) -> int:
        return self.cfg["search_space"]["ffn"]["multiple_of"]

    @property
    def stored(self) -> int:
        """The parent's bytes at its stored dtype (what a load reads)."""
        return model_bytes(self.arch, stored_dtype(self.parent_cfg))

    def bytes_at(self, dtype: str) -> int:
        return model_bytes(self.arch, _dtype_name(dtype, self.parent_cfg))

    def gpu_job(self, stage: str, jobs: int, need: float, host: float, disk: float, flops: float,
                longest_flops: float, whole: float = 0) -> StagePlan:
        """A one-node job holding `need` bytes split over its GPUs and `whole` bytes that may all land on one of
        them: over the fewest GPUs that fit for a stage of SPANS_GPUS, else on one GPU (slurm.gpus_per_job
        requested, as configured); its hours are one GPU's."""
        gpus = self.cfg["slurm"]["gpus_per_job"]
        spans = stage in SPANS_GPUS and gpus
        if spans:
            gpus = max(gpus, math.ceil(need / max(self.usable - whole, 1)))
        per_gpu = math.ceil(need / gpus) + whole if spans else need + whole if gpus else 0
        return StagePlan(stage, jobs, gpus, int(per_gpu), int(host), int(disk), flops,
                         _hours(longest_flops, self.dev))


def build(cfg: dict[str, Any], parent_cfg: dict[str, Any]) -> Plan:
    """The plan of a validated config (module docstring)."""
    p, slurm = cfg["plan"], cfg["slurm"]
    dev = cost_model.device(p["device"])
    usable = p["gpu_memory_fraction"] * dev.memory_gb * 1e9
    c = _Parts(cfg, parent_cfg, bld_plan.parent_arch(cfg, parent_cfg), dev, usable)
    children = _children(cfg)
    parts = score_plan.layer_parts(cfg, parent_cfg, SCORE_PART_MINUTES)
    stages = [
        _data(c),
        *([] if cfg["parent"]["path"] else [_parent(c)]),
        _activations(c),
        _bld(c),
        _score(c, parts),
        _costs(c),
        StagePlan("search", _solutions(cfg), 0, 0, PROCESS_BYTES // 2, 0, 0.0, 0.0),
        # CPU: the child (at most the parent's size) in memory, then on disk
        StagePlan("assemble", children, 0, 0, PROCESS_BYTES + c.stored, children * c.stored, 0.0, 0.0),
        _gkd(c, children),
        _evaluate(c, children),
    ]
    return Plan(tuple(stages), dev, p["gpu_memory_fraction"], slurm["gpus_per_node"], slurm["node_memory_gb"] * 1e9,
                None if p["disk_limit_gb"] is None else p["disk_limit_gb"] * 1e9, p["utilization"], parts)


def _data(c: _Parts) -> StagePlan:
    """Text -> token shards on CPU: about a token per CHARS_PER_TOKEN bytes of text."""
    itemsize = 2 if c.arch.vocab_size <= 65536 else 4  # data.shard_dtype
    return StagePlan("data", 1, 0, 0, PROCESS_BYTES, _text_bytes(c.cfg) * itemsize // CHARS_PER_TOKEN, 0.0, 0.0)


def _parent(c: _Parts) -> StagePlan:
    """The embedded parent, trained on CPU: float32 weights, gradients and AdamW state (16 B / parameter)."""
    t, params = c.cfg["parent"]["train"], model_params(c.arch)
    flops = 3 * forward_flops(c.arch, t["seq_len"]) * t["steps"] * t["batch_size"] * t["seq_len"]
    return StagePlan("parent", 1, 0, 0, PROCESS_BYTES + 16 * params, 16 * params, flops, _hours(flops, c.dev))


def _activations(c: _Parts) -> StagePlan:
    """One job per dump: train (a stored teacher only) and valid; a chunk of every layer is held on the host."""
    act, seq = c.cfg["activations"], bld_plan.seq_len(c.cfg)
    teacher = bld_plan.teacher_path(c.cfg, c.parent_cfg).path
    windows = [act["valid_windows"]] + ([act["train_windows"]] if teacher == "stored" else [])
    chunk = activation_dump_bytes(c.parent_cfg, min(act["chunk_windows"], max(windows)) * seq, act["dtype"])
    disk = sum(activation_dump_bytes(c.parent_cfg, w * seq, act["dtype"]) for w in windows)
    per_window = seq * forward_flops(c.arch, seq)
    return c.gpu_job("activations", len(windows), c.stored, PROCESS_BYTES + c.stored + chunk, disk,
                     sum(windows) * per_window, max(windows) * per_window)


def _bld(c: _Parts) -> StagePlan:
    """One job per layer: the online parent (bf16; the last layer's job holds all of it) + the training
    state of the layer's largest group; library files + one checkpoint per trained parameter."""
    arch, multiple, tokens = c.arch, c.multiple, c.cfg["bld"]["tokens"]
    layers = arch.num_hidden_layers
    teacher = bld_plan.teacher_path(c.cfg, c.parent_cfg).path
    names = library.entries(c.cfg, arch.shape)
    trained = [n for n in names if library.needs_training(n, arch.shape)]
    groups = bld_plan.layer_groups(c.cfg, c.parent_cfg, trained, teacher)
    state = max((sum(bld_plan.entry_state_bytes(n, arch, multiple) for n in g) for g in groups), default=0)
    online = bld_plan.parent_bytes(arch) if teacher == "online" else 0
    work = bld_plan.describe(c.cfg, c.parent_cfg)
    prefix = work["prefix_flops_per_token"] if teacher == "online" else 0.0
    # the last layer's job: its share of the training, and the parent's other layers once per group
    before = bld_plan.parent_layer_flops(arch, bld_plan.seq_len(c.cfg)) * len(groups) * (layers - 1)
    last = work["train_flops_per_token"] / layers + (before if teacher == "online" else 0.0)
    entry_bytes = sum(_entry_params(n, arch, multiple) for n in names) * cost_model.DTYPE_BYTES[
        stored_dtype(c.parent_cfg)]
    checkpoint = CHECKPOINT_BYTES * sum(bld_plan.entry_params(n, arch, multiple)[0] for n in trained)
    job = c.gpu_job("bld", layers, online + state, PROCESS_BYTES + online, layers * (entry_bytes + checkpoint),
                    (work["train_flops_per_token"] + prefix) * tokens, last * tokens)
    if online and job.gpus_per_job and job.gpu_bytes_per_gpu > c.usable:
        # bld_teacher.prefix_devices: the training state on the first GPU, the parent over the fewest others
        others = math.ceil(online / c.usable)
        job = dataclasses.replace(job, gpus_per_job=max(job.gpus_per_job, 1 + others),
                                  gpu_bytes_per_gpu=max(state, math.ceil(online / others)))
    return job


def _score(c: _Parts, parts: dict[int, int]) -> StagePlan:
    """scoring.parts jobs per layer (score_plan: each runs the parent once and its share of the layer's
    candidates through the layers after it); the parent, float32 logits of the parent and a candidate
    for one batch, and the cached layer inputs."""
    sc, arch = c.cfg["scoring"], c.arch
    tokens = sc["valid_windows"] * sc["seq_len"]
    dtype_bytes = cost_model.DTYPE_BYTES[_dtype_name(sc["dtype"], c.parent_cfg)]
    logits = 2 * 4 * sc["batch_size"] * sc["seq_len"] * arch.vocab_size
    inputs = tokens * arch.hidden_size * dtype_bytes
    candidates = sum(_entry_params(n, arch, c.multiple) for n in library.entries(c.cfg, arch.shape)) * dtype_bytes
    attn, ffn = blocks.search_space(arch.shape, c.cfg["search_space"])
    rows = arch.num_hidden_layers * (len(attn) * len(ffn) - 1) * CSV_ROW_BYTES
    flops = [score_plan.part_flops(c.cfg, c.parent_cfg, i, k, n) for i, n in parts.items() for k in range(1, n + 1)]
    return c.gpu_job("score", len(flops), c.bytes_at(sc["dtype"]), PROCESS_BYTES + c.stored, rows, sum(flops),
                     max(flops), whole=logits + inputs + candidates)


def _evaluate(c: _Parts, children: int) -> StagePlan:
    """One job per child holding EVAL_HELD models (each at most the parent's size) and a batch's logits."""
    ev = c.cfg["evaluate"]
    need = EVAL_HELD * c.bytes_at(ev["dtype"]) + 4 * ev["batch_size"] * ev["seq_len"] * c.arch.vocab_size
    one = EVAL_MODELS * ev["test_windows"] * ev["seq_len"] * forward_flops(c.arch, ev["seq_len"])
    return c.gpu_job("evaluate", children, need, PROCESS_BYTES + c.stored, 0, children * one, one)


def _entry_params(entry: str, arch: cost_model.Arch, multiple: int) -> int:
    """Parameters a library entry's file holds (its attention and / or FFN subblock)."""
    return sum(cost_model.param_count(v, arch, multiple) for v in library.subblocks(entry) if v is not None)


def _costs(c: _Parts) -> StagePlan:
    """Measured targets time stacks of N, 2N copies of each variant (costs.n_copies) on the job's GPU:
    at most 3N parent layers + the non-block part + their KV cache at the longest scenario."""
    costs, arch = c.cfg["costs"], c.arch
    measured = [t for t in costs["targets"].values() if t.get("measure")]
    if not measured:
        return StagePlan("costs", len(costs["targets"]), 0, 0, PROCESS_BYTES // 4, 0, 0.0, 0.0)
    dtype = measured[0].get("dtype", "auto")
    place = cost_model.Placement("bfloat16" if dtype == "auto" else dtype)  # auto: bfloat16 on a GPU
    copies = 3 * costs["n_copies"]
    attn, ffn = blocks.parent_variants(arch.shape)
    layer = cost_model.param_bytes(attn, arch, place) + cost_model.param_bytes(ffn, arch, place)
    kv_token = cost_model.kv_bytes_per_token(attn, arch, place.weight_bytes)
    longest = max(max(s.get("batch_sizes", [1])) * (s["input_len"] + s["output_len"]) for s in costs["scenarios"])
    need = cost_model.param_bytes(cost_model.NON_BLOCK, arch, place) + copies * (layer + kv_token * longest)
    variants = [v for kind in blocks.search_space(arch.shape, c.cfg["search_space"]) for v in kind]
    flops = 0.0
    for s in costs["scenarios"]:
        kv = cost_model.decode_kv_len(s["input_len"], s["output_len"])
        for b in s.get("batch_sizes", [1]):
            for v in variants:
                flops += cost_model.prefill_work(v, arch, b, s["input_len"], place)[0]
                flops += s["output_len"] * cost_model.decode_work(v, arch, b, kv, place)[0]
    per_target = flops * copies * (costs["repeats"] + costs["warmup"])
    return c.gpu_job("costs", len(costs["targets"]), need, PROCESS_BYTES + need, 0, per_target * len(measured),
                     per_target)


def _gkd(c: _Parts, children: int) -> StagePlan:
    """GKD on slurm.gkd_nodes x slurm.gkd_gpus processes (gkd_memory), the child at the parent's size;
    FLOPs per token: the parent's forward + the child's forward and backward (+ a forward recomputed
    under activation checkpointing)."""
    g, slurm, arch = c.cfg["gkd"], c.cfg["slurm"], c.arch
    nodes, per_node = slurm["gkd_nodes"], slurm["gkd_gpus"]
    gpus, params = nodes * per_node, model_params(arch)
    root = cost_model.param_count(cost_model.NON_BLOCK, arch)
    attn, ffn = blocks.parent_variants(arch.shape)
    layer = cost_model.param_count(attn, arch) + cost_model.param_count(ffn, arch)
    compute = 2 if g["precision"] == "bf16" else 4
    gpu_bytes = c.dev.memory_gb * 1e9 if gpus else None
    sharded = gkd_memory.parent_sharded(g["parent_sharding"], compute * params, gpu_bytes)
    need = gkd_memory.bytes_per_gpu(params, params, max(gpus, 1), sharded, root, layer, compute).total
    tokens = g["tokens"] if g["tokens"] is not None else g["steps"] * g["batch_size"] * g["seq_len"]
    flops = forward_flops(arch, g["seq_len"]) * ((4 if g["activation_checkpointing"] else 3) + 1) * tokens
    # Each rank reads its shards one full tensor at a time (sharding.materialize): the child's largest in float32,
    # through a staging buffer of the stored dtype unless that is float32 too; a CPU run holds its shards and
    # training state on the host. At the end rank 0 holds the gathered child in its stored dtype (+ one float32
    # tensor being gathered).
    largest, ranks = largest_tensor(arch), max(per_node, 1)
    itemsize = c.stored // params
    held = PROCESS_BYTES + (0 if gpus else need)
    host = ranks * held + max(ranks * largest * (4 + (0 if itemsize == 4 else itemsize)), c.stored + 4 * largest)
    return StagePlan("gkd", children, gpus, need if gpus else 0, host,
                     children * (c.stored + CHECKPOINT_BYTES * params), children * flops, _hours(flops, c.dev, gpus),
                     nodes)


# ---- CLI ----------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", action="append", required=True,
                        help="experiment config YAML; several are layered in order, like Snakemake's --configfile")


def main(args: argparse.Namespace) -> None:
    cfg = config_mod.load_layered(args.config)
    plan = build(cfg, config_mod.parent_config(cfg))
    print(plan.table())
    plan.check()
