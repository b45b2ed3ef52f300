"""Parent stage (embedded default only): train a small Llama on the train shard, on CPU.

The budget is a number of optimizer steps, never wall-clock time (these machines' speed varies
2-5x). Writes a standard HF checkpoint with its tokenizer, a loss log, a loss-curve figure and a
report comparing held-out loss with unigram and bigram baselines: a parent that does not beat
the bigram model barely uses context, its blocks score alike, and the search has nothing to find.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from puzzle import config as config_mod
from puzzle.data import load_tokenizer, read_shard
from puzzle.io import atomic_dir, atomic_path, write_json, write_text
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

if TYPE_CHECKING:  # transformers is imported where a parent is built
    from transformers import LlamaConfig, PreTrainedTokenizerBase


def llama_config(train_cfg: dict[str, Any], tokenizer: PreTrainedTokenizerBase) -> LlamaConfig:
    """The embedded parent's Llama config: `train_cfg`'s shape, the tokenizer's vocabulary and special ids."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=train_cfg["hidden_size"],
        intermediate_size=train_cfg["intermediate_size"],
        num_hidden_layers=train_cfg["num_layers"],
        num_attention_heads=train_cfg["num_heads"],
        num_key_value_heads=train_cfg["num_kv_heads"],
        max_position_embeddings=config_mod.embedded_max_positions(train_cfg),
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        initializer_range=0.02,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


@torch.no_grad()
def heldout_loss(model: torch.nn.Module, windows: torch.Tensor, batch: int = 16) -> float:
    """Mean next-token cross-entropy (nats) over `windows` (each predicts its tokens 1..T)."""
    model.eval()
    total, count = 0.0, 0
    device = next(model.parameters()).device
    for i in range(0, len(windows), batch):
        x = windows[i : i + batch].to(device)
        logits = model(input_ids=x[:, :-1]).logits
        total += F.cross_entropy(logits.flatten(0, 1).float(), x[:, 1:].flatten(), reduction="sum").item()
        count += x[:, 1:].numel()
    model.train()
    return total / count


def ngram_baselines(train: np.ndarray, windows: torch.Tensor, vocab: int) -> dict[str, float]:
    """Held-out loss (nats) of an add-1 unigram and a Dirichlet-smoothed bigram fit on `train`.

    The bigram's smoothing strength is picked on the same held-out windows: slightly optimistic,
    which makes "the parent beats the bigram" a conservative claim.
    """
    train = np.asarray(train, dtype=np.int64)
    uni = np.bincount(train, minlength=vocab).astype(np.float64) + 1.0
    p_uni = uni / uni.sum()
    prev, nxt = windows[:, :-1].reshape(-1).numpy(), windows[:, 1:].reshape(-1).numpy()
    unigram = float(-np.log(p_uni[nxt]).mean())
    pair_ids, pair_counts = np.unique(train[:-1] * vocab + train[1:], return_counts=True)
    row_totals = np.bincount(train[:-1], minlength=vocab).astype(np.float64)
    # counts of the held-out pairs, looked up in the sorted list of seen pairs
    query = prev * vocab + nxt
    pos = np.clip(np.searchsorted(pair_ids, query), 0, len(pair_ids) - 1)
    seen = np.where(pair_ids[pos] == query, pair_counts[pos], 0).astype(np.float64)
    best = math.inf
    for k in (1, 3, 10, 30, 100, 300, 1000):
        p = (seen + k * p_uni[nxt]) / (row_totals[prev] + k)
        best = min(best, float(-np.log(p).mean()))
    return {"unigram": unigram, "bigram": best}


def plot_losses(log: list[dict[str, float]], baselines: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    steps = [r["step"] for r in log]
    ax.plot(steps, [r["train_loss"] for r in log], lw=0.8, alpha=0.6, label="train (batch)")
    ev = [r for r in log if r.get("valid_loss") is not None]
    ax.plot([r["step"] for r in ev], [r["valid_loss"] for r in ev], "o-", label="held-out (valid)")
    for name, style in (("unigram", ":"), ("bigram", "--")):
        ax.axhline(baselines[name], color="gray", ls=style, label=f"{name} baseline ({baselines[name]:.2f})")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats / token)")
    ax.set_title("Embedded default parent: training loss")
    ax.set_ylim(top=min(9.0, max(r["train_loss"] for r in log) + 0.2))
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def train(cfg: dict[str, Any], data_dir: str, out_dir: str) -> dict[str, Any]:
    """Train the embedded default parent; returns its report (also written to out_dir/report.json)."""
    from transformers import LlamaForCausalLM

    t_cfg, seed = cfg["parent"]["train"], cfg["seed"]
    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(seed)
    device = pick_device(cfg["device"])
    data, out = Path(data_dir), Path(out_dir)
    corpus = data / cfg["data"]["corpus"] if cfg["data"]["source"] == "embedded" else data / "files"
    tokenizer = load_tokenizer(data / "tokenizer")
    train_tokens, valid_tokens = read_shard(corpus / "train.bin"), read_shard(corpus / "valid.bin")
    seq = t_cfg["seq_len"]
    valid = fixed_windows(valid_tokens, t_cfg["eval_windows"], seq + 1)

    model = LlamaForCausalLM(llama_config(t_cfg, tokenizer)).to(device)
    optimizer = adamw(model, t_cfg["lr"], t_cfg["weight_decay"])
    ckpt = out.parent / f".{out.name}.checkpoint"
    start, log = load_checkpoint(ckpt, model, optimizer)
    log = log or []
    if start:
        print(f"resuming parent training from step {start}")
    steps, t0 = t_cfg["steps"], time.perf_counter()
    model.train()
    bar = tqdm(range(start, steps), desc="parent", unit="step", initial=start, total=steps, mininterval=2)
    for step in bar:
        set_lr(optimizer, cosine_lr(step, steps, t_cfg["lr"], t_cfg["warmup_steps"], t_cfg["min_lr_ratio"]))
        x = sample_windows(train_tokens, t_cfg["batch_size"], seq + 1, seed, step).to(device)
        logits = model(input_ids=x[:, :-1]).logits
        loss = F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        row = {"step": step + 1, "lr": optimizer.param_groups[0]["lr"], "train_loss": loss.item(), "valid_loss": None}
        if (step + 1) % t_cfg["eval_every"] == 0 or step + 1 == steps:
            row["valid_loss"] = heldout_loss(model, valid)
            bar.set_postfix(valid=f"{row['valid_loss']:.3f}")
        log.append(row)
        if (step + 1) % t_cfg["checkpoint_every"] == 0 and step + 1 < steps:
            save_checkpoint(ckpt, model, optimizer, step + 1, log)
    train_seconds = time.perf_counter() - t0

    test = fixed_windows(read_shard(corpus / "test.bin"), t_cfg["eval_windows"], seq + 1)
    baselines = {s: ngram_baselines(train_tokens, w, len(tokenizer)) for s, w in (("valid", valid), ("test", test))}
    report = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps": steps,
        "tokens_seen": steps * t_cfg["batch_size"] * seq,
        "train_seconds_this_run": round(train_seconds, 1),
        "resumed_from_step": start,
        "heldout_loss": {"valid": heldout_loss(model, valid), "test": heldout_loss(model, test)},
        "baselines": baselines,
    }
    report["beats_bigram"] = all(report["heldout_loss"][s] < baselines[s]["bigram"] for s in ("valid", "test"))

    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "report.json", report)
        write_text(tmp / "train_log.csv", _csv(log))
        plot_losses(log, baselines["valid"], tmp / "loss.png")
    if ckpt.exists():
        import shutil

        shutil.rmtree(ckpt)
    return report


def _csv(rows: list[dict[str, Any]]) -> str:
    keys = list(rows[0])
    lines = [",".join(keys)] + [",".join("" if r[k] is None else f"{r[k]:.6g}" for k in keys) for r in rows]
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config_mod.add_arguments(parser)
    parser.add_argument("--data", required=True, help="data folder of the data stage")
    parser.add_argument("--out", required=True, help="output checkpoint folder")


def main(args: argparse.Namespace) -> None:
    cfg = config_mod.from_args(args)
    if cfg["parent"]["path"]:
        raise config_mod.ConfigError(
            f"config error: parent.path = {cfg['parent']['path']!r}: this stage trains only the embedded "
            "default parent (parent.path = null)"
        )
    r = train(cfg, args.data, args.out)
    v, b = r["heldout_loss"]["valid"], r["baselines"]["valid"]
    print(
        f"parent: {r['parameters']:,} params, {r['steps']} steps; held-out loss {v:.3f} nats "
        f"(unigram {b['unigram']:.3f}, bigram {b['bigram']:.3f}); beats bigram: {r['beats_bigram']}"
    )
