"""Costs stage: each subblock variant's prefill and decode time and its memory, per deployment target.

    python -m puzzle costs --cfg JSON --parent DIR --target NAME --out costs/NAME/costs.csv

writes costs.csv (one row per subblock variant x scenario x batch size, plus the non-block part)
and costs.json beside it (device, dtype, library versions, threads, method).

A target is measured (`measure: true`: timed on the device the job runs on) or analytic (`device`:
a roofline estimate from the device's peak compute and memory bandwidth, see cost_model.py).
Both write the same table.

Measured timing. A subblock's cost is the difference between two models that differ only in how
many copies of it they hold: stacks of N and 2N identical Nemotron-NAS layers whose other subblock
is a no-op, timed through the model's own forward (embeddings, RoPE, mask, KV cache, head), so

    cost(v) = [T(2N copies of v) - T(N copies of v)] / N - e,   e = the same for an empty layer

cancels everything that does not scale with the copies. The empty layer's cost e (a layer call with
both subblocks no-op, which every layer of a child pays) goes to the non-block part, with the fixed
cost of a model that keeps a KV cache: the intercept 2 T(N) - T(2N) of the GQA attention
stacks (averaged over the KV-head variants) (embeddings, RoPE, mask and cache bookkeeping, final norm, head; never below the time of
the model without layers, a floor against noise), so non_block = that + L e.
Summed per-block costs plus non_block then predict a whole model's time (benchmarks/bench_costs.py
checks it). prefill = one forward of the batch's prompts into an empty KV cache (logits of the last
position only, as generation computes them); decode = one step of one token per sequence with a KV
cache of input_len + output_len // 2 tokens (the mean over output positions).

Drifts. A shared machine's speed wanders by tens of percent over seconds to minutes, more than the
differences above can stand. So every stack (N and 2N copies of every variant, the empty layer, the
model without layers) is held at once and timed in rounds: after warm-up, each of `repeats` rounds
times every model once, in a shuffled order (time_models), so that a slow spell hits all variants
alike; each round's common slowdown (the median over the models of time / the model's median time) is
divided out (normalize_rounds); then the median (or min, costs.statistic) over the rounds per model.
Where all stacks would take over a quarter of the device's memory (together_bytes), one variant's N and
2N stacks are timed together at a time instead. benchmarks/bench_costs.py times whole models in the
same rounds (measured_rows(..., also=models)).

Memory is exact: parameter bytes from shapes and dtype, KV-cache bytes per token per sequence
2 * n_kv * head_dim * dtype bytes (0 for linear and no-op attention and for FFNs). A scenario whose
KV cache at the parent's architecture plus the parent's parameters exceed the device's memory stops
the stage before anything is timed, naming the scenario and both numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
from pathlib import Path
from typing import Any, Callable

from puzzle import blocks
from puzzle import config as config_mod
from puzzle import cost_model as cm

COLUMNS = [
    "kind", "variant", "scenario", "batch", "input_len", "output_len", "prefill_ms", "decode_ms",
    "param_bytes", "kv_bytes_per_token", "device", "dtype",
]
NON_BLOCK = cm.NON_BLOCK


# ---- config --------------------------------------------------------------------------------------


def target_spec(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    targets = cfg["costs"]["targets"]
    if name not in targets:
        raise config_mod.ConfigError(f"config error: --target {name!r}: expected one of {sorted(targets)}")
    t = {"measure": False, "device": None, "dtype": "auto", "memory_gb": None, "peak_tflops": None,
         "bandwidth_gbs": None, **targets[name]}
    if bool(t["measure"]) == bool(t["device"]):
        raise config_mod.ConfigError(
            f"config error: costs.targets.{name}: expected either measure: true or device: <analytic device name>"
        )
    return t


def scenarios(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"batch_sizes": [1], **s} for s in cfg["costs"]["scenarios"]]


def read_parent_config(parent_dir: str | os.PathLike) -> dict[str, Any]:
    p = Path(parent_dir) / "config.json"
    if not p.exists():
        raise config_mod.ConfigError(f"config error: parent {str(parent_dir)!r}: expected a folder with config.json")
    return json.loads(p.read_text())


def _human(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


def check_memory(arch: cm.Arch, scen: list[dict[str, Any]], dtype_bytes: int, memory_bytes: float,
                 device_name: str) -> None:
    """Stop before any timing when a scenario cannot fit the parent on the device."""
    for s in scen:
        for b in s["batch_sizes"]:
            params, kv = cm.memory_needed(arch, b, s["input_len"], s["output_len"], dtype_bytes)
            if params + kv > memory_bytes:
                raise config_mod.ConfigError(
                    f"config error: costs scenario {s['name']!r} at batch {b} ({s['input_len']} + "
                    f"{s['output_len']} tokens) needs {params + kv:,} bytes ({_human(params + kv)}: KV cache "
                    f"{kv:,} + parameters {params:,}) at the parent's architecture, more than the "
                    f"{memory_bytes:,.0f} bytes ({_human(memory_bytes)}) of {device_name}"
                )


def memory_rows(arch: cm.Arch, variants: list[tuple[str, str]], e: int, multiple: int) -> dict[str, tuple[int, int]]:
    return {v: (cm.param_count(v, arch, multiple) * e, cm.kv_bytes_per_token(v, arch, e)) for _, v in variants}


def all_variants(arch: cm.Arch, space: dict[str, Any]) -> list[tuple[str, str]]:
    attn, ffn = blocks.search_space(arch.shape, space)
    return [("attention", a) for a in attn] + [("ffn", f) for f in ffn] + [("non_block", NON_BLOCK)]


# ---- analytic ------------------------------------------------------------------------------------


def analytic_rows(arch: cm.Arch, space: dict[str, Any], scen: list[dict[str, Any]], dev: cm.Device,
                  dtype: str, multiple: int) -> list[dict[str, Any]]:
    e = cm.DTYPE_BYTES[dtype]
    variants = all_variants(arch, space)
    mem = memory_rows(arch, variants, e, multiple)
    rows = []
    for s in scen:
        kv_len = cm.decode_kv_len(s["input_len"], s["output_len"])
        for b in s["batch_sizes"]:
            for kind, v in variants:
                pre = cm.roofline_ms(*cm.prefill_work(v, arch, b, s["input_len"], e, multiple), dev)
                dec = cm.roofline_ms(*cm.decode_work(v, arch, b, kv_len, e, multiple), dev)
                rows.append(_row(kind, v, s, b, pre, dec, mem[v], dev.name, dtype))
    return rows


def _row(kind: str, v: str, s: dict[str, Any], b: int, pre: float, dec: float, mem: tuple[int, int],
         device: str, dtype: str) -> dict[str, Any]:
    return {"kind": kind, "variant": v, "scenario": s["name"], "batch": b, "input_len": s["input_len"],
            "output_len": s["output_len"], "prefill_ms": pre, "decode_ms": dec, "param_bytes": mem[0],
            "kv_bytes_per_token": mem[1], "device": device, "dtype": dtype}


# ---- measured ------------------------------------------------------------------------------------


def stack_config(parent_config: dict[str, Any], block: dict[str, Any] | None, n_layers: int,
                 vocab_size: int | None = None) -> Any:
    """A Nemotron-NAS config with the parent's globals and `n_layers` copies of `block`."""
    from puzzle.convert import decilm_config_from_llama
    from puzzle.nemotron_nas import DeciLMConfig

    pc = dict(parent_config)
    if vocab_size is not None:
        pc["vocab_size"] = vocab_size
    if pc.get("model_type") == "nemotron-nas":
        d = {**pc, "num_hidden_layers": n_layers, "block_configs": [block] * n_layers}
        cfg = DeciLMConfig.from_dict(d)
    else:
        pc["num_hidden_layers"] = n_layers
        cfg = decilm_config_from_llama(pc, block_configs=[block] * n_layers)
    cfg._attn_implementation = "sdpa"
    return cfg


def build_model(config: Any, device: Any, dtype: Any) -> Any:
    import torch

    from puzzle.nemotron_nas import DeciLMForCausalLM

    torch.manual_seed(0)
    with torch.device(device):
        model = DeciLMForCausalLM(config)
    return model.to(dtype=dtype).eval()


class Timer:
    """Median wall time of a callable after warm-up, synchronizing a GPU around every run."""

    def __init__(self, device: Any, warmup: int, repeats: int, statistic: str = "median", clock: str = "wall") -> None:
        self.device, self.warmup, self.repeats = device, warmup, repeats
        self.statistic = {"median": statistics.median, "min": min}[statistic]
        if clock == "cpu" and device.type == "cuda":
            raise config_mod.ConfigError("config error: costs.clock = cpu: a GPU is timed by the wall clock only")
        self.clock = {"wall": time.perf_counter, "cpu": time.process_time}[clock]

    def sync(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def once(self, fn: Callable[[], Any], after: Callable[[], Any] | None = None) -> float:
        self.sync()
        t = self.clock()
        fn()
        self.sync()
        dt = self.clock() - t
        if after is not None:
            after()
        return dt


class Workload:
    """Prefill and decode calls of one model for one (batch, input_len, output_len)."""

    def __init__(self, model: Any, batch: int, input_len: int, output_len: int, device: Any) -> None:
        import torch

        self.model, self.device = model, device
        vocab = model.config.vocab_size
        g = torch.Generator().manual_seed(0)
        self.kv_len = cm.decode_kv_len(input_len, output_len)
        self.prompt = torch.randint(0, vocab, (batch, input_len), generator=g).to(device)
        self.context = torch.randint(0, vocab, (batch, self.kv_len), generator=g).to(device)
        self.step = torch.randint(0, vocab, (batch, 1), generator=g).to(device)
        self.cache = None

    def prefill(self) -> Any:
        import torch
        from transformers.cache_utils import DynamicCache

        with torch.no_grad():
            return self.model(input_ids=self.prompt, cache=DynamicCache(), use_cache=True, logits_to_keep=1)

    def prepare_decode(self) -> None:
        import torch
        from transformers.cache_utils import DynamicCache

        self.cache = DynamicCache()
        with torch.no_grad():
            self.model(input_ids=self.context, cache=self.cache, use_cache=True, logits_to_keep=1)

    def decode(self) -> Any:
        import torch

        with torch.no_grad():
            return self.model(input_ids=self.step, cache=self.cache, use_cache=True, logits_to_keep=1)

    def rewind(self) -> None:
        """Drop the token the last decode step appended: every step sees kv_len cached tokens."""
        if self.cache is not None and self.cache.get_seq_length() > self.kv_len:
            self.cache.crop(-1)


def round_robin_orders(n_models: int, rounds: int, seed: int = 0) -> list[list[int]]:
    """The order in which each round visits the models: every round a permutation of all of them
    (shuffled, seeded, so no model is always timed right after the same neighbour)."""
    rng = random.Random(seed)
    orders = []
    for _ in range(rounds):
        order = list(range(n_models))
        rng.shuffle(order)
        orders.append(order)
    return orders


def time_models(models: list[Any], batch: int, input_len: int, output_len: int, timer: Timer,
                seed: int = 0) -> list[tuple[float, float]]:
    """(prefill s, decode s) of each model: warm-up, then `repeats` rounds that each time every model once
    (in a shuffled order), so that a slow spell of the machine hits all models alike; each round's
    common slowdown divided out (normalize_rounds), then the statistic (median or min) over the rounds
    per model."""
    loads = [Workload(m, batch, input_len, output_len, timer.device) for m in models]
    pre: list[list[float]] = [[] for _ in models]
    dec: list[list[float]] = [[] for _ in models]
    for w in loads:
        for _ in range(timer.warmup):
            w.prefill()
    for order in round_robin_orders(len(loads), timer.repeats, seed):
        for k in order:
            pre[k].append(timer.once(loads[k].prefill))
    for w in loads:
        w.prepare_decode()
        for _ in range(timer.warmup):
            timer.once(w.decode, w.rewind)
    for order in round_robin_orders(len(loads), timer.repeats, seed + 1):
        for k in order:
            dec[k].append(timer.once(loads[k].decode, loads[k].rewind))
    for w in loads:
        w.cache = None
    pre, dec = normalize_rounds(pre), normalize_rounds(dec)
    return [(timer.statistic(pre[k]), timer.statistic(dec[k])) for k in range(len(models))]


def normalize_rounds(times: list[list[float]]) -> list[list[float]]:
    """Times of several models over the same rounds (times[model][round]) with each round's common
    slowdown divided out: round r's factor is the median over the models of time / that model's median
    time, so a round in which the machine ran 30% slow (another job, a frequency change) has a factor
    of about 1.3 and its times count as if it had not. One model alone is returned as it is (nothing
    to compare it with)."""
    if len(times) < 2 or not times[0]:
        return [list(t) for t in times]
    med = [statistics.median(t) for t in times]
    factors = [statistics.median(t[r] / m for t, m in zip(times, med) if m > 0) if any(m > 0 for m in med) else 1.0
               for r in range(len(times[0]))]
    return [[x / f if f > 0 else x for x, f in zip(t, factors)] for t in times]


def stack_specs(arch: cm.Arch, space: dict[str, Any]) -> list[tuple[str, tuple[str, str]]]:
    """(name, (attention, ffn)) of every stack timed: the empty layer, then every variant that is not a
    no-op with the other subblock a no-op (the parent's attention first)."""
    noops = (blocks.ATTN_NOOP, blocks.FFN_NOOP)
    stacks = [("empty", noops)]
    stacks += [(v, (v, blocks.FFN_NOOP) if k == "attention" else (blocks.ATTN_NOOP, v))
               for k, v in all_variants(arch, space) if k != "non_block" and v not in noops]
    return stacks


def together_bytes(arch: cm.Arch, space: dict[str, Any], scen: list[dict[str, Any]], n: int, e: int,
                   multiple: int) -> int:
    """Bytes of every stack (N and 2N copies) and the model without layers held at once, with the KV
    caches of the largest decode they run (activations left out)."""
    nb = cm.param_count(NON_BLOCK, arch)
    total = nb  # the model without layers; every N and 2N stack has its own embedding and head too
    tokens = max(b * (s["input_len"] + s["output_len"]) for s in scen for b in s["batch_sizes"])
    for _, pair in stack_specs(arch, space):
        layer = sum(cm.param_count(v, arch, multiple) for v in pair)
        total += 2 * nb + 3 * n * layer
        total += 3 * n * sum(cm.kv_bytes_per_token(v, arch, 1) for v in pair) * tokens
    return total * e


def measured_rows(parent_config: dict[str, Any], arch: cm.Arch, space: dict[str, Any], scen: list[dict[str, Any]],
                  costs_cfg: dict[str, Any], device: Any, dtype_name: str, multiple: int,
                  log: Callable[[str], None] = print, also: list[Any] = (), together: bool | None = None,
                  ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Measured rows of every variant x scenario x batch size, and what the sidecar records.

    Per (scenario, batch): T_v(N), T_v(2N) for every non-no-op variant v (stacks of v with the other
    subblock no-op) and for the empty layer; m_v = (T_v(2N) - T_v(N)) / N, e = m_empty;
    cost(v) = m_v - e; non_block = 2 T_a(N) - T_a(2N) + L e, the fixed cost of a model with KV-cached
    attention (the intercept of the GQA attention stacks, averaged over them: embeddings, RoPE, mask, cache
    bookkeeping, final norm and head; at least the time of the model without layers, a floor
    against noise) plus every layer's call overhead.

    together (None = when all of them take under a quarter of the device's memory, see together_bytes):
    every stack and the model without layers are held at once and timed in the same rounds
    (time_models), so that the machine's drifts hit every variant alike; otherwise one variant's N and
    2N stacks at a time. `also`: further models timed in the same rounds (a benchmark's whole models);
    their (prefill s, decode s) per (scenario, batch) come back in extra["also"].
    """
    import torch

    from puzzle.training import DTYPES

    dtype = DTYPES[dtype_name]
    e = cm.DTYPE_BYTES[dtype_name]
    n = costs_cfg["n_copies"]
    timer = Timer(device, costs_cfg["warmup"], costs_cfg["repeats"], costs_cfg.get("statistic", "median"),
                  costs_cfg.get("clock", "wall"))
    variants = all_variants(arch, space)
    mem = memory_rows(arch, variants, e, multiple)
    noops = (blocks.ATTN_NOOP, blocks.FFN_NOOP)
    if device.type == "cuda":
        dev_name = torch.cuda.get_device_name(device)
        free = float(torch.cuda.mem_get_info(device)[0])
    else:
        dev_name = f"cpu ({platform.processor() or platform.machine()})"
        free = device_memory_bytes(device)
    if together is None:
        together = together_bytes(arch, space, scen, n, e, multiple) < 0.25 * free

    stacks = stack_specs(arch, space)
    raw: dict[tuple[str, int, str], tuple[tuple[float, float], tuple[float, float]]] = {}
    also_t: dict[tuple[str, int], list[tuple[float, float]]] = {}
    zero_t: dict[tuple[str, int], tuple[float, float]] = {}
    cases = [(s, b) for s in scen for b in s["batch_sizes"]]
    t0 = time.perf_counter()

    def build(pair: tuple[str, str]) -> list[Any]:
        block = blocks.block_config(*pair, arch.shape, multiple)
        return [build_model(stack_config(parent_config, block, k), device, dtype) for k in (n, 2 * n)]

    # the model without layers: a floor for the fixed cost, which the extrapolation estimates noisily
    zero = build_model(stack_config(parent_config, None, 0), device, dtype)
    if together:
        models = [zero] + [m for _, pair in stacks for m in build(pair)] + list(also)
        for i, (s, b) in enumerate(cases):
            t = time_models(models, b, s["input_len"], s["output_len"], timer, seed=2 * i)
            zero_t[(s["name"], b)] = t[0]
            for j, (name, _) in enumerate(stacks):
                raw[(s["name"], b, name)] = (t[1 + 2 * j], t[2 + 2 * j])
            also_t[(s["name"], b)] = t[1 + 2 * len(stacks):]
            log(f"{s['name']} at batch {b}: {time.perf_counter() - t0:.1f} s")
        del models
    else:
        for i, (s, b) in enumerate(cases):
            t = time_models([zero, *also], b, s["input_len"], s["output_len"], timer, seed=2 * i)
            zero_t[(s["name"], b)], also_t[(s["name"], b)] = t[0], t[1:]
        for name, pair in stacks:
            models = build(pair)
            for i, (s, b) in enumerate(cases):
                raw[(s["name"], b, name)] = tuple(time_models(models, b, s["input_len"], s["output_len"], timer,
                                                              seed=2 * i))
            del models
            if device.type == "cuda":
                torch.cuda.empty_cache()
            log(f"{name}: {time.perf_counter() - t0:.1f} s")
    del zero

    def slope(key: tuple[str, int, str], k: int) -> float:
        tn, t2n = raw[key]
        return (t2n[k] - tn[k]) / n

    rows, clamped = [], 0
    extra: dict[str, Any] = {"empty_layer_ms": {}, "fixed_ms": {}}
    for s in scen:
        for b in s["batch_sizes"]:
            sb = (s["name"], b)
            # an empty layer cannot save time: a negative slope is noise
            e_layer = [max(slope((*sb, "empty"), k), 0.0) for k in (0, 1)]
            # intercepts 2 T(N) - T(2N) of every KV-cached attention's stacks, averaged (each is noisy)
            gqa = [v for k, v in variants if k == "attention" and blocks.kv_heads_of(v)]
            fixed = [
                max(statistics.fmean(2 * raw[(*sb, v)][0][k] - raw[(*sb, v)][1][k] for v in gqa), zero_t[sb][k])
                for k in (0, 1)
            ]
            extra["empty_layer_ms"][f"{s['name']}@{b}"] = [1e3 * x for x in e_layer]
            extra["fixed_ms"][f"{s['name']}@{b}"] = [1e3 * x for x in fixed]
            for kind, v in variants:
                if v in noops:
                    pre, dec = 0.0, 0.0
                elif v == NON_BLOCK:
                    pre, dec = (fixed[k] + arch.num_hidden_layers * e_layer[k] for k in (0, 1))
                else:
                    pre, dec = (slope((*sb, v), k) - e_layer[k] for k in (0, 1))
                clamped += (pre < 0) + (dec < 0)
                rows.append(_row(kind, v, s, b, 1e3 * max(pre, 0.0), 1e3 * max(dec, 0.0), mem[v], dev_name, dtype_name))
    extra["negative_differences_clamped_to_0"] = clamped
    extra["device_name"] = dev_name
    extra["timed_together"] = together
    if also:
        extra["also"] = also_t
    return rows, extra


# ---- stage ---------------------------------------------------------------------------------------


def device_memory_bytes(device: Any) -> float:
    import torch

    if device.type == "cuda":
        return float(torch.cuda.get_device_properties(device).total_memory)
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def run(cfg: dict[str, Any], parent_dir: str | os.PathLike, target: str,
        log: Callable[[str], None] = print) -> tuple[Any, dict[str, Any]]:
    """(costs table, sidecar dict) of one target."""
    import pandas as pd

    spec = target_spec(cfg, target)
    parent_config = read_parent_config(parent_dir)
    arch = cm.Arch.from_config(parent_config)
    space, multiple = cfg["search_space"], cfg["search_space"]["ffn"]["multiple_of"]
    scen = scenarios(cfg)
    meta: dict[str, Any] = {
        "target": target, "parent": str(parent_dir), "scenarios": scen,
        "decode_kv_len": "input_len + output_len // 2",
        "columns": {"prefill_ms": "prefill of the batch's prompts through one instance",
                    "decode_ms": "one decode step of the batch through one instance",
                    "param_bytes": "parameters of one instance", "kv_bytes_per_token": "per token per sequence"},
    }
    t0 = time.perf_counter()
    if spec["measure"]:
        import torch
        import transformers

        from puzzle.training import pick_device

        torch.set_num_threads(cfg["threads"])
        device = pick_device(cfg["device"])
        dtype = spec["dtype"] if spec["dtype"] != "auto" else ("bfloat16" if device.type == "cuda" else "float32")
        memory = spec["memory_gb"] * 1e9 if spec["memory_gb"] else device_memory_bytes(device)
        check_memory(arch, scen, cm.DTYPE_BYTES[dtype], memory, f"device {device}")
        log(f"measuring on {device} ({dtype}, {torch.get_num_threads()} threads)")
        rows, extra = measured_rows(parent_config, arch, space, scen, cfg["costs"], device, dtype, multiple, log)
        meta.update({
            "method": "measured: cost = (T(2N copies) - T(N copies)) / N - e (e: an empty layer's); "
                      "non_block = max(mean over GQA variants of 2 T(N) - T(2N), T(0 layers)) + L e; "
                      "T: statistic over rounds that time every stack once each, the round's common "
                      "slowdown divided out",
            "device": extra.pop("device_name"), "dtype": dtype, "memory_bytes": memory,
            "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
            "threads": torch.get_num_threads(), "repeats": cfg["costs"]["repeats"], "warmup": cfg["costs"]["warmup"],
            "n_copies": cfg["costs"]["n_copies"], "statistic": cfg["costs"]["statistic"],
            "clock": {"wall": "wall clock (perf_counter)", "cpu": "process CPU time"}[cfg["costs"]["clock"]], **extra,
        })
    else:
        try:
            dev = cm.device(spec["device"], spec["peak_tflops"], spec["bandwidth_gbs"], spec["memory_gb"])
        except ValueError as err:
            raise config_mod.ConfigError(f"config error: costs.targets.{target}: {err}") from None
        dtype = spec["dtype"] if spec["dtype"] != "auto" else "bfloat16"
        check_memory(arch, scen, cm.DTYPE_BYTES[dtype], dev.memory_gb * 1e9, dev.name)
        rows = analytic_rows(arch, space, scen, dev, dtype, multiple)
        meta.update({
            "method": "analytic roofline: max(flops / peak, bytes / bandwidth) per subblock (cost_model.py)",
            "device": dev.name, "dtype": dtype, "peak_tflops": dev.peak_tflops,
            "bandwidth_gbs": dev.bandwidth_gbs, "memory_gb": dev.memory_gb,
        })
    meta["wall_s"] = round(time.perf_counter() - t0, 2)
    return pd.DataFrame(rows, columns=COLUMNS), meta


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config_mod.add_arguments(parser)
    parser.add_argument("--parent", required=True, help="parent checkpoint folder (only config.json is read)")
    parser.add_argument("--target", required=True, help="a name under costs.targets")
    parser.add_argument("--out", required=True, help="costs.csv to write (costs.json goes beside it)")


def main(args: argparse.Namespace) -> None:
    from puzzle.io import write_csv, write_json

    cfg = config_mod.from_args(args)
    frame, meta = run(cfg, args.parent, args.target, log=lambda m: print(m, flush=True))
    write_json(Path(args.out).with_name("costs.json"), meta)
    write_csv(args.out, frame)
    show = frame[["kind", "variant", "scenario", "batch", "prefill_ms", "decode_ms", "param_bytes", "kv_bytes_per_token"]]
    print(show.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
