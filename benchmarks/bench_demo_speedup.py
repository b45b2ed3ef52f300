"""How steady is the embedded default's headline? The measured generation speed-up of children over
the parent at the default's search scenario (config/config.yaml: search.scenario at its costs batch),
timed as the evaluate stage times it (evaluate.throughput: interleaved rounds, common slowdown divided
out, median), several times over, beside each child's prediction from a costs.csv.

    python benchmarks/bench_demo_speedup.py                                  # the children below, 3 trials
    python benchmarks/bench_demo_speedup.py --trials 5 --costs results/default/costs/local/costs.csv
    python benchmarks/bench_demo_speedup.py --child attn_kv2+ffn_50,attn_kv1+ffn_50,attn_noop+ffn_100,attn_noop+ffn_25

Weights are random: generation time does not depend on them (greedy decoding of a fixed length).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from puzzle import blocks, costs, evaluate
from puzzle import config as config_mod
from puzzle import cost_model as cm
from puzzle.convert import decilm_config_from_llama

REPO = Path(__file__).resolve().parents[1]
CHILDREN = [  # the MIP's 2.17x children of the README's runs A and B and of two more timings of the default's costs
    "attn_linear+ffn_25,attn_linear+ffn_50,attn_kv1+ffn_75,attn_kv2+ffn_75",
    "attn_linear+ffn_25,attn_kv1+ffn_50,attn_kv1+ffn_75,attn_kv1+ffn_75",
    "attn_linear+ffn_50,attn_kv1+ffn_50,attn_kv1+ffn_100,attn_kv1+ffn_100",
    "attn_linear+ffn_50,attn_kv1+ffn_50,attn_kv1+ffn_50,attn_kv1+ffn_100",
]


def parent_config(cfg: dict) -> dict:
    t = cfg["parent"]["train"]
    return {
        "model_type": "llama", "vocab_size": cfg["data"]["tokenizer"]["vocab_size"], "hidden_size": t["hidden_size"],
        "intermediate_size": t["intermediate_size"], "num_hidden_layers": t["num_layers"],
        "num_attention_heads": t["num_heads"], "num_key_value_heads": t["num_kv_heads"], "rms_norm_eps": 1e-5,
        "tie_word_embeddings": True, "max_position_embeddings": 2048,
    }


def predicted(costs_csv: str, scenario: dict, layers: list[tuple[str, str]], parent: tuple[str, str], n: int) -> float:
    """Speed-up the costs table predicts: parent time over child time (prefill + output_len x decode)."""
    t = pd.read_csv(costs_csv)
    t = t[(t["scenario"] == scenario["name"]) & (t["batch"] == scenario["batch"])].set_index("variant")

    def time_ms(arch: list[tuple[str, str]]) -> float:
        names = [v for pair in arch for v in pair] + [costs.NON_BLOCK]
        return sum(t.loc[v, "prefill_ms"] + scenario["output_len"] * t.loc[v, "decode_ms"] for v in names)

    return time_ms([parent] * n) / time_ms(layers)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "config/config.yaml"))
    ap.add_argument("--child", action="append", help="comma-separated attention+ffn per layer (repeatable)")
    ap.add_argument("--trials", type=int, default=3, help="independent evaluate-style timings")
    ap.add_argument("--costs", help="a costs.csv to print each child's predicted speed-up from")
    ap.add_argument("--clock", choices=["wall", "cpu"], help="default: the config's evaluate.clock")
    ap.add_argument("--statistic", choices=["median", "min"], default="median")
    args = ap.parse_args()
    cfg = config_mod.load(args.config)
    e = cfg["evaluate"]
    clock = args.clock or e["clock"]
    torch.set_num_threads(e["threads"] or cfg["threads"])
    s = next(x for x in cfg["costs"]["scenarios"] if x["name"] == cfg["search"]["scenario"])
    scenario = {"name": s["name"], "batch": s["batch_sizes"][0], **{k: s[k] for k in ("input_len", "output_len")}}
    pc = parent_config(cfg)
    shape = cm.Arch.from_config(pc).shape
    parent = blocks.parent_variants(shape)
    archs = {"parent": [parent] * pc["num_hidden_layers"]}
    for text in args.child or CHILDREN:
        archs[text] = [tuple(pair.split("+")) for pair in text.split(",")]
    models = {}
    for name, layers in archs.items():
        mc = decilm_config_from_llama(pc, [blocks.block_config(a, f, shape, 8) for a, f in layers])
        mc._attn_implementation = "sdpa"
        models[name] = costs.build_model(mc, torch.device("cpu"), torch.float32)
    tokens = np.random.default_rng(0).integers(4, pc["vocab_size"], 100_000)
    print(f"scenario {scenario}, {e['repeats']} rounds + {e['warmup']} warm-up per trial, "
          f"{torch.get_num_threads()} threads, {args.statistic} of the {clock} clock")
    speedups = {name: [] for name in archs if name != "parent"}
    for trial in range(args.trials):
        out = evaluate.throughput(
            models, [scenario], tokens, e["repeats"], e["warmup"], args.statistic, seed=trial, clock=clock
        )
        key = evaluate.scenario_key(scenario)
        base = out["parent"][key]["tokens_per_s"]
        for name in speedups:
            speedups[name].append(out[name][key]["tokens_per_s"] / base)
        print(f"trial {trial}: parent {base:,.0f} tok/s; " + ", ".join(f"{v[-1]:.2f}x" for v in speedups.values()))
    for name, v in speedups.items():
        pred = ""
        if args.costs:
            pred = f", predicted {predicted(args.costs, scenario, archs[name], parent, len(archs['parent'])):.2f}x"
        spread = (max(v) - min(v)) / statistics.median(v)
        print(f"{name}: measured {', '.join(f'{x:.2f}' for x in v)} (median {statistics.median(v):.2f}x, "
              f"spread {100 * spread:.1f}% of it){pred}")


if __name__ == "__main__":
    main()
