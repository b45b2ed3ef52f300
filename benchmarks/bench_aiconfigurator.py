"""The paper's Table 2 through aiconfigurator-core, and our roofline against it.

    python benchmarks/bench_aiconfigurator.py                 # Table 2: Nemotron-Super-49B vs Llama-3.1-70B
    python benchmarks/bench_aiconfigurator.py --roofline      # per variant of an 8B: roofline / aiconfigurator

Table 2 (H100 SXM, FP8, TensorRT-LLM): tokens/s/GPU of the published Nemotron-Super-49B (the paper's
51B is not public; the 49B is its Llama-3.3-70B sibling with the same constraints) and of
Llama-3.1-70B, each predicted twice: by aiconfigurator's own whole-model estimate, and by our costs
table (each subblock priced alone, summed over the layers, plus the non-block part); the paper's
numbers beside. Batch 256 for the child and 384 for the parent (the paper's best settings), at the
paper's TP of each row. Needs the `aiconfigurator` extra.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from puzzle import aiconfigurator as aic
from puzzle import config, costs

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "real-configs"
# scenario, in, out, paper 51B tok/s/GPU (TP), paper 70B tok/s/GPU (TP), paper speed-up
PAPER = [("chatbot", 128, 128, 5478, 1, 2645, 1, 2.07), ("text_generation", 128, 1024, 6472, 1, 2975, 4, 2.17),
         ("long_text_generation", 128, 2048, 4910, 2, 2786, 4, 1.76),
         ("inference_time_compute", 128, 4096, 3855, 2, 1828, 4, 2.11),
         ("summarization_rag", 2048, 128, 653, 1, 339, 4, 1.92), ("stress_test", 2048, 2048, 2622, 2, 1336, 4, 1.96)]


def table2(system: str, backend: str) -> None:
    llama = json.loads((DATA / "Llama-3.1-70B.config.json").read_text())
    child = json.loads((DATA / "Llama-3_3-Nemotron-Super-49B-v1.config.json").read_text())
    parent_blocks = [{"attention": {"n_heads_in_group": 8}, "ffn": {"ffn_mult": 5.25}}] * llama["num_hidden_layers"]
    est = {}
    print(f"{system}, {backend}, fp8; tokens/s/GPU (aic = aiconfigurator's whole model, sum = our per-block table)")
    print(f"{'scenario':23} {'in/out':>9} | {'49B aic':>8} {'sum':>8} {'err':>6} {'paper51B':>8} | "
          f"{'70B aic':>8} {'sum':>8} {'err':>6} {'paper':>6} | {'ratio':>6} {'paper':>6}")
    worst = 0.0
    for name, isl, osl, p51, tp51, p70, tp70, speed in PAPER:
        out = []
        for hf, blocks, tp, batch, label in ((child, child["block_configs"], tp51, 256, "49B"),
                                             (llama, parent_blocks, tp70, 384, "70B")):
            e = est.setdefault(tp, aic.Estimator(system, backend, None, "fp8", tp))
            whole = e.whole_model_ms(hf, label, batch, isl, osl)
            summed = aic.summed_ms(e, llama, blocks, batch, isl, osl)
            worst = max(worst, abs(summed / whole - 1))
            out.append([batch * osl / (t / 1e3) / tp for t in (whole, summed)])
        (c_w, c_s), (p_w, p_s) = out
        print(f"{name:23} {isl:>4}/{osl:<4} | {c_w:8.0f} {c_s:8.0f} {100 * (c_s / c_w - 1):+5.1f}% {p51:5d}TP{tp51} | "
              f"{p_w:8.0f} {p_s:8.0f} {100 * (p_s / p_w - 1):+5.1f}% {p70:4d}TP{tp70} | {c_s / p_s:6.2f} {speed:6.2f}")
    print(f"largest |sum / aic - 1|: {100 * worst:.2f}%")


def roofline(system: str, backend: str, dtype: str) -> None:
    """costs.csv of an 8B on aiconfigurator and on the analytic roofline of the same GPU: ratio per variant."""
    import tempfile

    space = {
        "attention": {"kv_heads": [4, 2, 1]},
        "ffn": {"ratios": [0.87, 0.75, 0.5, 0.25, 0.2, 0.1], "multiple_of": 256},
    }
    scen = [
        {"name": "chatbot", "input_len": 128, "output_len": 128, "batch_sizes": [1, 64]},
        {"name": "summarization_rag", "input_len": 2048, "output_len": 128, "batch_sizes": [8]},
    ]
    device = {"h100_sxm": "h100_sxm", "h200_sxm": "h200", "b200_sxm": "b200"}[system]
    targets = {
        "aic": {"system": system, "backend": backend, "dtype": dtype},
        "roof": {"device": device, "dtype": dtype},
    }
    cfg = config.validate({"search_space": space, "costs": {"targets": targets, "scenarios": scen}})
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.json").write_text((DATA / "Llama-3.1-8B.config.json").read_text())
        a = costs.run(cfg, tmp, "aic", log=lambda m: None)[0].set_index(["scenario", "batch", "variant"])
        r = costs.run(cfg, tmp, "roof", log=lambda m: None)[0].set_index(["scenario", "batch", "variant"])
    cases = [(s["name"], b) for s in scen for b in s["batch_sizes"]]
    print(f"Llama-3.1-8B, {dtype}, tp 1: roofline ({device}) / aiconfigurator ({system} {backend}), prefill | decode")
    print(f"{'variant':12} " + " ".join(f"{f'{n}@{b}':>26}" for n, b in cases))
    for v in dict.fromkeys(a.index.get_level_values("variant")):
        if v in ("attn_noop", "ffn_noop"):
            continue
        cells = []
        for n, b in cases:
            ratio = [r.loc[(n, b, v), k] / a.loc[(n, b, v), k] for k in ("prefill_ms", "decode_ms")]
            cells.append(f"{ratio[0]:11.2f} | {ratio[1]:<11.2f}")
        print(f"{v:12} " + " ".join(f"{c:>26}" for c in cells))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--system", default="h100_sxm")
    ap.add_argument("--backend", default="trtllm", choices=["trtllm", "vllm", "sglang"])
    ap.add_argument("--roofline", action="store_true", help="per-variant roofline / aiconfigurator ratios of an 8B")
    ap.add_argument("--dtype", default="fp8", choices=["fp8", "bfloat16"], help="(--roofline)")
    args = ap.parse_args()
    if args.roofline:
        roofline(args.system, args.backend, args.dtype)
    else:
        table2(args.system, args.backend)


if __name__ == "__main__":
    main()
