"""BLD stage: blockwise local distillation of every library entry of one layer (or a layer range).

Each entry is a Nemotron-NAS decoder layer (the child's own module class) holding the variant,
initialized from the parent (bld_init) and trained alone to reproduce the parent layer's output
y, with normalized MSE = MSE(out, y) / MSE(y, 0):

  decoupled attention variant a:  x -> h' + ffn_parent(ln2(h')), h' = x + a(ln1(x))   (FFN frozen)
  decoupled FFN variant f:        h -> h + f(ln2(h))      (a layer whose attention is a no-op)
  coupled composition (a, f):     x -> the whole layer [a, f]

The inputs x and h come from the activations stage's dump (stored) or from the frozen parent run
inside the job on token windows of the train shard (online; bld_teacher, chosen by
bld_plan.teacher_path); y is the parent layer applied to that input (see Teacher). Entries train
together, step by step, on the same batches (a function of (seed, step)); entries whose state
does not fit the GPU train in groups (bld_plan.layer_groups), each a pass of its own. A group
checkpoints by steps and by elapsed time, on SIGTERM/SIGUSR1 too, tied to a hash of its config
and inputs, so a killed or preempted job resumes to the same weights. Parent entries are copied
and no-op entries are empty; their held-out nMSE is recorded too (0, and the cost of removing the
subblock). Jobs are per layer (optionally per subblock kind), so a cluster runs layers in parallel.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import math
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.optim import Optimizer
from tqdm import tqdm

from puzzle import bld_init, bld_plan, blocks, library
from puzzle import config as config_mod
from puzzle.bld_teacher import Inputs, OnlineInputs, StoredInputs
from puzzle.io import read_json, save_safetensors, write_json
from puzzle.training import adamw, cosine_lr, load_checkpoint, pick_device, resolve_dtype, save_checkpoint, set_lr

if TYPE_CHECKING:  # transformers is imported by the functions that need it
    from transformers import PretrainedConfig

    from puzzle.nemotron_nas.configuration_decilm import DeciLMConfig

ATTN_PREFIXES, FFN_PREFIXES = ("input_layernorm.", "self_attn."), ("post_attention_layernorm.", "mlp.")
RoPE = tuple[torch.Tensor, torch.Tensor]  # (cos, sin) of every position of a window
Source = StoredInputs | OnlineInputs  # where a step's layer inputs come from (bld_teacher)


# ---- the parent ----------------------------------------------------------------------------------


def parent_layer_tensors(parent_dir: str | Path, layer: int) -> dict[str, torch.Tensor]:
    """Layer `layer`'s tensors of an HF safetensors checkpoint (single file or sharded), without
    the `model.layers.{i}.` prefix; only that layer's bytes are read."""
    from safetensors import safe_open

    d, prefix = Path(parent_dir), f"model.layers.{layer}."
    index = d / "model.safetensors.index.json"
    if index.exists():
        files = sorted({f for k, f in read_json(index)["weight_map"].items() if k.startswith(prefix)})
    else:
        files = ["model.safetensors"]
    out = {}
    for name in files:
        with safe_open(str(d / name), framework="pt") as f:
            out.update({k[len(prefix) :]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)})
    if not out:
        raise ValueError(f"{parent_dir}: no tensors for layer {layer}")
    return out


def parent_configs(parent_dir: str | Path) -> tuple[PretrainedConfig, DeciLMConfig]:
    """(the parent's HF config, its uniform Nemotron-NAS config, running sdpa)."""
    from transformers import AutoConfig

    from puzzle.convert import decilm_config_from_llama

    hf = AutoConfig.from_pretrained(str(parent_dir))
    deci = decilm_config_from_llama(hf)
    if deci.attention_bias or deci.mlp_bias:
        raise ValueError(f"{parent_dir}: BLD initializes bias-free (Llama-style) subblocks; this parent has biases")
    # Without a mask, sdpa is causal; eager (the bare-config default) would not be.
    deci._attn_implementation = "sdpa"
    return hf, deci


def position_embeddings(hf_config: PretrainedConfig, seq_len: int, device: torch.device) -> RoPE:
    """The parent's RoPE (cos, sin) for positions 0..seq_len-1, shared by every window."""
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    rope = LlamaRotaryEmbedding(config=hf_config).to(device)
    probe = torch.zeros(1, seq_len, 1, device=device)
    return rope(probe, torch.arange(seq_len, device=device)[None])


# ---- entries -------------------------------------------------------------------------------------


def build_layer(
    deci: DeciLMConfig, layer: int, attn: str, ffn: str, shape: blocks.ParentShape, multiple: int,
    parent: dict[str, torch.Tensor], mean_abs_act: torch.Tensor | None = None,
) -> torch.nn.Module:
    """A Nemotron-NAS decoder layer [attn, ffn] initialized from the parent layer's tensors."""
    from puzzle.nemotron_nas import DeciLMDecoderLayer

    config = deci.with_block_config(layer, blocks.block_config(attn, ffn, shape, multiple))
    module = DeciLMDecoderLayer(config, layer)
    tensors = {
        **bld_init.init_attention(attn, parent, shape),
        **bld_init.init_ffn(ffn, parent, config.intermediate_size_of(layer), mean_abs_act),
    }
    module.load_state_dict(tensors, strict=True)
    return module


class Entry:
    """One library entry of one layer: its module, the parent activation it reads, which
    parameters train and which tensors it saves.

    Decoupled, an attention variant runs with the parent's FFN, frozen, and reads x; an FFN
    variant reads h, the parent's FFN input, in a layer whose attention is a no-op."""

    def __init__(
        self, name: str, layer: int, deci: DeciLMConfig, shape: blocks.ParentShape, multiple: int,
        parent: dict[str, torch.Tensor], mean_abs_act: torch.Tensor | None,
    ) -> None:
        self.name, self.layer = name, layer
        self.key = f"layer_{layer}/{name}"  # unique within a job that owns several layers
        attn, ffn = library.subblocks(name)
        self.kind = "block" if attn and ffn else blocks.kind_of(attn or ffn)
        self.block_config = library.block_config(name, shape, multiple)
        self.init = bld_init.describe((attn, ffn), shape)
        self.trains = library.needs_training(name, shape)
        self.input = "x" if attn else "h"
        run_attn, run_ffn = attn or blocks.ATTN_NOOP, ffn or blocks.parent_variants(shape)[1]
        self.module = build_layer(deci, layer, run_attn, run_ffn, shape, multiple, parent, mean_abs_act)
        frozen = () if ffn else FFN_PREFIXES
        for pname, p in self.module.named_parameters():
            p.requires_grad_(self.trains and not pname.startswith(frozen))
        self.saved = (ATTN_PREFIXES if attn else ()) + (FFN_PREFIXES if ffn else ())

    def tensors(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """The entry's subblock tensors under library names (the frozen parent FFN is not saved)."""
        state = self.module.state_dict()
        return {k: v.detach().to("cpu", dtype) for k, v in state.items() if k.startswith(self.saved)}

    def trainable_params(self) -> int:
        return sum(p.numel() for p in self.module.parameters() if p.requires_grad)


class Teacher:
    """The parent layer as a function of each input: x -> y (whole layer) and h -> y (FFN half).
    Targets are recomputed from the given (stored and rounded, or online) input, so the storage
    precision never enters the loss: a parent entry scores exactly 0 and every error is the
    variant's own."""

    def __init__(self, deci: DeciLMConfig, layer: int, shape: blocks.ParentShape, multiple: int,
                 parent: dict[str, torch.Tensor], device: torch.device) -> None:
        attn, ffn = blocks.parent_variants(shape)
        self.device = device
        self.layers = {
            "x": build_layer(deci, layer, attn, ffn, shape, multiple, parent).to(device).eval(),
            "h": build_layer(deci, layer, blocks.ATTN_NOOP, ffn, shape, multiple, parent).to(device).eval(),
        }
        for module in self.layers.values():
            module.requires_grad_(False)

    @torch.no_grad()
    def __call__(self, name: str, inputs: torch.Tensor, pe: RoPE) -> torch.Tensor:
        return forward(self.layers[name], inputs, pe)


# ---- training ------------------------------------------------------------------------------------


def batch_ids(windows: int, batch: int, seed: int, step: int) -> np.ndarray:
    """The windows of one step, shared by every entry of every layer: a function of (seed, step)
    only. Passes over the pool are seeded permutations read `batch` at a time, so each window
    is seen once per pass (the online pool holds steps x batch windows: each exactly once)."""
    pos = np.arange(step * batch, (step + 1) * batch)
    passes, offsets = np.divmod(pos, windows)
    return np.sort([_permutation(windows, seed, int(p))[o] for p, o in zip(passes, offsets)])


@functools.lru_cache(maxsize=4)
def _permutation(windows: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(windows)


def steps_of(bld: dict[str, Any], seq_len: int) -> int:
    return max(1, math.ceil(bld["tokens"] / (bld["batch_size"] * seq_len)))


def nmse(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (out - target).pow(2).mean() / target.pow(2).mean()


def forward(module: torch.nn.Module, inputs: torch.Tensor, pe: RoPE) -> torch.Tensor:
    return module(inputs, position_embeddings=pe, attention_mask=None)


def autocast(device: torch.device, dtype: torch.dtype) -> torch.autocast:
    """bf16 compute where asked (bld.dtype; a GPU by default); weights, optimizer and loss stay fp32."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)


@torch.no_grad()
def targets(teachers: dict[int, Teacher], inputs: Inputs, entries: list[Entry], pe: RoPE) -> Inputs:
    """The parent layer's output from each input the entries read, once per layer and input."""
    need = {(e.layer, e.input) for e in entries}
    return {layer: {n: teachers[layer](n, x, pe).float() for n, x in got.items() if (layer, n) in need}
            for layer, got in inputs.items()}


@torch.no_grad()
def evaluate(entries: list[Entry], teachers: dict[int, Teacher], valid: StoredInputs, pe: RoPE, batch: int,
             dtype: torch.dtype) -> dict[str, float]:
    """Each entry's nMSE over every held-out window (sums over all tokens, not a mean of batch ratios)."""
    err, ref = dict.fromkeys([e.key for e in entries], 0.0), dict.fromkeys([e.key for e in entries], 0.0)
    device = next(iter(teachers.values())).device
    for b in range(0, valid.windows, batch):
        with autocast(device, dtype):
            inputs = valid(range(b, min(b + batch, valid.windows)))
            ys = targets(teachers, inputs, entries, pe)
            for e in entries:
                y = ys[e.layer][e.input]
                out = forward(e.module, inputs[e.layer][e.input], pe).float()
                err[e.key] += (out - y).double().pow(2).sum().item()
                ref[e.key] += y.double().pow(2).sum().item()
    return {n: err[n] / ref[n] for n in err}


def fingerprint(path: str | os.PathLike) -> list[list[str | int]]:
    """(name, size, mtime) of a file or of every file under a folder: a remade input changes it."""
    p = Path(path)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    return [[str(f.relative_to(p)) if p.is_dir() else f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]


class Checkpoint:
    """A group's resumable training state, tied to a hash of its recipe (config and inputs).

    Each save is a new `step_{n}/` (every entry's module and optimizer), then `latest.json`
    (step, curves, recipe hash) is written atomically and older saves are removed, so a job killed
    at any point finds one consistent step. A checkpoint made from another recipe is discarded
    with a log line: a 128-step run killed and rerun at 8 steps must not keep the 128-step weights."""

    def __init__(self, root: Path, recipe: dict[str, Any]) -> None:
        self.root = root
        self.recipe = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()

    def restore(self, entries: list[Entry], optimizers: list[Optimizer]) -> tuple[int, dict[str, Any] | None]:
        latest = self.root / "latest.json"
        if not latest.exists():
            return 0, None
        got = read_json(latest)
        if got["recipe"] != self.recipe:
            print(f"bld: discarding the checkpoint {self.root} (step {got['step']}): its config or inputs differ")
            shutil.rmtree(self.root)
            return 0, None
        for e, opt in zip(entries, optimizers):
            load_checkpoint(self.root / f"step_{got['step']}" / e.key, e.module, opt)
        return int(got["step"]), got["state"]

    def save(self, entries: list[Entry], optimizers: list[Optimizer], step: int, state: dict[str, Any]) -> None:
        here = self.root / f"step_{step}"
        for e, opt in zip(entries, optimizers):
            save_checkpoint(here / e.key, e.module, opt, step)
        write_json(self.root / "latest.json", {"step": step, "recipe": self.recipe, "state": state})
        for old in self.root.glob("step_*"):
            if old != here:
                shutil.rmtree(old)


class StopSignal:
    """SIGTERM or SIGUSR1 (SLURM preemption or time limit with `--signal`) asks the training loop
    to checkpoint after the current step and exit; the requeued or rerun job resumes there."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self) -> None:
        self.received: int | None = None

    def __enter__(self) -> StopSignal:
        self._before = {}
        if threading.current_thread() is threading.main_thread():
            self._before = {s: signal.signal(s, self._set) for s in self.SIGNALS}
        return self

    def _set(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum

    def __exit__(self, *exc: Any) -> None:
        for s, handler in self._before.items():
            signal.signal(s, handler)


def train_group(
    entries: list[Entry],
    teachers: dict[int, Teacher],
    data: tuple[Source, StoredInputs],
    pe: RoPE,
    bld: dict[str, Any],
    seed: int,
    ckpt: Checkpoint,
    stop: StopSignal,
    dtype: torch.dtype = torch.float32,
) -> dict[str, dict[str, Any]]:
    """Train entries together, step by step on the same batches (resuming from `ckpt`); their metrics.

    One step: the source gives every owned layer's inputs for the step's windows, the teachers
    their targets, then each entry takes one optimizer step on them."""
    source, valid = data
    seq, batch = source.seq_len, bld["batch_size"]
    steps = steps_of(bld, seq)
    warmup = round(bld["warmup_frac"] * steps)
    device = next(iter(teachers.values())).device
    optimizers = [adamw(e.module, bld["lr"], bld["weight_decay"]) for e in entries]
    start, state = ckpt.restore(entries, optimizers)
    if state is None:
        init = evaluate(entries, teachers, valid, pe, batch, dtype)
        state = {"curves": {n: [{"step": 0, "nmse": v}] for n, v in init.items()}, "wall_s": 0.0}
    # Pipelined ranks step together: a rank whose checkpoint is newer only runs its part of the
    # parent for the steps the others redo.
    first = _across_ranks(start, dist_op="MIN")
    t0 = saved = time.perf_counter()
    wall0 = state["wall_s"]  # time spent by earlier, interrupted runs
    for e in entries:
        e.module.train()
    names = ", ".join(e.name for e in entries)
    bar = tqdm(
        range(first, steps),
        desc=f"layers {sorted(teachers)} [{names}]",
        unit="step",
        initial=first,
        total=steps,
        mininterval=2,
    )
    for step in bar:
        lr = cosine_lr(step, steps, bld["lr"], warmup, bld["min_lr_ratio"])
        with autocast(device, dtype):
            inputs = source(batch_ids(source.windows, batch, seed, step))
        stopping = _across_ranks(int(stop.received is not None), dist_op="MAX")  # one rank stops, all stop
        if step < start:  # this rank's checkpoint is newer: its part of the parent runs for the others
            if stopping:
                raise SystemExit(f"bld: stop signal at step {step + 1}: this rank's checkpoint (step {start}) stays")
            continue
        with autocast(device, dtype):
            ys = targets(teachers, inputs, entries, pe)
        for e, opt in zip(entries, optimizers):
            set_lr(opt, lr)
            with autocast(device, dtype):
                out = forward(e.module, inputs[e.layer][e.input], pe)
            loss = nmse(out.float(), ys[e.layer][e.input])
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in e.module.parameters() if p.requires_grad], bld["grad_clip"])
            opt.step()
            opt.zero_grad(set_to_none=True)
        done = step + 1
        if done % bld["eval_every"] == 0 or done == steps:
            for n, v in evaluate(entries, teachers, valid, pe, batch, dtype).items():
                state["curves"][n].append({"step": done, "nmse": v})
            bar.set_postfix(last_train=f"{loss.item():.3g}")
        every, seconds = bld["checkpoint_every"], bld["checkpoint_seconds"]
        late = seconds is not None and time.perf_counter() - saved >= seconds
        if done % every == 0 or done == steps or late or stopping:
            state["wall_s"] = wall0 + time.perf_counter() - t0
            ckpt.save(entries, optimizers, done, state)
            saved = time.perf_counter()
        if stopping and done < steps:
            raise SystemExit(f"bld: stop signal at step {done}/{steps}: checkpoint saved, a rerun resumes")
    for e in entries:
        e.module.eval()
    return {
        e.key: {
            "tokens": steps * batch * seq,
            "steps": steps,
            "warmup_steps": warmup,
            "curve": state["curves"][e.key],
            "wall_s": state["wall_s"],
        }
        for e in entries
    }


def _across_ranks(value: int, dist_op: str) -> int:
    """`value` reduced over the job's ranks (itself in a one-process job)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return value
    t = torch.tensor([value], dtype=torch.int64, device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t, op=getattr(dist.ReduceOp, dist_op))
    return int(t.item())


def rank_layers(layers: list[int]) -> tuple[int, int, list[int]]:
    """(rank, world size, this rank's contiguous share of the job's layers); joins the process
    group when launched with several ranks (torchrun: gloo on CPU, nccl on GPUs)."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, layers
    if world > len(layers):
        raise ValueError(f"{world} ranks for layers {layers[0]}-{layers[-1]}: at most one rank per layer")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank()
    return rank, world, [int(x) for x in np.array_split(np.array(layers), world)[rank]]


# ---- the stage -----------------------------------------------------------------------------------


@torch.no_grad()
def mean_abs_intermediate(
    teachers: dict[int, Teacher], source: Source, windows: int, batch: int
) -> dict[int, torch.Tensor]:
    """Per layer, mean |act(gate(n)) * up(n)| per parent FFN channel, n = ln2(h), over the first
    `windows` training windows (the activity term of the channel contribution)."""
    total: dict[int, torch.Tensor | float] = dict.fromkeys(teachers, 0.0)
    count, n_win = 0, min(windows, source.windows)
    for b in range(0, n_win, batch):
        for layer, got in source(range(b, min(b + batch, n_win)), ("h",)).items():
            block = teachers[layer].layers["h"]
            n = block.post_attention_layernorm(got["h"])
            act = block.mlp.act_fn(block.mlp.gate_proj(n)) * block.mlp.up_proj(n)
            total[layer] = total[layer] + act.abs().flatten(0, -2).sum(0)
        count += act.shape[0] * act.shape[1]
    return {layer: (t / count).cpu() for layer, t in total.items()}


def write_entry(library_dir: str | Path, entry: Entry, metrics: dict[str, Any], dtype: torch.dtype) -> None:
    """`{entry}.safetensors` (tensors + variant and block config in the metadata), then `{entry}.json`
    (with the safetensors file's size and sha256)."""
    meta = {
        "format": "puzzle-library/1",
        "layer": str(entry.layer),
        "variant": entry.name,
        "kind": entry.kind,
        "block_config": json.dumps(entry.block_config, sort_keys=True),
    }
    tensors = entry.tensors(dtype)
    path = library.entry_path(library_dir, entry.layer, entry.name)
    save_safetensors(path, tensors, meta)
    library.write_entry_json(path, {**metrics, "params": sum(t.numel() for t in tensors.values())})


def parse_layers(text: str) -> list[int]:
    """`3` or a contiguous range `0-3` (the layers one job owns)."""
    first, _, last = text.partition("-")
    return list(range(int(first), int(last or first) + 1))


def run(
    cfg: dict[str, Any],
    parent_dir: str,
    valid_dir: str,
    layers: list[int],
    library_dir: str,
    train: str | None = None,
    shard: str | None = None,
    kind: str | None = None,
) -> list[dict[str, Any]]:
    """Initialize and train (or copy) every library entry of `layers`; returns their metrics.

    The training inputs come from the stored activations `train` or, online, from the parent run
    on windows of the token shard `shard`: bld_plan.teacher_path decides which."""
    bld, seed = cfg["bld"], cfg["seed"]
    if kind and bld["mode"] == "coupled":
        raise config_mod.ConfigError(f"config error: --kind {kind}: bld.mode = coupled trains whole blocks")
    torch.set_num_threads(cfg["threads"])
    rank, world, layers = rank_layers(layers)
    device = pick_device(cfg["device"])
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dtype = resolve_dtype(bld["dtype"], device)
    hf, deci = parent_configs(parent_dir)
    shape = library.parent_shape(hf.to_dict())
    if deci.head_dim != shape.head_dim:
        raise ValueError(f"{parent_dir}: head_dim {deci.head_dim} != hidden / heads; KV pooling assumes equal")
    if not 0 <= layers[0] <= layers[-1] < shape.num_hidden_layers:
        raise ValueError(f"layers {layers[0]}-{layers[-1]}: the parent has layers 0..{shape.num_hidden_layers - 1}")
    plan = bld_plan.teacher_path(cfg, hf.to_dict())
    given = {"stored": (train, "--train ACTIVATIONS"), "online": (shard, "--shard TRAIN_SHARD")}[plan.path]
    if given[0] is None:
        raise config_mod.ConfigError(f"config error: bld.teacher: {plan.reason}, so BLD needs {given[1]}")
    print(f"bld: layers {layers[0]}-{layers[-1]}, teacher {plan.path}: {plan.reason}", flush=True)
    multiple = cfg["search_space"]["ffn"]["multiple_of"]
    names = library.entries(cfg, shape, kind)
    raw = {i: parent_layer_tensors(parent_dir, i) for i in layers}
    save_dtype = next(iter(raw[layers[0]].values())).dtype
    parent = {i: {k: v.float() for k, v in t.items()} for i, t in raw.items()}
    valid = StoredInputs(valid_dir, layers, device)
    if plan.path == "stored":
        source: Source = StoredInputs(train, layers, device)
    else:
        windows = steps_of(bld, valid.seq_len) * bld["batch_size"]
        source = OnlineInputs(
            parent_dir,
            shard,
            layers,
            windows,
            valid.seq_len,
            device,
            torch.float32 if device.type == "cpu" else torch.bfloat16,
            rank,
            world,
        )
    if source.seq_len != valid.seq_len:
        raise ValueError(f"seq_len differs: {source.seq_len} (train) vs {valid.seq_len} (valid)")
    pe = position_embeddings(hf, valid.seq_len, device)
    teachers = {i: Teacher(deci, i, shape, multiple, parent[i], device) for i in layers}
    pruned = any(blocks.ffn_pct_of(f or "") not in (None, 100) for _, f in map(library.subblocks, names))
    act = mean_abs_intermediate(teachers, source, bld["init_windows"], bld["batch_size"]) if pruned else {}
    trained = [n for n in names if library.needs_training(n, shape)]
    groups = bld_plan.layer_groups(cfg, hf.to_dict(), trained, plan.path)
    ckpt_root = Path(library_dir) / ".bld_checkpoint" / f"layers_{layers[0]}-{layers[-1]}_{kind or 'all'}"
    recipe_base = {
        "bld": {k: v for k, v in bld.items() if k not in ("checkpoint_every", "checkpoint_seconds", "gpu_memory_gb")},
        "search_space": cfg["search_space"],
        "seed": seed,
        "seq_len": valid.seq_len,
        "teacher": plan.path,
        "dtype": str(dtype),
        "parent": fingerprint(parent_dir),
        "train": fingerprint(train or shard),
        "valid": fingerprint(valid_dir),
    }
    common = {
        "mode": bld["mode"],
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "teacher": plan.path,
        "teacher_reason": plan.reason,
        "train_source": str(train or shard),
        "valid_activations": str(valid_dir),
        "train_windows": source.windows,
        "valid_windows": valid.windows,
        "batch_size": bld["batch_size"],
        "lr": bld["lr"],
        "target": "parent layer recomputed from the stored or online input",
    }

    def build(name: str, layer: int) -> Entry:
        entry = Entry(name, layer, deci, shape, multiple, parent[layer], act.get(layer))
        entry.module.to(device)
        return entry

    results: dict[tuple[int, str], dict[str, Any]] = {}
    with StopSignal() as stop:
        for g, group in enumerate(groups):
            entries = [build(n, i) for i in layers for n in group]
            ckpt = Checkpoint(ckpt_root / f"group_{g}", {**recipe_base, "layers": layers, "entries": group})
            got = train_group(entries, teachers, (source, valid), pe, bld, seed, ckpt, stop, dtype)
            for e in entries:
                results[e.layer, e.name] = _finish(library_dir, e, {**common, "group": g, **got[e.key]}, save_dtype)
    for i in layers:
        entries = [build(n, i) for n in names if n not in trained]
        t0 = time.perf_counter()
        values = evaluate(entries, teachers, valid, pe, bld["batch_size"], dtype) if entries else {}
        for e in entries:
            got = {
                "tokens": 0,
                "steps": 0,
                "curve": [{"step": 0, "nmse": values[e.key]}],
                "wall_s": time.perf_counter() - t0,
            }
            results[i, e.name] = _finish(library_dir, e, {**common, **got}, save_dtype)
    # Checkpoints go only once every entry of the job is written: a job killed between groups
    # loses its outputs to Snakemake, but not the training behind them.
    shutil.rmtree(ckpt_root, ignore_errors=True)
    with contextlib.suppress(OSError):  # not empty: other jobs' (or ranks') checkpoints
        ckpt_root.parent.rmdir()
    return [results[i, n] for i in layers for n in names]


def _finish(library_dir: str, entry: Entry, got: dict[str, Any], save_dtype: torch.dtype) -> dict[str, Any]:
    head = {
        "layer": entry.layer,
        "variant": entry.name,
        "kind": entry.kind,
        "init": entry.init,
        "block_config": entry.block_config,
        "trainable_params": entry.trainable_params(),
    }
    metrics = {**head, **got, "nmse_init": got["curve"][0]["nmse"], "nmse_final": got["curve"][-1]["nmse"]}
    metrics["wall_s"] = round(metrics["wall_s"], 3)
    write_entry(library_dir, entry, metrics, save_dtype)
    return metrics


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config_mod.add_arguments(parser)
    parser.add_argument("--parent", required=True, help="parent HF checkpoint folder")
    parser.add_argument("--train", help="training activations (activations/<corpus>/train); the stored teacher")
    parser.add_argument("--shard", help="train token shard (data/<corpus>/train.bin); the online teacher")
    parser.add_argument("--valid", required=True, help="held-out activations (activations/<corpus>/valid)")
    parser.add_argument("--layer", required=True, type=parse_layers, help="the layer (or range A-B) to build")
    parser.add_argument("--kind", choices=["attention", "ffn"], help="decoupled only: just this subblock kind")
    parser.add_argument("--out", required=True, help="library folder (results/<experiment>/library)")


def main(args: argparse.Namespace) -> None:
    cfg = config_mod.from_args(args)
    for m in run(cfg, args.parent, args.valid, args.layer, args.out, args.train, args.shard, args.kind):
        print(
            f"layer {m['layer']} {m['variant']:<24} nMSE {m['nmse_init']:.3g} -> {m['nmse_final']:.3g} "
            f"({m['steps']} steps, {m['wall_s']:.1f} s, {m['teacher']}, {m['init']})"
        )
