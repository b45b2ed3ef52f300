"""Do per-block costs add up? Predicted (non_block + sum of the layers' attention and FFN costs, from
`costs.measured_rows`) vs measured end-to-end prefill and decode time of the parent and of heterogeneous
children built directly from Nemotron-NAS block_configs with random weights, and the speed-up over the
parent each predicts (prefill + output_len x decode) beside the measured one.

    python benchmarks/bench_costs.py                       # the config's parent shape, search space, costs keys
    python benchmarks/bench_costs.py --threads 2 --clock wall --repeats 15
    python benchmarks/bench_costs.py --child attn_kv1+ffn_50,attn_kv1+ffn_50,attn_kv1+ffn_75,attn_kv1+ffn_75
    python benchmarks/bench_costs.py --separate            # whole models timed before and after, not alongside

The shape, search space, scenarios and timing keys (repeats, warm-up, n_copies, statistic, clock, threads)
are the config's (`costs`), so the benchmark times what the costs stage times; children default to
bench_demo_speedup's. By default the whole models are timed in the same rounds as the per-block stacks
(timing.time_models visits every model once per round), so a slow spell of a shared machine hits prediction
and measurement alike; --separate shows how much the machine drifts between two phases.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from bench_demo_speedup import CHILDREN, parent_config

from puzzle import blocks, costs, timing
from puzzle import config as config_mod
from puzzle import cost_model as cm
from puzzle.convert import decilm_config_from_llama
from puzzle.training import pick_device

REPO = Path(__file__).resolve().parents[1]
TIMING_KEYS = ("repeats", "warmup", "n_copies", "statistic", "clock", "threads")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "config/config.yaml"))
    ap.add_argument("--child", action="append", help="comma-separated attention+ffn per layer (repeatable)")
    ap.add_argument("--threads", type=int, help="default: the config's costs.threads (or threads)")
    ap.add_argument("--repeats", type=int)
    ap.add_argument("--warmup", type=int)
    ap.add_argument("--n-copies", type=int)
    ap.add_argument("--statistic", choices=["median", "min"])
    ap.add_argument("--clock", choices=["wall", "cpu"])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--separate", action="store_true",
                    help="time the whole models before and after the per-block costs, not in the same rounds")
    args = ap.parse_args()
    cfg = config_mod.load(args.config)
    given = {k: getattr(args, k) for k in TIMING_KEYS if getattr(args, k) is not None}
    c = {**{k: cfg["costs"][k] for k in TIMING_KEYS}, **given, "on_noise": "mark"}
    torch.set_num_threads(c["threads"] or cfg["threads"])
    device = pick_device(args.device)
    dtype = "bfloat16" if device.type == "cuda" else "float32"
    parent_cfg = parent_config(cfg)
    arch = cm.Arch.from_config(parent_cfg)
    scenarios = cfg["costs"]["scenarios"]
    archs = {"parent": [blocks.parent_variants(arch.shape)] * parent_cfg["num_hidden_layers"]}
    for text in args.child or CHILDREN:
        archs[text] = [tuple(pair.split("+")) for pair in text.split(",")]
    models = []
    for layers in archs.values():
        mc = decilm_config_from_llama(parent_cfg, [blocks.block_config(a, f, arch.shape, 8) for a, f in layers])
        mc._attn_implementation = "sdpa"
        models.append(costs.build_model(mc, device, getattr(torch, dtype)))
    timer = timing.Timer(device, c["warmup"], c["repeats"], c["statistic"], c["clock"])

    def end_to_end() -> dict:
        out = {}
        for s in scenarios:
            for b in s["batch_sizes"]:
                pre, dec = timing.time_models(models, b, s["input_len"], s["output_len"], timer)
                pre, dec = (timing.summarize(t, c["statistic"]) for t in (pre, dec))
                out[(s["name"], b)] = list(zip(pre, dec))
        return out

    # --separate: the whole models timed before and after the per-block costs (the machine's drift
    # shows, the mean of both is compared); by default they are timed in the same rounds as the stacks
    before = end_to_end() if args.separate else None
    t0 = time.perf_counter()
    rows, extra = costs.measured_rows(
        parent_cfg, arch, cfg["search_space"], scenarios, c, device, dtype, 8,
        log=lambda m: None, also=[] if args.separate else models,
    )
    t_costs = time.perf_counter() - t0
    after = end_to_end() if args.separate else None
    table = {(r["scenario"], r["batch"], r["variant"]): (r["prefill_ms"], r["decode_ms"]) for r in rows}

    print(
        f"{device}, {dtype}, {torch.get_num_threads()} threads, repeats {c['repeats']}, warm-up {c['warmup']}, "
        f"N = {c['n_copies']}, {c['statistic']} of {c['clock']} clock; per-block costs measured in {t_costs:.0f} s "
        f"(stacks timed together: {extra['timed_together']})"
    )
    if args.separate:
        print("measured = mean of the whole-model times before and after the per-block measurement"
              " (drift: after/before - 1)")
    else:
        print("measured = the whole models timed in the same rounds as the stacks (drift column: n/a)")
    names = ["parent", *[f"child {i}" for i in range(1, len(archs))]]
    for name, layers in zip(names[1:], list(archs)[1:]):
        print(f"{name}: {layers}")
    print(
        f"{'model':8} {'scenario':10} {'b':>3} | {'prefill pred':>12} {'meas':>9} {'err':>7} {'drift':>6} | "
        f"{'decode pred':>11} {'meas':>8} {'err':>7} {'drift':>6} | speed-up pred / meas"
    )
    errs, signed = [], {name: [] for name in names}
    for s in scenarios:
        for b in s["batch_sizes"]:
            request = {}
            for m, (name, layers) in enumerate(zip(names, archs.values())):
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
                # one request: the prompt's prefill and output_len decode steps
                request[name] = [x[0] + s["output_len"] * x[1] for x in (pred, meas)]
                ratio = [request["parent"][k] / request[name][k] for k in (0, 1)]
                print(
                    f"{name:8} {s['name']:10} {b:>3} | {pred[0]:9.3f} ms {meas[0]:9.3f} {100 * err[0]:+6.1f}% "
                    f"{drift[0]} | {pred[1]:8.3f} ms {meas[1]:8.3f} {100 * err[1]:+6.1f}% {drift[1]} | "
                    f"{ratio[0]:.3f}x / {ratio[1]:.3f}x"
                )
    print("mean signed error per model: " + ", ".join(f"{n} {100 * sum(v) / len(v):+.1f}%" for n, v in signed.items()))
    within = sum(e <= 0.10 for e in errs)
    print(f"within 10%: {within}/{len(errs)}; median |error| {100 * sorted(errs)[len(errs) // 2]:.1f}%, "
          f"max {100 * max(errs):.1f}%")


if __name__ == "__main__":
    main()
