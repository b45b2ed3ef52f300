"""GKD stage: global knowledge distillation of an assembled child from its parent (paper §4.3).

    python -m puzzle gkd --cfg JSON --parent PARENT --child CHILD --train train.bin --valid valid.bin --out OUT
    accelerate launch -m puzzle gkd ...        (several GPUs of one node: one process per GPU)

Loss per batch, each term switchable (config `gkd.loss`, for the paper's Table 17 ablation):

    cosine  sum over layers l of mean over tokens of (1 - cos(h_child^l, h_parent^l)),
            h^l = the output of decoder layer l (before the final norm)
    kl      mean over tokens of KL(parent || child) on the next-token distributions
    lm      mean next-token cross-entropy of the child (off by default: the paper finds it hurts)

The budget is steps x batch_size x seq_len tokens; linear warmup then cosine decay. Batches are a
function of (seed, step) and checkpoints (a hidden folder beside OUT) hold weights + optimizer
state, so a killed job resumes to exactly the weights of an uninterrupted one. With N processes,
each takes every N-th window of the step's batch, so the global batch is the same for any N.
Validation KL on fixed windows of the valid shard is logged every eval_every steps (and before
the first step). OUT is the child in the same Nemotron-NAS format plus gkd_log.csv, gkd.png and
report.json.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm import tqdm

from puzzle import config as config_mod
from puzzle import metrics
from puzzle.convert import save_child, tokenizer_files
from puzzle.data import read_shard
from puzzle.io import atomic_path, read_json, write_csv, write_json
from puzzle.training import (
    adamw,
    cosine_lr,
    fixed_windows,
    load_checkpoint,
    pick_device,
    sample_windows,
    save_checkpoint,
    set_lr,
)

TERMS = ("cosine", "kl", "lm")


# ---- the loss ------------------------------------------------------------------------------------


def gkd_loss(
    child_logits: torch.Tensor,
    child_hidden: list[torch.Tensor],
    parent_logits: torch.Tensor | None,
    parent_hidden: list[torch.Tensor] | None,
    targets: torch.Tensor,
    terms: dict[str, bool],
) -> tuple[torch.Tensor, dict[str, float]]:
    """(the sum of the switched-on terms, the value of each of them)."""
    parts: dict[str, torch.Tensor] = {}
    if terms["cosine"]:
        if len(child_hidden) != len(parent_hidden):
            raise ValueError(f"child has {len(child_hidden)} layer outputs, parent {len(parent_hidden)}")
        parts["cosine"] = sum(metrics.cosine_distance(c, p).mean() for c, p in zip(child_hidden, parent_hidden))
    if terms["kl"]:
        parts["kl"] = metrics.forward_kl(parent_logits, child_logits).mean()
    if terms["lm"]:
        parts["lm"] = metrics.next_token_nll(child_logits, targets).mean()
    if not parts:
        raise ValueError("no GKD loss term is switched on")
    return sum(parts.values()), {k: float(v.detach()) for k, v in parts.items()}


def forward(model: torch.nn.Module, ids: torch.Tensor, hidden: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(logits, each decoder layer's output when `hidden`, else [])."""
    if not hidden:
        return model(input_ids=ids).logits, []
    # Hooks go on the bare model; calling the (possibly DDP-wrapped) model keeps gradient sync.
    with metrics.layer_outputs(_bare(model)) as outs:
        logits = model(input_ids=ids).logits
    return logits, list(outs)


def batch_loss(
    model: torch.nn.Module, parent: torch.nn.Module, x: torch.Tensor, terms: dict[str, bool]
) -> tuple[torch.Tensor, dict[str, float]]:
    """GKD loss of `model` on windows `x` (inputs x[:, :-1], next tokens x[:, 1:]); the parent runs
    only when a term needs it."""
    ids, targets = x[:, :-1], x[:, 1:]
    p_logits, p_hidden = None, None
    if terms["cosine"] or terms["kl"]:
        with torch.no_grad():
            p_logits, p_hidden = forward(parent, ids, terms["cosine"])
    c_logits, c_hidden = forward(model, ids, terms["cosine"])
    return gkd_loss(c_logits, c_hidden, p_logits, p_hidden, targets, terms)


def _bare(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)


@torch.no_grad()
def validation_kl(child: torch.nn.Module, parent: torch.nn.Module, windows: torch.Tensor, batch: int) -> tuple[float, int]:
    """(sum of per-token KL(parent || child) over `windows`, token count)."""
    was_training = child.training
    child.eval()
    device = next(child.parameters()).device
    total, count = 0.0, 0
    for i in range(0, len(windows), batch):
        x = windows[i : i + batch, :-1].to(device)
        total += float(metrics.forward_kl(parent(input_ids=x).logits, child(input_ids=x).logits).sum())
        count += x.numel()
    child.train(was_training)
    return total, count


# ---- the training loop ---------------------------------------------------------------------------


def _load(path: str | Path, dtype: torch.dtype, device: torch.device) -> Any:
    from transformers import AutoModelForCausalLM  # nemotron-nas is registered by `import puzzle`

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, use_safetensors=True)
    return model.to(device)


def checkpoint_dtype(path: str | Path) -> torch.dtype:
    """The dtype a checkpoint's config.json records (float32 when it records none)."""
    cfg = read_json(Path(path) / "config.json")
    return getattr(torch, cfg.get("dtype") or cfg.get("torch_dtype") or "float32")


def _check(g: dict[str, Any], processes: int) -> None:
    if not any(g["loss"].values()):
        raise config_mod.ConfigError("config error: gkd.loss: expected at least one of cosine, kl, lm to be true")
    if g["batch_size"] % processes:
        raise config_mod.ConfigError(
            f"config error: gkd.batch_size = {g['batch_size']}: expected a multiple of the {processes} processes"
        )


def train(
    cfg: dict[str, Any], parent_dir: str, child_dir: str, train_shard: str, valid_shard: str, out_dir: str
) -> dict[str, Any]:
    """Distill the child of `child_dir` from the parent; writes OUT and returns its report."""
    from accelerate import Accelerator

    g, seed = cfg["gkd"], cfg["seed"]
    torch.set_num_threads(cfg["threads"])
    device = pick_device(cfg["device"])
    acc = Accelerator(cpu=device.type == "cpu", mixed_precision={"fp32": "no", "bf16": "bf16"}[g["precision"]])
    _check(g, acc.num_processes)
    rank, world, main = acc.process_index, acc.num_processes, acc.is_main_process
    out = Path(out_dir)
    ckpt = out.parent / f".{out.name}.checkpoint"

    parent_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[g["precision"]]
    parent = _load(parent_dir, parent_dtype, acc.device).eval().requires_grad_(False)
    child = _load(child_dir, torch.float32, acc.device)  # float32 master weights; saved back in the input dtype
    save_dtype = checkpoint_dtype(child_dir)
    child.train()
    optimizer = adamw(child, g["lr"], g["weight_decay"])
    start, extra = load_checkpoint(ckpt, child, optimizer)
    log: list[dict[str, Any]] = (extra or {}).get("log", [])
    if start and main:
        print(f"resuming GKD from step {start}")
    model, optimizer = acc.prepare(child, optimizer)

    train_tokens = read_shard(train_shard)
    valid = fixed_windows(read_shard(valid_shard), g["eval_windows"], g["seq_len"] + 1)[rank::world]
    terms = g["loss"]

    def val_kl() -> float:
        total, count = validation_kl(_bare(model), parent, valid, g["batch_size"])
        sums = acc.reduce(torch.tensor([total, count], dtype=torch.float64, device=acc.device), "sum")
        return float(sums[0] / sums[1])

    if not log:
        log.append({"step": 0, "lr": 0.0, "loss": None, **dict.fromkeys(TERMS), "val_kl": val_kl()})
    steps, t0 = g["steps"], time.perf_counter()
    bar = tqdm(range(start, steps), desc="gkd", unit="step", initial=start, total=steps, mininterval=2, disable=not main)
    for step in bar:
        set_lr(optimizer, cosine_lr(step, steps, g["lr"], g["warmup_steps"], g["min_lr_ratio"]))
        x = sample_windows(train_tokens, g["batch_size"], g["seq_len"] + 1, seed, step)[rank::world].to(acc.device)
        with acc.autocast():
            loss, parts = batch_loss(model, parent, x, terms)
        acc.backward(loss)
        acc.clip_grad_norm_(model.parameters(), g["grad_clip"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        mean = acc.reduce(torch.tensor([float(loss.detach()), *(parts.get(t, 0.0) for t in TERMS)], device=acc.device), "mean")
        row = {"step": step + 1, "lr": optimizer.param_groups[0]["lr"], "loss": float(mean[0])}
        row.update({t: float(mean[1 + k]) if t in parts else None for k, t in enumerate(TERMS)})
        row["val_kl"] = val_kl() if (step + 1) % g["eval_every"] == 0 or step + 1 == steps else None
        if row["val_kl"] is not None:
            bar.set_postfix(val_kl=f"{row['val_kl']:.4f}")
        log.append(row)
        if (step + 1) % g["checkpoint_every"] == 0 and step + 1 < steps:
            acc.wait_for_everyone()
            if main:
                save_checkpoint(ckpt, acc.unwrap_model(model), optimizer, step + 1, {"log": log})
    seconds = time.perf_counter() - t0

    evals = [r for r in log if r["val_kl"] is not None]
    report = {
        "child": str(child_dir),
        "parent": str(parent_dir),
        "loss": terms,
        "steps": steps,
        "tokens": steps * g["batch_size"] * g["seq_len"],
        "processes": world,
        "device": str(acc.device),
        "resumed_from_step": start,
        "train_seconds_this_run": round(seconds, 1),
        "val_kl_before": evals[0]["val_kl"],
        "val_kl_after": evals[-1]["val_kl"],
        "val_windows": g["eval_windows"],
    }
    acc.wait_for_everyone()
    if main:
        write_output(acc.unwrap_model(model).to(save_dtype), Path(child_dir), out, log, report)
        shutil.rmtree(ckpt, ignore_errors=True)
    acc.end_training()
    return report


# ---- outputs -------------------------------------------------------------------------------------


def write_output(model: Any, child_dir: Path, out: Path, log: list[dict[str, Any]], report: dict[str, Any]) -> None:
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
