"""Scoring cost: wall time of replace-1-block scoring / (candidates x one full parent forward).

A full parent forward is `model(input_ids).logits` of the HF parent on the same windows in the same
batch size (median of a few runs). Scoring is `scoring.score_layers` over every layer and every
(attention, FFN) composition, including its own parent passes. Below 1 means the suffix-only,
shared-attention evaluation beats a forward per candidate; the aim is below 0.5. The FLOP ratio
(matmul and attention FLOPs, counted on one window) is the same quotient free of timing noise; it
leaves out elementwise work such as the head's log_softmax, which the full forward does not do.

    python benchmarks/bench_scoring.py                        # the embedded default's shape
    python benchmarks/bench_scoring.py --layers 2 --hidden 64 --windows 8 --passes 1 4
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import fixtures as fx  # noqa: E402
from puzzle import blocks, scoring  # noqa: E402
from puzzle.training import pick_device  # noqa: E402

DEFAULT_SPACE = {
    "attention": {"kv_heads": [1], "linear": True, "no_op": True},
    "ffn": {"ratios": [0.87, 0.75, 0.5, 0.25, 0.2, 0.1], "multiple_of": 8, "linear": True, "no_op": True},
}


def cpu_sdpa_flops(query_shape: torch.Size, key_shape: torch.Size, value_shape: torch.Size, *args, **kwargs) -> int:
    """FLOPs of the CPU flash-attention kernel, unknown to torch's counter (causal masking ignored)."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def count_flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(
        display=False, custom_mapping={torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_sdpa_flops}
    ) as counter:
        fn()
    return counter.get_total_flops()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv", type=int, default=2)
    ap.add_argument("--inter", type=int, default=344)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--windows", type=int, default=16)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--passes", type=int, nargs="+", default=[1], help="candidates_per_pass values to time")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        parent = fx.make_parent(tmp / "parent", args.layers, args.hidden, args.heads, args.kv, args.inter, args.vocab)
        tokens = args.windows * args.seq + args.seq
        fx.write_shards(tmp / "data" / "mixed", splits=("valid",), tokens=tokens, vocab=args.vocab)
        fx.make_library(parent, tmp / "lib", DEFAULT_SPACE)
        model = scoring.load_parent(parent, device, torch.float32)
        windows = scoring.valid_windows(tmp / "data", "mixed", args.windows, args.seq)
        shape = scoring.parent_shape(model)
        attns, ffns = blocks.search_space(shape, DEFAULT_SPACE)
        cands = [scoring.layer_candidates(model, i, attns, ffns, tmp / "lib", 8) for i in range(args.layers)]
        n_cand = args.layers * len(attns) * len(ffns)

        from transformers import AutoModelForCausalLM

        hf = AutoModelForCausalLM.from_pretrained(parent, dtype=torch.float32).to(device).eval()

        def timed(fn) -> tuple[float, float]:
            """(wall, CPU) seconds of fn(): CPU time is steadier on a shared machine."""
            w, c = time.perf_counter(), time.process_time()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - w, time.process_time() - c

        def full_forward() -> None:
            with torch.no_grad():
                for s in range(0, len(windows), args.batch):
                    hf(input_ids=windows[s : s + args.batch].to(device))

        full_forward()
        print(
            f"parent L{args.layers} h{args.hidden} ffn{args.inter} vocab{args.vocab}; {len(windows)} windows x "
            f"{args.seq} tokens, batch {args.batch}, {args.threads} threads, {device}"
        )
        print(f"candidates: {args.layers} layers x {len(attns)} attention x {len(ffns)} ffn = {n_cand}")
        one = windows[:1].to(device)
        with torch.no_grad():
            fwd_flops = count_flops(lambda: hf(input_ids=one).logits)
        score_flops = count_flops(lambda: scoring.score_layers(model, one, cands, 1, log=lambda m: None))
        print(f"FLOP ratio {score_flops / (n_cand * fwd_flops):.3f} (one window: forward {fwd_flops / 1e9:.2f} GFLOP)")
        for cpp in args.passes:
            # The denominator is timed right before and after the scoring run (the machine is shared).
            fwd = [timed(full_forward) for _ in range(3)]
            wall, cpu = timed(
                lambda cpp=cpp: scoring.score_layers(model, windows, cands, args.batch, cpp, log=lambda m: None)
            )
            fwd += [timed(full_forward) for _ in range(3)]
            fw, fc = statistics.median(f[0] for f in fwd), statistics.median(f[1] for f in fwd)
            print(
                f"candidates_per_pass={cpp}: full forward {fw * 1000:.0f} ms wall / {fc * 1000:.0f} ms CPU; "
                f"scoring {wall:.1f} s wall / {cpu:.1f} s CPU; ratio wall {wall / (n_cand * fw):.3f}, "
                f"CPU {cpu / (n_cand * fc):.3f}"
            )


if __name__ == "__main__":
    main()
