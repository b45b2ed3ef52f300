"""GKD stage: global knowledge distillation of an assembled child from its parent (paper §4.3).

    python -m puzzle gkd --cfg JSON --parent PARENT --child CHILD --train train.bin --valid valid.bin --out OUT
    torchrun --nproc_per_node 8 -m puzzle gkd ...      (one process per GPU; the rule builds the
                                                        srun + torchrun line for several nodes: gkd_launch.py)

Loss per batch, each term switchable (config `gkd.loss`, for the paper's Table 17 ablation):

    cosine  sum over layers l of mean over tokens of (1 - cos(h_child^l, h_parent^l)),
            h^l = the output of decoder layer l (before the final norm)
    kl      mean over tokens of KL(parent || child) on the next-token distributions
    lm      mean next-token cross-entropy of the child (off by default: the paper finds it hurts)

computed `gkd.loss_chunk` positions at a time (gkd_loss.py: no sequence x vocabulary tensor is held).
The child is sharded with FSDP2 over all processes (float32 master weights, bf16 compute with
`precision: bf16`); the parent is replicated or sharded (`gkd.parent_sharding`). One process joins
a one-rank group of its own, so the embedded default runs the same code on a laptop CPU.

The budget is `tokens` (or steps x batch_size x seq_len); linear warmup then cosine decay. Batches
are a function of (seed, step) and each process takes every N-th window of the step's batch, so
the global batch is the same for any N. Sharded checkpoints (torch.distributed.checkpoint, a hidden
folder beside OUT) are saved every `checkpoint_every` steps, every `checkpoint_minutes` and on
SIGTERM/SIGUSR1 (SLURM's warning before a preemption or the time limit); a rerun resumes from the
last one on any number of processes, unless the config or the inputs changed since (then the
checkpoint is discarded, with a line in the log). Validation KL on fixed windows of the valid shard
is logged every eval_every steps (and before the first step). OUT is the child in the same
Nemotron-NAS format plus gkd_log.csv, gkd.png and report.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor
from tqdm import tqdm

from puzzle import checkpoint, gkd_memory, sharding
from puzzle import config as config_mod
from puzzle.convert import save_child, tokenizer_files
from puzzle.data import read_shard
from puzzle.gkd_loss import TERMS, final_and_layers, kl_sums, term_means
from puzzle.io import atomic_path, read_json, write_csv, write_json
from puzzle.training import adamw, cosine_lr, fixed_windows, pick_device, sample_windows, set_lr

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# Keys that change how a run computes, not what: a checkpoint stays valid when they change.
HOW_KEYS = ("checkpoint_every", "checkpoint_minutes", "activation_checkpointing", "loss_chunk",
            "micro_batch_size", "parent_sharding", "eval_every")


class Distiller(torch.nn.Module):
    """The child (student) with the GKD loss as its forward: the FSDP root around it. The parent
    (teacher) is not a submodule: it is replicated, or sharded as a root of its own."""

    def __init__(self, student: torch.nn.Module, teacher: torch.nn.Module, terms: dict[str, bool], chunk: int):
        super().__init__()
        self.student = student
        self._teacher = (teacher,)
        self.terms, self.chunk = terms, chunk

    @property
    def teacher(self) -> torch.nn.Module:
        return self._teacher[0]

    def forward(self, x: torch.Tensor, validate: bool = False) -> torch.Tensor:
        """[cosine, kl, lm] means of windows `x` (inputs x[:, :-1], next tokens x[:, 1:]); with
        `validate`, each window's summed KL(parent || child) instead."""
        ids, targets = x[:, :-1], x[:, 1:]
        layers = self.terms["cosine"] and not validate
        t_final, t_layers = None, None
        if validate or self.terms["cosine"] or self.terms["kl"]:
            with torch.no_grad():
                t_final, t_layers = final_and_layers(self.teacher, ids, layers)
        s_final, s_layers = final_and_layers(self.student, ids, layers)
        head, t_head = self.student.lm_head, self.teacher.lm_head
        if validate:
            return kl_sums(s_final, head, t_final, t_head, self.chunk)
        return term_means(s_final, s_layers, head, t_final, t_layers, t_head, targets, self.terms, self.chunk)


def checkpoint_dtype(path: str | Path) -> torch.dtype:
    """The dtype a checkpoint's config.json records (float32 when it records none)."""
    cfg = read_json(Path(path) / "config.json")
    return getattr(torch, cfg.get("dtype") or cfg.get("torch_dtype") or "float32")


def total_steps(g: dict[str, Any]) -> int:
    """`gkd.tokens` rounded up to whole steps of batch_size x seq_len tokens, else `gkd.steps`."""
    return math.ceil(g["tokens"] / (g["batch_size"] * g["seq_len"])) if g["tokens"] else g["steps"]


def check(g: dict[str, Any], processes: int) -> int:
    """The GKD keys that only make sense with the process count known, as one-line config errors;
    returns the windows per forward pass of one process."""
    if g["batch_size"] % processes:
        raise config_mod.ConfigError(
            f"config error: gkd.batch_size = {g['batch_size']}: expected a multiple of the {processes} processes"
        )
    local = g["batch_size"] // processes
    micro = g["micro_batch_size"] or local
    if local % micro:
        raise config_mod.ConfigError(
            f"config error: gkd.micro_batch_size = {micro}: expected a divisor of the {local} windows per process"
            f" (batch_size {g['batch_size']} / {processes} processes)"
        )
    return micro


def fingerprint(cfg: dict[str, Any], *inputs: str | Path) -> str:
    """sha256 of what a run's result depends on: the GKD config (without HOW_KEYS), the seed, and the
    name, size and modification time of every input file (a rewritten parent, child or shard differs)."""
    h = hashlib.sha256()
    what = {k: v for k, v in cfg["gkd"].items() if k not in HOW_KEYS}
    h.update(json.dumps({"gkd": what, "seed": cfg["seed"]}, sort_keys=True).encode())
    for root in map(Path, inputs):
        for f in sorted(root.rglob("*")) if root.is_dir() else [root]:
            if f.is_file():
                st = f.stat()
                name = f.relative_to(root) if root.is_dir() else f.name
                h.update(f"{name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def shard_parent(choice: str, parent: torch.nn.Module, device: torch.device) -> bool:
    """gkd.parent_sharding for this parent on this device (gkd_memory.parent_sharded)."""
    size = checkpoint.model_bytes(parent)
    gpu = torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else None
    return gkd_memory.parent_sharded(choice, size, gpu)


# ---- the training loop ---------------------------------------------------------------------------


def train(
    cfg: dict[str, Any], parent_dir: str, child_dir: str, train_shard: str, valid_shard: str, out_dir: str
) -> dict[str, Any]:
    """Distill the child of `child_dir` from the parent; writes OUT and returns its report."""
    # `threads` are the node's; torchrun's processes on one node share them
    torch.set_num_threads(max(1, cfg["threads"] // int(os.environ.get("LOCAL_WORLD_SIZE", 1))))
    group = sharding.join(pick_device(cfg["device"]))
    try:
        return _train(cfg, group, parent_dir, child_dir, train_shard, valid_shard, out_dir)
    finally:
        sharding.leave(group)


class _Stop:
    """Set by SIGTERM / SIGUSR1 (SLURM signals a job before preempting or timing it out)."""

    def __init__(self) -> None:
        self.asked = False
        self._old = {s: signal.signal(s, self._set) for s in (signal.SIGTERM, signal.SIGUSR1)}

    def _set(self, *_: Any) -> None:
        self.asked = True

    def restore(self) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)


def _train(cfg: dict[str, Any], group: sharding.Group, parent_dir: str, child_dir: str, train_shard: str,
           valid_shard: str, out_dir: str) -> dict[str, Any]:
    g, seed, device = cfg["gkd"], cfg["seed"], group.device
    micro = check(g, group.world)
    compute = DTYPES[g["precision"]]
    out = Path(out_dir)
    ckpt = out.parent / f".{out.name}.checkpoint"

    # Both models are built on meta and sharded there; each rank then reads only its shards (sharding.materialize)
    parent = checkpoint.empty(parent_dir, compute).requires_grad_(False)  # frozen: compute dtype is enough
    if shard_parent(g["parent_sharding"], parent, device):
        sharding.shard(parent, parent.base_model, group, compute)
        sharding.materialize(parent, parent_dir, device, compute)  # the head (outside base_model): a replica
    else:
        parent = checkpoint.load(parent_dir, dtype=compute, device=device).requires_grad_(False)
    child = checkpoint.empty(child_dir, torch.float32)  # float32 master weights; saved back in the input dtype
    if g["activation_checkpointing"]:
        child.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    child.train()
    model = Distiller(child, parent, g["loss"], g["loss_chunk"])
    sharding.shard(child, model, group, compute)
    sharding.materialize(child, child_dir, device, torch.float32)
    optimizer = adamw(model, g["lr"], g["weight_decay"])

    fp = fingerprint(cfg, parent_dir, child_dir, train_shard, valid_shard)
    start, log = _resume(ckpt, model, optimizer, group, fp)
    train_tokens = read_shard(train_shard)
    valid, weight = _split_windows(fixed_windows(read_shard(valid_shard), g["eval_windows"], g["seq_len"] + 1), group)

    def val_kl() -> float:
        sums = torch.zeros(2, dtype=torch.float64, device=device)
        model.eval()
        with torch.no_grad():
            for xb, wb in zip(valid.split(micro), weight.split(micro)):
                sums[0] += (model(xb.to(device), validate=True).double() * wb.to(device)).sum()
                sums[1] += wb.sum() * (xb.shape[1] - 1)
        model.train()
        dist.all_reduce(sums)
        return float(sums[0] / sums[1])

    if not log:
        log.append({"step": 0, "lr": 0.0, "loss": None, **dict.fromkeys(TERMS), "val_kl": val_kl()})
    steps, t0, saved_at = total_steps(g), time.perf_counter(), time.monotonic()
    stop = _Stop()
    bar = tqdm(range(start, steps), desc="gkd", unit="step", initial=start, total=steps, mininterval=2,
               disable=not group.main)
    try:
        for step in bar:
            set_lr(optimizer, cosine_lr(step, steps, g["lr"], g["warmup_steps"], g["min_lr_ratio"]))
            x = sample_windows(train_tokens, g["batch_size"], g["seq_len"] + 1, seed, step)[group.rank :: group.world]
            means = torch.zeros(3, device=device)
            parts = x.split(micro)
            # Gradients are reduce-scattered after every micro-batch and summed in the shards: holding
            # them unsharded until the last one (set_requires_gradient_sync) would cost a full model copy.
            for xb in parts:
                m = model(xb.to(device)) / len(parts)
                m.sum().backward()
                means += m.detach()
            torch.nn.utils.clip_grad_norm_(model.parameters(), g["grad_clip"])
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            dist.all_reduce(means)
            means = (means / group.world).tolist()
            row = {"step": step + 1, "lr": optimizer.param_groups[0]["lr"], "loss": sum(means)}
            row.update({t: means[k] if g["loss"][t] else None for k, t in enumerate(TERMS)})
            row["val_kl"] = val_kl() if (step + 1) % g["eval_every"] == 0 or step + 1 == steps else None
            if row["val_kl"] is not None:
                bar.set_postfix(val_kl=f"{row['val_kl']:.4f}")
            log.append(row)
            if step + 1 < steps and _save_now(g, stop, saved_at, step + 1, device):
                sharding.save(ckpt, model, optimizer, group, step + 1, {"fingerprint": fp, "log": log})
                saved_at = time.monotonic()
                if stop.asked:
                    raise SystemExit(
                        f"GKD stopped by a signal after step {step + 1}; checkpoint saved, rerun to resume")
    finally:
        stop.restore()
    seconds = time.perf_counter() - t0

    evals = [r for r in log if r["val_kl"] is not None]
    report = {
        "child": str(child_dir),
        "parent": str(parent_dir),
        "loss": g["loss"],
        "steps": steps,
        "tokens": steps * g["batch_size"] * g["seq_len"],
        "processes": group.world,
        "device": str(device),
        "resumed_from_step": start,
        "train_seconds_this_run": round(seconds, 1),
        "val_kl_before": evals[0]["val_kl"],
        "val_kl_after": evals[-1]["val_kl"],
        "val_windows": g["eval_windows"],
    }
    weights = _gathered(model.student, checkpoint_dtype(child_dir), group)
    if group.main:
        final = checkpoint.empty(child_dir, checkpoint_dtype(child_dir))  # the gathered tensors are its weights
        final.load_state_dict(weights, assign=True)
        final.tie_weights()
        write_output(final, Path(child_dir), out, log, report)
        shutil.rmtree(ckpt, ignore_errors=True)
    dist.barrier()
    return report


def _save_now(g: dict[str, Any], stop: _Stop, saved_at: float, done: int, device: torch.device) -> bool:
    """Checkpoint after `done` steps? By step count, by elapsed time, or because a signal came; the
    time and signal are one rank's, so the ranks agree on the maximum."""
    minutes = g["checkpoint_minutes"]
    late = minutes is not None and time.monotonic() - saved_at >= 60 * minutes
    flags = torch.tensor([stop.asked, late], dtype=torch.int32, device=device)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    stop.asked = bool(flags[0])
    return bool(flags.any()) or done % g["checkpoint_every"] == 0


def _resume(ckpt: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, group: sharding.Group,
            fp: str) -> tuple[int, list[dict[str, Any]]]:
    """(step, log) of the checkpoint in `ckpt`, loaded into model and optimizer; (0, []) when there is
    none or it was made for another config or other inputs (then it is deleted, saying so)."""
    state = sharding.record(ckpt)
    dist.barrier()  # every rank has read the record before rank 0 may delete it
    if state is not None and state.get("fingerprint") != fp:
        if group.main:
            print(f"discarding the GKD checkpoint {ckpt} (step {state['step']}): it was made for another"
                  " gkd config, seed, parent, child or data")
            shutil.rmtree(ckpt)
        dist.barrier()
        return 0, []
    if state is None:
        return 0, []
    step = sharding.load(ckpt, model, optimizer)
    if group.main:
        print(f"resuming GKD from step {step}")
    return step, state["log"]


def _split_windows(windows: torch.Tensor, group: sharding.Group) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's share of the validation windows and their weights (1; 0 for padding): every rank
    gets as many, since each forward pass is collective."""
    per = -(-len(windows) // group.world)
    idx = torch.arange(group.rank * per, (group.rank + 1) * per)
    return windows[idx.clamp(max=len(windows) - 1)], (idx < len(windows)).double()


def _gathered(model: torch.nn.Module, dtype: torch.dtype, group: sharding.Group) -> dict[str, torch.Tensor]:
    """The whole state dict in `dtype` on rank 0's CPU, one tensor gathered at a time (others: {})."""
    out = {}
    for name, t in model.state_dict().items():
        full = t.full_tensor() if isinstance(t, DTensor) else t
        if group.main:
            out[name] = full.detach().to("cpu", dtype if full.is_floating_point() else full.dtype)
    return out


# ---- outputs -------------------------------------------------------------------------------------


def write_output(
    model: torch.nn.Module, child_dir: Path, out: Path, log: list[dict[str, Any]], report: dict[str, Any]
) -> None:
    """The distilled child (save_child: atomic) with the input child's tokenizer and assembly record,
    gkd_log.csv, gkd.png and report.json."""
    carried = tokenizer_files(child_dir, ("assembly.json",))
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        write_csv(t / "gkd_log.csv", pd.DataFrame(log))
        plot_log(log, report, t / "gkd.png")
        write_json(t / "report.json", report)
        save_child(model, out, [*carried, t / "gkd_log.csv", t / "gkd.png", t / "report.json"])


def plot_log(log: list[dict[str, Any]], report: dict[str, Any], path: Path) -> None:
    """Left: validation KL(parent || child) vs step. Right: the training loss and its terms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = pd.DataFrame(log)
    fig, (ax_v, ax_t) = plt.subplots(1, 2, figsize=(11, 4))
    val = frame.dropna(subset=["val_kl"])
    ax_v.plot(val["step"], val["val_kl"], "o-", color="C3", label="child (GKD)")
    ax_v.axhline(report["val_kl_before"], color="gray", ls="--", lw=1, label="assembled child, before GKD")
    ax_v.set_xlabel("GKD step")
    ax_v.set_ylabel("KL(parent || child), nats / token")
    ax_v.set_title(f"Validation KL on {report['val_windows']} held-out windows")
    ax_v.set_ylim(bottom=0)
    ax_v.legend()
    train = frame[frame["step"] > 0]
    ax_t.plot(train["step"], train["loss"], color="k", lw=1.2, label="total")
    for k, term in enumerate(TERMS):
        if train[term].notna().any():
            ax_t.plot(train["step"], train[term], color=f"C{k}", lw=0.8, alpha=0.8, label=term)
    on = " + ".join(t for t in TERMS if report["loss"][t])
    ax_t.set_xlabel("GKD step")
    ax_t.set_ylabel("training loss")
    ax_t.set_title(f"GKD loss = {on}; {report['tokens']:,} tokens")
    ax_t.set_yscale("log")
    ax_t.legend()
    for ax in (ax_v, ax_t):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config_mod.add_arguments(parser)
    parser.add_argument("--parent", required=True, help="parent HF checkpoint folder (the teacher)")
    parser.add_argument("--child", required=True, help="assembled child checkpoint folder (the student)")
    parser.add_argument("--train", required=True, help="train token shard (train.bin)")
    parser.add_argument("--valid", required=True, help="valid token shard (valid.bin) for the validation KL")
    parser.add_argument("--out", required=True, help="output folder of the distilled child")


def main(args: argparse.Namespace) -> None:
    cfg = config_mod.from_args(args)
    r = train(cfg, args.parent, args.child, args.train, args.valid, args.out)
    print(
        f"{args.out}: GKD {r['steps']} steps, {r['tokens']:,} tokens; validation KL "
        f"{r['val_kl_before']:.4f} -> {r['val_kl_after']:.4f}"
    )
