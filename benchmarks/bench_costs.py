"""Do per-block costs add up? Predicted (non_block + sum of the layers' attention and FFN costs, from
`costs.measured_rows`) vs measured end-to-end prefill and decode time of the parent and of two
heterogeneous children built directly from Nemotron-NAS block_configs with random weights.

    python benchmarks/bench_costs.py                       # the embedded default's shape and scenarios
    python benchmarks/bench_costs.py --threads 1 --repeats 15 --n-copies 4
    python benchmarks/bench_costs.py --separate            # whole models timed before and after, not alongside

By default the whole models are timed in the same rounds as the per-block stacks (timing.time_models
visits every model once per round), so a slow spell of a shared machine hits prediction and
measurement alike; --separate shows how much the machine drifts between two phases.
"""

from __future__ import annotations

import argparse
import time

import torch

from puzzle import blocks, costs, timing
from puzzle import cost_model as cm
from puzzle.training import pick_device

SPACE = {
    "attention": {"kv_heads": [1], "linear": True, "no_op": True},
    "ffn": {"ratios": [0.87, 0.75, 0.5, 0.25, 0.2, 0.1], "multiple_of": 8, "linear": True, "no_op": True},
}
CHILDREN = {
    "child_a": [("attn_kv1", "ffn_50"), ("attn_kv2", "ffn_noop"), ("attn_linear", "ffn_100"), ("attn_noop", "ffn_25")],
    "child_b": [("attn_noop", "ffn_linear"), ("attn_kv1", "ffn_87"), ("attn_kv2", "ffn_20"), ("attn_kv1", "ffn_10")],
}
SCENARIOS = [
    {"name": "s32_32", "input_len": 32, "output_len": 32, "batch_sizes": [1, 8]},
    {"name": "s32_128", "input_len": 32, "output_len": 128, "batch_sizes": [1, 8]},
    {"name": "s128_32", "input_len": 128, "output_len": 32, "batch_sizes": [1, 8]},
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--n-copies", type=int, default=4)
    ap.add_argument("--statistic", default="median", choices=["median", "min"])
    ap.add_argument("--clock", default="wall", choices=["wall", "cpu"])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--separate", action="store_true",
                    help="time the whole models before and after the per-block costs, not in the same rounds")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    dtype = "bfloat16" if device.type == "cuda" else "float32"
    parent_cfg = {
        "model_type": "llama", "vocab_size": 4096, "hidden_size": 128, "intermediate_size": 344,
        "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5,
        "tie_word_embeddings": True, "max_position_embeddings": 2048,
    }
    arch = cm.Arch.from_config(parent_cfg)
    pa, pf = blocks.parent_variants(arch.shape)
    archs = {"parent": [(pa, pf)] * 4, **CHILDREN}
    models = []
    from puzzle.convert import decilm_config_from_llama

    for layers in archs.values():
        cfg = decilm_config_from_llama(parent_cfg, [blocks.block_config(a, f, arch.shape, 8) for a, f in layers])
        cfg._attn_implementation = "sdpa"
        models.append(costs.build_model(cfg, device, getattr(torch, dtype)))
    timer = timing.Timer(device, args.warmup, args.repeats, args.statistic, args.clock)

    def end_to_end() -> dict:
        out = {}
        for s in SCENARIOS:
            for b in s["batch_sizes"]:
                pre, dec = timing.time_models(models, b, s["input_len"], s["output_len"], timer)
                out[(s["name"], b)] = list(
                    zip(timing.summarize(pre, args.statistic), timing.summarize(dec, args.statistic))
                )
        return out

    # --separate: the whole models timed before and after the per-block costs (the machine's drift
    # shows, the mean of both is compared); by default they are timed in the same rounds as the stacks
    before = end_to_end() if args.separate else None
    t0 = time.perf_counter()
    rows, extra = costs.measured_rows(
        parent_cfg,
        arch,
        SPACE,
        SCENARIOS,
        {
            "n_copies": args.n_copies,
            "warmup": args.warmup,
            "repeats": args.repeats,
            "statistic": args.statistic,
            "clock": args.clock,
            "on_noise": "mark",
        },
        device,
        dtype,
        8,
        log=lambda m: None,
        also=[] if args.separate else models,
    )
    t_costs = time.perf_counter() - t0
    after = end_to_end() if args.separate else None
    table = {(r["scenario"], r["batch"], r["variant"]): (r["prefill_ms"], r["decode_ms"]) for r in rows}

    print(
        f"{device}, {dtype}, {torch.get_num_threads()} threads, repeats {args.repeats}, warm-up {args.warmup}, "
        f"N = {args.n_copies}, {args.statistic} of {args.clock} clock; per-block costs measured in {t_costs:.0f} s "
        f"(stacks timed together: {extra['timed_together']})"
    )
    if args.separate:
        print(
            "measured = mean of the whole-model times before and after the per-block measurement"
            " (drift: after/before - 1)"
        )
    else:
        print("measured = the whole models timed in the same rounds as the stacks (drift column: n/a)")
    print(
        f"{'model':8} {'scenario':8} {'b':>2} | {'prefill pred':>12} {'meas':>8} {'err':>7} {'drift':>6} | "
        f"{'decode pred':>11} {'meas':>8} {'err':>7} {'drift':>6}"
    )
    errs, signed = [], {name: [] for name in archs}
    for s in SCENARIOS:
        for b in s["batch_sizes"]:
            for m, (name, layers) in enumerate(archs.items()):
                if args.separate:
                    t_b, t_a = before[(s["name"], b)][m], after[(s["name"], b)][m]
                    meas = [1e3 * (t_b[k] + t_a[k]) / 2 for k in (0, 1)]
                    drift = [f"{100 * (t_a[k] / t_b[k] - 1):+5.0f}%" for k in (0, 1)]
                else:
                    meas = [1e3 * x for x in extra["also"][(s["name"], b)][m]]
                    drift = ["   n/a"] * 2
                pred = [table[(s["name"], b, costs.NON_BLOCK)][k] for k in (0, 1)]
                for a, f in layers:
                    for k in (0, 1):
                        pred[k] += table[(s["name"], b, a)][k] + table[(s["name"], b, f)][k]
                err = [pred[k] / meas[k] - 1 for k in (0, 1)]
                errs += [abs(e) for e in err]
                signed[name] += err
                print(
                    f"{name:8} {s['name']:8} {b:>2} | {pred[0]:9.3f} ms {meas[0]:8.3f} {100 * err[0]:+6.1f}% "
                    f"{drift[0]} | {pred[1]:8.3f} ms {meas[1]:8.3f} {100 * err[1]:+6.1f}% {drift[1]}"
                )
    print(
        "mean signed error per model: "
        + ", ".join(f"{name} {100 * sum(v) / len(v):+.1f}%" for name, v in signed.items())
    )
    within = sum(e <= 0.10 for e in errs)
    print(
        f"within 10%: {within}/{len(errs)}; median |error| {100 * sorted(errs)[len(errs) // 2]:.1f}%, "
        f"max {100 * max(errs):.1f}%"
    )


if __name__ == "__main__":
    main()
