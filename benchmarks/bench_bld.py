"""Block-library cost: activation dump time and BLD time per variant, and the whole library's time.

    python benchmarks/bench_bld.py                      # the embedded default (config/config.yaml)
    python benchmarks/bench_bld.py --config my.yaml --layers 1

A random-init parent of the config's shape (weights do not change the cost) is saved to a temporary
folder with a random token shard; the activations stage runs on it as configured, then BLD trains
every library entry of the first `--layers` layers with the configured token budget. The whole
library's time is the dump plus the measured per-layer BLD time times the number of layers
(layers cost the same: same shapes, same budget), run one layer after another as on one machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from puzzle import activations, bld, config
from puzzle.bld_plan import seq_len
from puzzle.parent import llama_config


class _Vocab:
    """What llama_config needs of a tokenizer: a length and the special ids."""

    def __init__(self, size: int) -> None:
        self.size, self.bos_token_id, self.eos_token_id, self.pad_token_id = size, 0, 1, 2

    def __len__(self) -> int:
        return self.size


def random_parent(cfg: dict, out: Path) -> Path:
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    vocab = _Vocab(cfg["data"]["tokenizer"]["vocab_size"])
    LlamaForCausalLM(llama_config(cfg["parent"]["train"], vocab)).save_pretrained(out)
    return out


def random_shards(vocab: int, tokens: int, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split in ("train", "valid"):
        rng.integers(0, vocab, size=tokens).astype(np.uint16).tofile(out / f"{split}.bin")
    (out / "meta.json").write_text(json.dumps({"dtype": "uint16"}))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/config.yaml", help="experiment config (embedded parent shape)")
    parser.add_argument("--layers", type=int, default=1, help="layers to measure (the rest are extrapolated)")
    parser.add_argument("--threads", type=int, help="override the config's torch threads")
    args = parser.parse_args()
    cfg = config.load(args.config, {"threads": args.threads} if args.threads else None)
    act, n_layers = cfg["activations"], cfg["parent"]["train"]["num_layers"]
    seq = seq_len(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        parent = random_parent(cfg, root / "parent")
        shards = random_shards(cfg["data"]["tokenizer"]["vocab_size"], (act["train_windows"] + 1) * seq, root / "data")
        dump = {}
        for split in ("train", "valid"):
            t0 = time.perf_counter()
            meta = activations.run(cfg, str(parent), str(shards / f"{split}.bin"), split, str(root / split))
            dump[split] = (time.perf_counter() - t0, meta)
        per_layer = []
        for layer in range(min(args.layers, n_layers)):
            t0 = time.perf_counter()
            metrics = bld.run(
                cfg, str(parent), str(root / "valid"), [layer], str(root / "lib"), train=str(root / "train")
            )
            per_layer.append(time.perf_counter() - t0)
    print(
        f"config {args.config}: {n_layers} layers, hidden {cfg['parent']['train']['hidden_size']}, "
        f"seq {seq}, bld.mode {cfg['bld']['mode']}, {cfg['bld']['tokens']:,} tokens per trained entry, "
        f"threads {cfg['threads']}, device {metrics[0]['device']}"
    )
    for split, (sec, meta) in dump.items():
        print(
            f"activations {split:<5} {meta['windows']:>5} windows  {sec:6.1f} s  "
            f"{meta['bytes_per_token_per_layer']} B/token/layer  {meta['total_bytes'] / 2**20:7.1f} MiB"
        )
    print(
        f"{'entry':<24}{'steps':>6}{'trainable':>11}{'seconds':>9}{'s/step':>8}"
        "  (seconds: its group's, trained together)"
    )
    for m in metrics:
        per_step = m["wall_s"] / m["steps"] if m["steps"] else float("nan")
        print(f"{m['variant']:<24}{m['steps']:>6}{m['trainable_params']:>11,}{m['wall_s']:>9.2f}{per_step:>8.3f}")
    trained = [m["wall_s"] for m in metrics if m["steps"]]
    layer_s = statistics.mean(per_layer)
    total = sum(sec for sec, _ in dump.values()) + layer_s * n_layers
    print(f"trained entries per layer: {len(trained)}, mean {statistics.mean(trained):.2f} s per trained entry")
    print(
        f"BLD per layer (job wall time): {layer_s:.1f} s; whole library for {n_layers} layers "
        f"(dump + BLD, one job at a time): {total:.1f} s = {total / 60:.2f} min"
    )


if __name__ == "__main__":
    main()
