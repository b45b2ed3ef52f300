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
stacks (averaged over the KV-head variants) (embeddings, RoPE, mask and cache bookkeeping, final
norm, head; never below the time of the model without layers, a floor against noise), so
non_block = that + L e.
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
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from puzzle import blocks, timing
from puzzle import config as config_mod
from puzzle import cost_model as cm
from puzzle.search.tables import COST_COLUMNS, INTERVAL_COLUMNS

if TYPE_CHECKING:  # torch, pandas and the model are imported where a measured target needs them
    import pandas as pd
    import torch

    from puzzle.nemotron_nas.configuration_decilm import DeciLMConfig
    from puzzle.nemotron_nas.modeling_decilm import DeciLMForCausalLM

# what the search reads (search/tables.py), then where and how each row was costed, and its interval
COLUMNS = [*COST_COLUMNS, "device", "dtype", "tp", *INTERVAL_COLUMNS, "noisy"]
NON_BLOCK = cm.NON_BLOCK
KINDS = ("measure", "device", "system")  # measured, analytic roofline, aiconfigurator


class NoisyCostsError(config_mod.ConfigError):
    """Measured differences that noise swamps: the stage stops naming them (costs.on_noise: stop)."""


# ---- config --------------------------------------------------------------------------------------


def target_spec(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    targets = cfg["costs"]["targets"]
    if name not in targets:
        raise config_mod.ConfigError(f"config error: --target {name!r}: expected one of {sorted(targets)}")
    t = {
        "measure": False,
        "device": None,
        "system": None,
        "dtype": "auto",
        "tp": 1,
        "memory_gb": None,
        "peak_tflops": None,
        "bandwidth_gbs": None,
        "fp8_tflops": None,
        "interconnect_gbs": None,
        "backend": "trtllm",
        "backend_version": None,
        **targets[name],
    }
    if sum(bool(t[k]) for k in KINDS) != 1:
        raise config_mod.ConfigError(
            f"config error: costs.targets.{name}: expected one of measure: true, device: <analytic device name> "
            "or system: <aiconfigurator system>"
        )
    if t["measure"] and (t["tp"] != 1 or t["dtype"] == "fp8"):
        raise config_mod.ConfigError(
            f"config error: costs.targets.{name}: tp = {t['tp']}, dtype = {t['dtype']}: a measured target times "
            "one device in float32/bfloat16/float16 (tp 1); use an analytic or aiconfigurator target for tp and fp8"
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


def check_memory(
    arch: cm.Arch,
    scen: list[dict[str, Any]],
    place: cm.Placement,
    memory_bytes: float,
    device_name: str,
    multiple: int = 256,
) -> list[str]:
    """Stop before any costing when the parent cannot serve even a scenario's smallest batch on one GPU
    of the target (parameters and KV cache per GPU at its tensor-parallel degree). Returns the larger
    batches it does not fit ("scenario@batch"): their rows are written (a child may fit), the sidecar
    names them, and the search's memory target is what rules them out."""
    over = []
    for s in scen:
        for i, b in enumerate(sorted(s["batch_sizes"])):
            params, kv = cm.memory_needed(arch, b, s["input_len"], s["output_len"], place, multiple)
            if params + kv <= memory_bytes:
                continue
            if i > 0:
                over.append(f"{s['name']}@{b}")
                continue
            tp = f" per GPU at tp {place.tp}" if place.tp > 1 else ""
            raise config_mod.ConfigError(
                f"config error: costs scenario {s['name']!r} at batch {b} ({s['input_len']} + "
                f"{s['output_len']} tokens) needs {params + kv:,} bytes{tp} ({_human(params + kv)}: KV cache "
                f"{kv:,} + parameters {params:,}, {place.dtype}) at the parent's architecture, more than the "
                f"{memory_bytes:,.0f} bytes ({_human(memory_bytes)}) of {device_name}"
            )
    return over


def memory_rows(
    arch: cm.Arch, variants: list[tuple[str, str]], place: cm.Placement, multiple: int
) -> dict[str, tuple[int, int]]:
    """{variant: (parameter bytes, KV bytes per token per sequence)} on one GPU of the TP group."""
    return {
        v: (cm.param_bytes(v, arch, place, multiple), cm.kv_bytes_per_token(v, arch, place.weight_bytes, place.tp))
        for _, v in variants
    }


def all_variants(arch: cm.Arch, space: dict[str, Any]) -> list[tuple[str, str]]:
    attn, ffn = blocks.search_space(arch.shape, space)
    return [("attention", a) for a in attn] + [("ffn", f) for f in ffn] + [("non_block", NON_BLOCK)]


# ---- analytic ------------------------------------------------------------------------------------


def analytic_rows(
    arch: cm.Arch,
    space: dict[str, Any],
    scen: list[dict[str, Any]],
    dev: cm.Device,
    place: cm.Placement,
    multiple: int,
) -> list[dict[str, Any]]:
    variants = all_variants(arch, space)
    mem = memory_rows(arch, variants, place, multiple)
    rows = []
    for s in scen:
        kv_len = cm.decode_kv_len(s["input_len"], s["output_len"])
        for b in s["batch_sizes"]:
            for kind, v in variants:
                pre = cm.roofline_ms(*cm.prefill_work(v, arch, b, s["input_len"], place, multiple), dev, place.dtype)
                pre += 1e3 * cm.allreduce_s(v, arch, b, s["input_len"], place, dev)
                dec = cm.roofline_ms(*cm.decode_work(v, arch, b, kv_len, place, multiple), dev, place.dtype)
                dec += 1e3 * cm.allreduce_s(v, arch, b, 1, place, dev)
                rows.append(_row(kind, v, s, b, pre, dec, mem[v], dev.name, place))
    return rows


Interval = tuple[float, float, float]  # (value, lo, hi)


def _row(
    kind: str,
    v: str,
    s: dict[str, Any],
    b: int,
    pre: float | Interval,
    dec: float | Interval,
    mem: tuple[int, int],
    device: str,
    place: cm.Placement,
    noisy: bool = False,
) -> dict[str, Any]:
    """One costs.csv row; a time without an interval (estimates) has lo = hi = the time."""
    pre, dec = ((x, x, x) if isinstance(x, (int, float)) else x for x in (pre, dec))
    return {
        "kind": kind,
        "variant": v,
        "scenario": s["name"],
        "batch": b,
        "input_len": s["input_len"],
        "output_len": s["output_len"],
        "prefill_ms": pre[0],
        "decode_ms": dec[0],
        "param_bytes": mem[0],
        "kv_bytes_per_token": mem[1],
        "device": device,
        "dtype": place.dtype,
        "tp": place.tp,
        "prefill_ms_lo": pre[1],
        "prefill_ms_hi": pre[2],
        "decode_ms_lo": dec[1],
        "decode_ms_hi": dec[2],
        "noisy": noisy,
    }


# ---- measured ------------------------------------------------------------------------------------


def stack_config(
    parent_config: dict[str, Any], block: dict[str, Any] | None, n_layers: int, vocab_size: int | None = None
) -> DeciLMConfig:
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


def build_model(config: DeciLMConfig, device: torch.device, dtype: torch.dtype) -> DeciLMForCausalLM:
    import torch

    from puzzle.nemotron_nas import DeciLMForCausalLM

    torch.manual_seed(0)
    with torch.device(device):
        model = DeciLMForCausalLM(config)
    return model.to(dtype=dtype).eval()


def stack_specs(arch: cm.Arch, space: dict[str, Any]) -> list[tuple[str, tuple[str, str]]]:
    """(name, (attention, ffn)) of every stack timed: the empty layer, then every variant that is not a
    no-op with the other subblock a no-op (the parent's attention first)."""
    noops = (blocks.ATTN_NOOP, blocks.FFN_NOOP)
    stacks = [("empty", noops)]
    stacks += [
        (v, (v, blocks.FFN_NOOP) if k == "attention" else (blocks.ATTN_NOOP, v))
        for k, v in all_variants(arch, space)
        if k != "non_block" and v not in noops
    ]
    return stacks


def together_bytes(
    arch: cm.Arch, space: dict[str, Any], scen: list[dict[str, Any]], n: int, e: int, multiple: int
) -> int:
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


def costs_from_times(t: dict[Any, Any], n: int, num_layers: int, gqa: list[str], names: list[str]) -> dict[str, Any]:
    """One phase's costs (seconds) from the stacks' times: t["zero"] is the model without layers,
    t[(name, 1)] and t[(name, 2)] the stacks of N and 2N copies; plain numbers and numpy arrays
    (bootstrap resamples) alike. Returns every name's cost, the non-block part and the empty layer's
    cost e (key "empty"):

        cost(v) = (T_v(2N) - T_v(N)) / N - e,   e = that slope of the empty layer (at least 0)
        non_block = max(mean over the GQA attentions of 2 T(N) - T(2N), T(0 layers)) + L e

    (the intercept of KV-cached attention stacks is the fixed cost of a model with a KV cache:
    embeddings, RoPE, mask, cache bookkeeping, final norm, head; the model without layers is a floor
    against noise; every layer of a child pays the empty layer's call)."""
    slope = {v: (t[(v, 2)] - t[(v, 1)]) / n for v in ["empty", *names]}
    e = np.maximum(slope["empty"], 0.0)
    out = {v: slope[v] - e for v in names}
    fixed = np.maximum(sum(2 * t[(v, 1)] - t[(v, 2)] for v in gqa) / len(gqa), t["zero"])
    out[NON_BLOCK] = fixed + num_layers * e
    out["empty"] = e
    return out


class _Group:
    """Raw round times of models that were timed together (times[model][round] per phase)."""

    def __init__(self, keys: list[Any]) -> None:
        self.keys = keys
        self.times: tuple[list[list[float]], list[list[float]]] = ([[] for _ in keys], [[] for _ in keys])

    def add(self, pre: list[list[float]], dec: list[list[float]]) -> None:
        for mine, new in zip(self.times, (pre, dec)):
            for t, x in zip(mine, new):
                t.extend(x)

    @property
    def rounds(self) -> int:
        return len(self.times[0][0])

    def stats(self, statistic: str) -> dict[Any, tuple[float, float]]:
        pre, dec = (timing.summarize(t, statistic) for t in self.times)
        return {k: (pre[i], dec[i]) for i, k in enumerate(self.keys)}

    def resampled(self, statistic: str, resamples: int, seed: int) -> dict[Any, tuple[np.ndarray, np.ndarray]]:
        pre, dec = (timing.resampled(t, statistic, resamples, seed + k) for k, t in enumerate(self.times))
        return {k: (pre[i], dec[i]) for i, k in enumerate(self.keys)}


def measured_rows(
    parent_config: dict[str, Any],
    arch: cm.Arch,
    space: dict[str, Any],
    scen: list[dict[str, Any]],
    costs_cfg: dict[str, Any],
    device: torch.device,
    dtype_name: str,
    multiple: int,
    log: Callable[[str], None] = print,
    also: list[torch.nn.Module] = (),
    together: bool | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Measured rows of every variant x scenario x batch size, and what the sidecar records.

    Per (scenario, batch): T(N), T(2N) of a stack of every non-no-op variant (the other subblock a
    no-op) and of the empty layer, and T of the model without layers; costs from them by
    `costs_from_times`, each with the interval of a bootstrap over the rounds (`costs.interval`,
    `costs.bootstrap`). A (scenario, batch) where some variant's interval reaches 0 is timed again,
    `costs.repeats` more rounds each time, at most `costs.remeasure` times; what is still not
    clearly above 0 then stops the stage naming the rows (`costs.on_noise: stop`) or is written
    with noisy = True (`mark`).

    together (None = when all of them take under a quarter of the device's memory, see together_bytes):
    every stack and the model without layers are held at once and timed in the same rounds, so that
    the machine's drifts hit every variant alike; otherwise one variant's N and 2N stacks at a time.
    `also`: further models timed in the same rounds (a benchmark's whole models); their (prefill s,
    decode s) per (scenario, batch) come back in extra["also"].
    """
    import torch

    from puzzle.training import DTYPES

    dtype = DTYPES[dtype_name]
    place = cm.Placement(dtype_name)
    n = costs_cfg["n_copies"]
    statistic = costs_cfg.get("statistic", "median")
    level, resamples = costs_cfg.get("interval", 0.9), costs_cfg.get("bootstrap", 1000)
    timer = timing.Timer(device, costs_cfg["warmup"], costs_cfg["repeats"], statistic, costs_cfg.get("clock", "wall"))
    variants = all_variants(arch, space)
    mem = memory_rows(arch, variants, place, multiple)
    noops = (blocks.ATTN_NOOP, blocks.FFN_NOOP)
    if device.type == "cuda":
        dev_name = torch.cuda.get_device_name(device)
        free = float(torch.cuda.mem_get_info(device)[0])
    else:
        dev_name = f"cpu ({platform.processor() or platform.machine()})"
        free = device_memory_bytes(device)
    if together is None:
        together = together_bytes(arch, space, scen, n, place.weight_bytes, multiple) < 0.25 * free

    stacks = stack_specs(arch, space)
    names = [name for name, _ in stacks if name != "empty"]
    gqa = [v for k, v in variants if k == "attention" and blocks.kv_heads_of(v)]
    cases = [(s, b) for s in scen for b in s["batch_sizes"]]
    t0 = time.perf_counter()

    def build(pair: tuple[str, str]) -> list[torch.nn.Module]:
        block = blocks.block_config(*pair, arch.shape, multiple)
        return [build_model(stack_config(parent_config, block, k), device, dtype) for k in (n, 2 * n)]

    # units of models timed together: all of them at once, or the model without layers (a floor for
    # the fixed cost) with `also`, and then one variant's N and 2N stacks at a time
    base_keys = ["zero"] + [("also", i) for i in range(len(also))]
    units: dict[str, tuple[list[Any], Callable[[], list[torch.nn.Module]]]] = {}
    zero_and_also = lambda: [build_model(stack_config(parent_config, None, 0), device, dtype), *also]  # noqa: E731
    if together:
        keys = base_keys + [(name, k) for name, _ in stacks for k in (1, 2)]
        units["all"] = (keys, lambda: zero_and_also() + [m for _, pair in stacks for m in build(pair)])
    else:
        units["base"] = (base_keys, zero_and_also)
        for name, pair in stacks:
            units[name] = ([(name, 1), (name, 2)], lambda pair=pair: build(pair))
    kept = {}  # units whose models stay built: remeasuring them needs no rebuild
    groups = {(c, u): _Group(keys) for c in range(len(cases)) for u, (keys, _) in units.items()}

    def measure(unit: str, case_ids: list[int], attempt: int) -> None:
        models = kept.get(unit) or units[unit][1]()
        for c in case_ids:
            s, b = cases[c]
            groups[(c, unit)].add(
                *timing.time_models(models, b, s["input_len"], s["output_len"], timer, seed=2 * c + 1000 * attempt)
            )
        if together or unit == "base":
            kept[unit] = models
        elif device.type == "cuda":
            del models
            torch.cuda.empty_cache()

    def estimate(c: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """(point, resamples) of every cost of case c, per phase: {name: (prefill, decode)}."""
        point, boot = {}, {}
        for u in units:
            point.update(groups[(c, u)].stats(statistic))
            boot.update(groups[(c, u)].resampled(statistic, resamples, seed=17 * c + 7 * len(boot)))

        def derive(t: dict[Any, Any], k: int) -> dict[str, Any]:
            return costs_from_times({key: v[k] for key, v in t.items()}, n, arch.num_hidden_layers, gqa, names)

        return (
            {v: (derive(point, 0)[v], derive(point, 1)[v]) for v in [*names, NON_BLOCK, "empty"]},
            {v: tuple(timing.interval(derive(boot, k)[v], level) for k in (0, 1)) for v in [*names, NON_BLOCK]},
        )

    def noisy_rows(c: int, ci: dict[str, Any]) -> list[tuple[str, int]]:
        return [(v, k) for v in names for k in (0, 1) if ci[v][k][0] <= 0]

    for u in units:
        measure(u, list(range(len(cases))), 0)
        log(f"{u}: {time.perf_counter() - t0:.1f} s")
    results = {c: estimate(c) for c in range(len(cases))}
    for attempt in range(1, costs_cfg.get("remeasure", 2) + 1):
        noisy = {c: noisy_rows(c, results[c][1]) for c in results}
        noisy = {c: rows for c, rows in noisy.items() if rows}
        if not noisy:
            break
        redo = {"all"} if together else {"empty"} | {v for rows in noisy.values() for v, _ in rows}
        for u in sorted(redo):
            measure(u, sorted(noisy), attempt)
        for c in noisy:
            results[c] = estimate(c)
        log(
            f"timed again ({attempt}): {len(noisy)} cases with a difference not clearly above 0, "
            f"{time.perf_counter() - t0:.1f} s"
        )
    kept.clear()

    rows, noisy_names = [], []
    extra: dict[str, Any] = {"empty_layer_ms": {}, "rounds": {}}
    also_t: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for c, (s, b) in enumerate(cases):
        point, ci = results[c]
        key = f"{s['name']}@{b}"
        extra["empty_layer_ms"][key] = [1e3 * x for x in point["empty"]]
        extra["rounds"][key] = {u: groups[(c, u)].rounds for u in units}
        stats = groups[(c, "all" if together else "base")].stats(statistic)
        also_t[(s["name"], b)] = [stats[("also", i)] for i in range(len(also))]
        bad = {v for v, _ in noisy_rows(c, ci)}
        for kind, v in variants:
            if v in noops:
                pre = dec = (0.0, 0.0, 0.0)
            else:  # in ms; a time below 0 is noise: written as 0, and the interval reaching 0 says so
                pre, dec = (tuple(max(1e3 * float(x), 0.0) for x in (point[v][k], *ci[v][k])) for k in (0, 1))
            if v in bad:
                noisy_names.append(f"{key} {v} (prefill {_ms_interval(pre)}, decode {_ms_interval(dec)})")
            rows.append(_row(kind, v, s, b, pre, dec, mem[v], dev_name, place, noisy=v in bad))
    if noisy_names and costs_cfg.get("on_noise", "stop") == "stop":
        raise NoisyCostsError(
            f"costs: {len(noisy_names)} measured differences are not clearly above 0 after "
            f"{costs_cfg.get('remeasure', 2)} more measurements (costs.remeasure): {'; '.join(noisy_names[:6])}"
            f"{' ...' if len(noisy_names) > 6 else ''}; time on a quieter machine, raise costs.repeats or "
            "costs.n_copies, or write them marked noisy with costs.on_noise: mark"
        )
    extra["noisy_rows"] = noisy_names
    extra["device_name"] = dev_name
    extra["timed_together"] = together
    if also:
        extra["also"] = also_t
    return rows, extra


def _ms_interval(x: Interval) -> str:
    return f"{x[0]:.4f} ms in [{x[1]:.4f}, {x[2]:.4f}]"


# ---- stage ---------------------------------------------------------------------------------------


def device_memory_bytes(device: torch.device) -> float:
    import torch

    if device.type == "cuda":
        return float(torch.cuda.get_device_properties(device).total_memory)
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def run(
    cfg: dict[str, Any], parent_dir: str | os.PathLike, target: str, log: Callable[[str], None] = print
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """(costs table, sidecar dict) of one target."""
    import pandas as pd

    spec = target_spec(cfg, target)
    parent_config = read_parent_config(parent_dir)
    arch = cm.Arch.from_config(parent_config)
    space, multiple = cfg["search_space"], cfg["search_space"]["ffn"]["multiple_of"]
    scen = scenarios(cfg)
    meta: dict[str, Any] = {
        "target": target,
        "parent": str(parent_dir),
        "scenarios": scen,
        "decode_kv_len": "input_len + output_len // 2",
        "columns": {
            "prefill_ms": "prefill of the batch's prompts through one instance (its tp GPUs)",
            "decode_ms": "one decode step of the batch through one instance",
            "param_bytes": "parameters of one instance on one of its GPUs",
            "kv_bytes_per_token": "per token per sequence on one GPU",
            "tp": "GPUs per instance (tensor parallelism)",
            "*_lo, *_hi": "interval of the time (measured: bootstrap over rounds; estimates: the time)",
            "noisy": "measured difference not clearly above 0 (written under costs.on_noise: mark)",
        },
    }
    t0 = time.perf_counter()
    if spec["measure"]:
        import torch
        import transformers

        from puzzle.training import pick_device

        torch.set_num_threads(cfg["costs"].get("threads") or cfg["threads"])
        device = pick_device(cfg["device"])
        dtype = spec["dtype"] if spec["dtype"] != "auto" else ("bfloat16" if device.type == "cuda" else "float32")
        memory = spec["memory_gb"] * 1e9 if spec["memory_gb"] else device_memory_bytes(device)
        over = check_memory(arch, scen, cm.Placement(dtype), memory, f"device {device}", multiple)
        log(f"measuring on {device} ({dtype}, {torch.get_num_threads()} threads)")
        rows, extra = measured_rows(parent_config, arch, space, scen, cfg["costs"], device, dtype, multiple, log)
        c = cfg["costs"]
        meta.update(
            {
                "method": "measured: cost = (T(2N copies) - T(N copies)) / N - e (e: an empty layer's); "
                "non_block = max(mean over GQA variants of 2 T(N) - T(2N), T(0 layers)) + L e; "
                "T: statistic over rounds that time every stack once each, the round's common "
                "slowdown divided out (timing.py); interval: bootstrap over the rounds",
                "device": extra.pop("device_name"),
                "dtype": dtype,
                "tp": 1,
                "memory_bytes": memory,
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "python": platform.python_version(),
                "threads": torch.get_num_threads(),
                "repeats": c["repeats"],
                "warmup": c["warmup"],
                "n_copies": c["n_copies"],
                "statistic": c["statistic"],
                "interval": {
                    "level": c["interval"],
                    "bootstrap_resamples": c["bootstrap"],
                    "remeasure": c["remeasure"],
                    "on_noise": c["on_noise"],
                },
                "clock": {"wall": "wall clock (perf_counter)", "cpu": "process CPU time"}[c["clock"]],
                **extra,
            }
        )
    elif spec["system"]:
        from puzzle.aiconfigurator import aiconfigurator_rows

        dtype = spec["dtype"] if spec["dtype"] != "auto" else "bfloat16"
        place = cm.Placement(dtype, spec["tp"])
        variants = all_variants(arch, space)
        rows, extra = aiconfigurator_rows(
            parent_config,
            arch,
            space,
            scen,
            spec,
            target,
            multiple,
            _row,
            variants,
            memory_rows(arch, variants, place, multiple),
            log,
        )
        memory = spec["memory_gb"] * 1e9 if spec["memory_gb"] else extra["memory_bytes"]
        over = check_memory(arch, scen, place, memory, f"{spec['system']} at tp {spec['tp']}", multiple)
        meta.update({**extra, "memory_bytes": memory})
    else:
        try:
            dev = cm.device(
                spec["device"],
                spec["peak_tflops"],
                spec["bandwidth_gbs"],
                spec["memory_gb"],
                spec["fp8_tflops"],
                spec["interconnect_gbs"],
            )
            place = cm.Placement(spec["dtype"] if spec["dtype"] != "auto" else "bfloat16", spec["tp"])
            over = check_memory(arch, scen, place, dev.memory_gb * 1e9, dev.name, multiple)
            rows = analytic_rows(arch, space, scen, dev, place, multiple)
        except ValueError as err:
            if isinstance(err, config_mod.ConfigError):
                raise
            raise config_mod.ConfigError(f"config error: costs.targets.{target}: {err}") from None
        meta.update(
            {
                "method": "analytic roofline: max(flops / peak, bytes / bandwidth) per subblock on one GPU of tp, "
                "+ all-reduce at tp > 1 (cost_model.py)",
                "device": dev.name,
                "dtype": place.dtype,
                "tp": place.tp,
                "peak_tflops": dev.tflops(place.dtype),
                "bandwidth_gbs": dev.bandwidth_gbs,
                "memory_gb": dev.memory_gb,
                "interconnect_gbs": dev.interconnect_gbs,
            }
        )
    meta["parent_exceeds_memory"] = over
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
    show = frame[
        ["kind", "variant", "scenario", "batch", "prefill_ms", "decode_ms", "param_bytes", "kv_bytes_per_token"]
    ]
    print(show.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
