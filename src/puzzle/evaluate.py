"""Evaluate stage: quality and measured generation throughput of a parent and its children, in one job.

    python -m puzzle evaluate --cfg JSON --parent PARENT --model child=CHILD --model gkd=GKD \\
        --test test.bin [--solution solution.json] --out EVAL_DIR
    python -m puzzle evaluate --summarize EVAL_DIR [EVAL_DIR ...] --out eval/summary.csv

Quality, on the same fixed windows of the test shard for every model (nats per token):
    lm_loss    mean next-token cross-entropy
    kl         mean KL(parent || model) of the next-token distributions (the parent's is exactly 0)
    token_acc  fraction of positions whose argmax is the next token

Throughput: output tokens/s of greedy generation (prefill into a KV cache, then one forward per token,
exactly output_len new tokens; `greedy_generate`) for each
scenario (batch, input_len, output_len): the search solution's own scenario and `evaluate.scenarios`.
Timed as the costs stage times its stacks (timing.py): each model takes turns with the parent within
every round in a shuffled order, each round's common slowdown is divided out and the median over rounds
is kept, so a child meets the machine load the parent meets and predicted and measured speed-ups are
timed alike; models with the same architecture share one measurement. One model is read at a time
beside the parent (the reference of kl and the ratios), evaluated and freed before the next
(checkpoint.load places each over the job's GPUs). Retained quality is model / parent for token_acc and
parent / model for lm_loss (both "higher is better", 100% = the parent's); the throughput ratio is model /
parent tokens/s.

Writes EVAL_DIR/{name}.json per model (parent.json included); `--summarize` gathers runs into one
CSV table. lm-eval-harness tasks (`evaluate.lm_eval_tasks`) run only when `lm-eval` is installed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from puzzle import checkpoint, metrics, timing
from puzzle import config as config_mod
from puzzle.data import read_shard
from puzzle.io import read_json, write_csv, write_json
from puzzle.training import fixed_windows, pick_device, resolve_dtype

# ---- quality -------------------------------------------------------------------------------------


@torch.no_grad()
def quality(
    model: checkpoint.CausalLM, parent: checkpoint.CausalLM, windows: torch.Tensor, batch: int
) -> dict[str, float]:
    """lm_loss, kl (to `parent`) and token_acc of `model` on `windows` (each predicts tokens 1..T)."""
    device = checkpoint.input_device(model)
    nll = kl = correct = 0.0
    for i in range(0, len(windows), batch):
        x = windows[i : i + batch].to(device)
        ids, targets = x[:, :-1], x[:, 1:]
        logits = model(input_ids=ids).logits
        parent_logits = logits if model is parent else parent(input_ids=ids).logits
        nll += float(metrics.next_token_nll(logits, targets).sum())
        kl += float(metrics.forward_kl(parent_logits, logits).sum())
        correct += float(metrics.next_token_correct(logits, targets).sum())
    tokens = windows[:, 1:].numel()
    return {"lm_loss": nll / tokens, "kl": kl / tokens, "token_acc": correct / tokens, "tokens": tokens}


# ---- throughput ----------------------------------------------------------------------------------


def scenarios(cfg: dict[str, Any], solution: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The solution's own scenario (when `evaluate.solution_scenario`) and `evaluate.scenarios`."""
    out = []
    if solution is not None and cfg["evaluate"]["solution_scenario"]:
        s = solution["scenario"]
        out.append(
            {"name": s["name"], "batch": s["batch"], "input_len": s["input_len"], "output_len": s["output_len"]}
        )
    out += [dict(s) for s in cfg["evaluate"]["scenarios"] if dict(s) not in out]
    return out


def scenario_key(s: dict[str, Any]) -> str:
    return f"{s['name']}_b{s['batch']}"


@torch.no_grad()
def greedy_generate(model: checkpoint.CausalLM, prompts: torch.Tensor, output_len: int) -> torch.Tensor:
    """Exactly `output_len` greedy tokens per prompt: one prefill into a KV cache, then one forward per
    token. The same tokens as `model.generate(do_sample=False)` without its per-step bookkeeping
    (logits processors, stopping criteria), which a serving engine does not pay and which would
    otherwise be a fixed cost that no architecture change can remove (the costs stage times these
    same model calls)."""
    from transformers.cache_utils import DynamicCache

    cache = DynamicCache()
    out = model(input_ids=prompts, cache=cache, use_cache=True, logits_to_keep=1)
    tokens = [out.logits[:, -1].argmax(-1, keepdim=True)]
    for _ in range(output_len - 1):
        out = model(input_ids=tokens[-1], cache=cache, use_cache=True, logits_to_keep=1)
        tokens.append(out.logits[:, -1].argmax(-1, keepdim=True))
    return torch.cat(tokens, dim=1)


SHAPE_KEYS = (
    "num_hidden_layers",
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
)


def architecture(model: checkpoint.CausalLM) -> str:
    """Models with equal architectures run at the same speed: one measurement serves them all."""
    c = model.config
    layers = getattr(c, "block_configs", None)
    layers = [b.to_dict() for b in layers] if layers is not None else None  # BlockConfig objects
    # a homogeneous model (Llama: the parent, Table 5's model from scratch) is its shape
    shape = {k: getattr(c, k, None) for k in SHAPE_KEYS}
    return json.dumps([type(model).__name__, layers, shape], sort_keys=True)


def throughput(
    models: dict[str, Any],
    scenario_list: list[dict[str, Any]],
    tokens: Any,
    repeats: int,
    warmup: int,
    statistic: str = "median",
    seed: int = 0,
    clock: str = "wall",
    reference: str | None = None,
    level: float = 0.9,
    threads: int | None = None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """{model: {scenario key: {batch, input_len, output_len, tokens_per_s, seconds, measured_as}}}.

    Timed by the costs stage's harness (timing.time_calls): after warm-up, every round times one
    generation of every architecture in a shuffled order, each round's common slowdown is divided
    out, and tokens_per_s is batch * output_len over the statistic of those seconds; `seconds` are
    the raw times of the rounds. With a `reference` model, each entry also has `speedup_interval`:
    the central `level` of its speed-up over the reference across bootstrap resamples of whole rounds
    (paired, as they were timed together). `threads`: torch's CPU threads while timing (None: as set)."""
    reps: dict[str, str] = {}
    for name, model in models.items():
        reps.setdefault(architecture(model), name)
    timed = list(reps.values())
    device = checkpoint.input_device(models[timed[0]])
    timer = timing.Timer(device, warmup, repeats, statistic, clock)
    result: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in models}
    for i, s in enumerate(scenario_list):
        prompts = fixed_windows(tokens, s["batch"], s["input_len"])
        prompts = prompts.repeat((s["batch"] + len(prompts) - 1) // len(prompts), 1)[: s["batch"]].to(device)
        calls = [
            lambda m=models[name], p=prompts, n=s["output_len"]: greedy_generate(m, p, n) for name in timed
        ]
        with timing.threads(threads):
            raw = timing.time_calls(calls, timer, seed=seed + i)
        stat = dict(zip(timed, timing.summarize(raw, statistic)))
        seconds = dict(zip(timed, raw))
        boot = dict(zip(timed, timing.resampled(raw, statistic, seed=seed + i))) if reference else {}
        for name, model in models.items():
            rep = reps[architecture(model)]
            result[name][scenario_key(s)] = {
                **{k: s[k] for k in ("batch", "input_len", "output_len")},
                "tokens_per_s": s["batch"] * s["output_len"] / stat[rep],
                "seconds": seconds[rep],
                "measured_as": rep,
            }
            if reference:
                ratio = boot[reps[architecture(models[reference])]] / boot[rep]
                result[name][scenario_key(s)]["speedup_interval"] = [float(x) for x in timing.interval(ratio, level)]
    return result


# ---- lm-eval-harness (optional) ------------------------------------------------------------------


def lm_eval_scores(model: Any, tokenizer_dir: str, e_cfg: dict[str, Any]) -> dict[str, Any] | None:
    """lm-eval-harness results of `evaluate.lm_eval_tasks` through its Hugging Face adapter, on task
    data that `evaluate.lm_eval_include_path` defines locally; None when no task is configured."""
    if not e_cfg["lm_eval_tasks"]:
        return None
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        print("evaluate.lm_eval_tasks: lm-eval is not installed (pip install lm-eval); skipped")
        return {"skipped": "lm-eval is not installed"}
    from puzzle.data import load_tokenizer

    lm = HFLM(pretrained=model, tokenizer=load_tokenizer(tokenizer_dir), batch_size=e_cfg["batch_size"])
    res = lm_eval.simple_evaluate(
        model=lm,
        tasks=list(e_cfg["lm_eval_tasks"]),
        task_manager=TaskManager(include_path=e_cfg["lm_eval_include_path"]),
        limit=e_cfg["lm_eval_limit"],
    )
    return res["results"]


# ---- the stage -----------------------------------------------------------------------------------


def load_model(path: str | Path, device: torch.device, dtype: torch.dtype) -> checkpoint.CausalLM:
    """A parent or child in `dtype`, over the job's devices of `device`'s type."""
    return checkpoint.load(path, dtype=dtype, device=checkpoint.devices_for(device))


def relative(row: dict[str, Any], parent: dict[str, Any]) -> dict[str, Any]:
    """Throughput ratios and retained quality (%) of one model against the parent."""
    q, pq = row["quality"], parent["quality"]
    return {
        "throughput_ratio": {
            k: v["tokens_per_s"] / parent["throughput"][k]["tokens_per_s"] for k, v in row["throughput"].items()
        },
        "throughput_ratio_interval": {
            k: v.get("speedup_interval", [1.0, 1.0])
            for k, v in row["throughput"].items()  # the parent's own: 1
        },
        "retained_pct": {
            "token_acc": 100 * q["token_acc"] / pq["token_acc"],
            "lm_loss": 100 * pq["lm_loss"] / q["lm_loss"],
        },
    }


def evaluate(
    cfg: dict[str, Any],
    parent_dir: str,
    model_dirs: dict[str, str],
    test_shard: str,
    solution_path: str | None,
    out_dir: str,
) -> dict[str, dict[str, Any]]:
    """Evaluate the parent and `model_dirs` ({name: checkpoint}); writes out_dir/{name}.json."""
    e = cfg["evaluate"]
    torch.set_num_threads(cfg["threads"])
    device = pick_device(cfg["device"])
    dtype = resolve_dtype(e["dtype"], device)
    if "parent" in model_dirs:
        raise ValueError("--model parent=...: the name 'parent' is taken by --parent")
    tokens = read_shard(test_shard)
    windows = fixed_windows(tokens, e["test_windows"], e["seq_len"] + 1)
    solution = read_json(solution_path) if solution_path else None
    scenario_list = scenarios(cfg, solution)

    def row(name: str, path: str, model: Any, speed: dict[str, Any], parent: Any) -> dict[str, Any]:
        return {
            "model": name,
            "path": str(path),
            "solution": str(solution_path) if solution_path else None,
            "parameters": sum(p.numel() for p in model.parameters()),
            "device": str(device),
            "dtype": str(dtype).removeprefix("torch."),
            "quality": {
                **quality(model, parent, windows, e["batch_size"]),
                "windows": len(windows),
                "shard": str(test_shard),
            },
            "throughput": speed,
            "timing": {"clock": e["clock"], "threads": e["threads"] or cfg["threads"]},
            "lm_eval": lm_eval_scores(model, path, e),
        }

    # The parent (every model's reference) stays; each other model is loaded, evaluated beside it and freed
    # before the next is read, so at most two models are held. A model is timed in the same rounds as the
    # parent, its ratio taken to the parent of those rounds; one of an architecture already timed reuses that.
    parent = load_model(parent_dir, device, dtype)
    parent_arch = architecture(parent)
    speeds: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}  # architecture -> (its speed, the parent's beside)
    rows: dict[str, dict[str, Any]] = {}
    arch_of = {"parent": parent_arch}
    for name, path in model_dirs.items():
        model = load_model(path, device, dtype)
        arch = arch_of[name] = architecture(model)
        if arch not in speeds:
            timed = throughput(
                {"parent": parent, name: model},
                scenario_list,
                tokens,
                e["repeats"],
                e["warmup"],
                clock=e["clock"],
                reference="parent",
                level=e["interval"],
                threads=e["threads"],
            )
            warn_unmeasurable(name, timed[name], timed["parent"], e["max_spread"])
            speeds[arch] = (timed[name], timed["parent"])
            speeds.setdefault(parent_arch, (timed["parent"], timed["parent"]))
        rows[name] = row(name, path, model, speeds[arch][0], parent)
        del model
        free_memory(device)
    if parent_arch not in speeds:  # the parent alone
        alone = throughput(
            {"parent": parent}, scenario_list, tokens, e["repeats"], e["warmup"],
            clock=e["clock"], threads=e["threads"],
        )["parent"]
        speeds[parent_arch] = (alone, alone)
    rows = {"parent": row("parent", parent_dir, parent, speeds[parent_arch][0], parent), **rows}
    for name, r in rows.items():
        beside = {"quality": rows["parent"]["quality"], "throughput": speeds[arch_of[name]][1]}
        r.update(relative(r, beside))
        write_json(Path(out_dir) / f"{name}.json", r)
    return rows


def warn_unmeasurable(name: str, speed: dict[str, Any], parent: dict[str, Any], max_spread: float) -> None:
    """Says so when the machine was too unsteady to measure a model's speed-up: its interval wider
    than `max_spread` of the speed-up (evaluate.max_spread); the JSON keeps the interval either way."""
    for key, v in speed.items():
        ratio, (lo, hi) = v["tokens_per_s"] / parent[key]["tokens_per_s"], v["speedup_interval"]
        if hi - lo > max_spread * ratio:
            print(
                f"evaluate: warning: {name} {key}: measured speed-up {ratio:.2f}x in [{lo:.2f}, {hi:.2f}], wider than "
                f"evaluate.max_spread = {max_spread:g} of it: this machine was too busy to measure it (rerun on a "
                "quieter one, or raise evaluate.repeats)",
                file=sys.stderr,
            )


def free_memory(device: torch.device) -> None:
    """Returns a freed model's memory now (the next model is read right after)."""
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def summarize(run_dirs: list[str], out_csv: str) -> pd.DataFrame:
    """One row per (run, model): quality, retained %, tokens/s and throughput ratio per scenario."""
    records = []
    root = Path(out_csv).parent
    for d in map(Path, run_dirs):
        files = sorted(d.glob("*.json"), key=lambda p: (p.stem != "parent", p.stem))
        if not files:
            raise FileNotFoundError(f"{d}: no evaluation JSON files")
        for f in files:
            r = read_json(f)
            rec = {"run": str(d.relative_to(root)) if d.is_relative_to(root) else str(d), "model": r["model"]}
            rec.update({k: r["quality"][k] for k in ("lm_loss", "kl", "token_acc")})
            rec.update({f"retained_{k}_pct": v for k, v in r["retained_pct"].items()})
            rec["parameters"] = r["parameters"]
            for key, t in r["throughput"].items():
                rec[f"tok_s_{key}"] = t["tokens_per_s"]
                rec[f"ratio_{key}"] = r["throughput_ratio"][key]
                lo, hi = r.get("throughput_ratio_interval", {}).get(key, [math.nan, math.nan])
                rec[f"ratio_{key}_lo"], rec[f"ratio_{key}_hi"] = lo, hi
            records.append(rec)
    frame = pd.DataFrame(records)
    write_csv(out_csv, frame)
    return frame


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config_mod.add_arguments(parser)
    parser.add_argument("--parent", help="parent HF checkpoint folder (the reference of kl and ratios)")
    parser.add_argument(
        "--model", action="append", default=[], metavar="NAME=DIR", help="a model to evaluate (repeatable)"
    )
    parser.add_argument("--test", help="test token shard (test.bin)")
    parser.add_argument("--solution", help="solution.json of the children: its scenario is timed")
    parser.add_argument("--summarize", nargs="+", metavar="EVAL_DIR", help="gather evaluated runs into the CSV --out")
    parser.add_argument("--out", required=True, help="output folder ({name}.json), or the CSV with --summarize")


def main(args: argparse.Namespace) -> None:
    if args.summarize:
        frame = summarize(args.summarize, args.out)
        print(frame.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        return
    if not (args.parent and args.test):
        raise config_mod.ConfigError("config error: evaluate needs --parent and --test (or --summarize)")
    pairs = [m.split("=", 1) for m in args.model]
    if any(len(p) != 2 or not p[0] for p in pairs):
        raise config_mod.ConfigError(f"config error: --model {args.model}: expected NAME=DIR")
    cfg = config_mod.from_args(args)
    rows = evaluate(cfg, args.parent, dict(pairs), args.test, args.solution, args.out)
    for name, r in rows.items():
        q = r["quality"]
        speed = ", ".join(f"{k} {v:.2f}x" for k, v in r["throughput_ratio"].items())
        print(f"{name}: lm_loss {q['lm_loss']:.4f}, kl {q['kl']:.4f}, token_acc {q['token_acc']:.4f}; speed {speed}")
