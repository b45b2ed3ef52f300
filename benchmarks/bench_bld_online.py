"""BLD tokens/s with the online teacher (the parent run inside the job) against the stored one.

    python benchmarks/bench_bld_online.py                       # the embedded default's shape, CPU
    python benchmarks/bench_bld_online.py --config my.yaml --layer 3 --rounds 3

A random-init parent of the config's shape is saved with a random token shard; the activations
stage dumps the train and valid windows once (the stored path's extra job), then BLD of one
layer runs with `bld.teacher` stored and online in alternating rounds, so a shared machine slows
both alike. Tokens/s = trained entries x tokens per entry / the training loop's wall time (the
entries of a layer train together on each batch). The online path also runs the parent's layers
0..layer on every batch: the deepest layer is its worst case, hence the default --layer.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_bld import random_parent, random_shards  # noqa: E402

from puzzle import activations, bld, config  # noqa: E402
from puzzle.bld_plan import seq_len  # noqa: E402


def bld_rate(cfg: dict, root: Path, layer: int, teacher: str) -> tuple[float, float, dict]:
    """(trained tokens per second of the training loop, job wall seconds, one trained entry's metrics)."""
    cfg = config.deep_merge(cfg, {"bld": {"teacher": teacher}})
    source = {"train": str(root / "train")} if teacher == "stored" else {"shard": str(root / "data" / "train.bin")}
    t0 = time.perf_counter()
    metrics = bld.run(cfg, str(root / "parent"), str(root / "valid"), [layer], str(root / f"lib_{teacher}"), **source)
    job = time.perf_counter() - t0
    trained = [m for m in metrics if m["steps"]]
    return sum(m["tokens"] for m in trained) / trained[0]["wall_s"], job, trained[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/config.yaml", help="experiment config (embedded parent shape)")
    parser.add_argument("--layer", type=int, help="the layer to distill (default: the last)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating stored/online runs of each")
    parser.add_argument("--device", help="override the config's device (e.g. cuda)")
    parser.add_argument("--tokens", type=int, help="override bld.tokens")
    args = parser.parse_args()
    over = {k: v for k, v in (("device", args.device), ("bld", {"tokens": args.tokens} if args.tokens else None)) if v}
    cfg = config.load(args.config, over)
    n_layers, seq = cfg["parent"]["train"]["num_layers"], seq_len(cfg)
    layer = n_layers - 1 if args.layer is None else args.layer
    # stored windows = the online pool (steps x batch): both train on the same windows
    windows = bld.steps_of(cfg["bld"], seq) * cfg["bld"]["batch_size"]
    cfg = config.deep_merge(cfg, {"activations": {"train_windows": windows}})
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        random_parent(cfg, root / "parent")
        random_shards(cfg["data"]["tokenizer"]["vocab_size"], (windows + 1) * seq, root / "data")
        t0 = time.perf_counter()
        for split in ("train", "valid"):
            activations.run(cfg, str(root / "parent"), str(root / "data" / f"{split}.bin"), split, str(root / split))
        dump_s = time.perf_counter() - t0
        rates: dict[str, list[float]] = {"stored": [], "online": []}
        jobs: dict[str, list[float]] = {"stored": [], "online": []}
        for _ in range(args.rounds):
            for teacher in ("stored", "online"):
                rate, job, entry = bld_rate(cfg, root, layer, teacher)
                rates[teacher].append(rate)
                jobs[teacher].append(job)
    print(f"config {args.config}: layer {layer} of {n_layers}, hidden {cfg['parent']['train']['hidden_size']}, "
          f"seq {seq}, bld.mode {cfg['bld']['mode']}, {cfg['bld']['tokens']:,} tokens per trained entry "
          f"({entry['steps']} steps), device {entry['device']}, dtype {entry['dtype']}, threads {cfg['threads']}")
    for teacher in ("stored", "online"):
        print(f"{teacher:<7} BLD {statistics.median(rates[teacher]):>12,.0f} tokens/s (training loop, median of "
              f"{args.rounds}); job {statistics.median(jobs[teacher]):.1f} s")
    ratio = statistics.median(rates["online"]) / statistics.median(rates["stored"])
    print(f"online / stored tokens/s: {ratio:.2f} (the stored path also needed the activation dump: {dump_s:.1f} s "
          f"for {windows} train + {cfg['activations']['valid_windows']} valid windows, all layers)")


if __name__ == "__main__":
    main()
