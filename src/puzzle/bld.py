"""BLD stage: blockwise local distillation of every library entry of one layer.

Each entry is a Nemotron-NAS decoder layer (the child's own module class) holding the variant,
initialized from the parent (bld_init) and trained alone on stored parent activations to
reproduce the parent layer's output y, with normalized MSE = MSE(out, y) / MSE(y, 0):

  decoupled attention variant a:  x -> h' + ffn_parent(ln2(h')), h' = x + a(ln1(x))   (FFN frozen)
  decoupled FFN variant f:        h -> h + f(ln2(h))      (a layer whose attention is a no-op)
  coupled composition (a, f):     x -> the whole layer [a, f]

y is the parent layer applied, in fp32, to the same stored input (see Teacher). Batches are a
function of (seed, layer, step) and each entry checkpoints its module and optimizer, so a killed
job resumes to the same weights. Parent entries are copied and no-op entries are empty; their
held-out nMSE is recorded too (0, and the cost of removing the subblock). Jobs are per layer
(optionally per subblock kind), so a cluster runs layers in parallel.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from puzzle import blocks, bld_init
from puzzle import config as config_mod
from puzzle import library
from puzzle.activations import LayerActivations
from puzzle.io import read_json, save_safetensors, write_json
from puzzle.training import adamw, cosine_lr, load_checkpoint, pick_device, save_checkpoint, set_lr

ATTN_PREFIXES, FFN_PREFIXES = ("input_layernorm.", "self_attn."), ("post_attention_layernorm.", "mlp.")


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


def parent_configs(parent_dir: str | Path) -> tuple[Any, Any]:
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


def position_embeddings(hf_config: Any, seq_len: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The parent's RoPE (cos, sin) for positions 0..seq_len-1, shared by every window."""
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    rope = LlamaRotaryEmbedding(config=hf_config).to(device)
    probe = torch.zeros(1, seq_len, 1, device=device)
    return rope(probe, torch.arange(seq_len, device=device)[None])


# ---- entries -------------------------------------------------------------------------------------


def build_layer(
    deci: Any, layer: int, attn: str, ffn: str, shape: blocks.ParentShape, multiple: int,
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
    """One library entry of one layer: its module, the stored activation it reads, which
    parameters train and which tensors it saves.

    Decoupled, an attention variant runs with the parent's FFN, frozen, and reads x; an FFN
    variant reads h, the parent's FFN input, in a layer whose attention is a no-op."""

    def __init__(
        self, name: str, layer: int, deci: Any, shape: blocks.ParentShape, multiple: int,
        parent: dict[str, torch.Tensor], mean_abs_act: torch.Tensor | None,
    ) -> None:
        self.name, self.layer = name, layer
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
    """The parent layer as a function of each stored input: x -> y (whole layer) and h -> y (FFN
    half). Targets are recomputed in fp32 from the stored, rounded input, so the storage precision
    never enters the loss: a parent entry scores exactly 0 and every error is the variant's own."""

    def __init__(self, deci: Any, layer: int, shape: blocks.ParentShape, multiple: int,
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
    def __call__(self, name: str, inputs: torch.Tensor, pe: Any) -> torch.Tensor:
        return forward(self.layers[name], inputs, pe)


# ---- training ------------------------------------------------------------------------------------


def batch_ids(windows: int, batch: int, seed: int, layer: int, step: int) -> np.ndarray:
    """The training windows of one step: a function of (seed, layer, step) only."""
    rng = np.random.default_rng([seed, layer, step])
    return np.sort(rng.choice(windows, size=batch, replace=batch > windows))


def nmse(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (out - target).pow(2).mean() / target.pow(2).mean()


def forward(module: torch.nn.Module, inputs: torch.Tensor, pe: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return module(inputs, position_embeddings=pe, attention_mask=None)


def load_batch(
    acts: LayerActivations, entry: Entry, teacher: Teacher, ids: Any, pe: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """(entry input, parent target) of windows `ids`, in fp32 on the teacher's device."""
    inputs = acts.get((entry.input,), ids)[entry.input].to(teacher.device, torch.float32)
    return inputs, teacher(entry.input, inputs, pe)


@torch.no_grad()
def evaluate(entry: Entry, teacher: Teacher, valid: LayerActivations, pe: Any, batch: int) -> float:
    """nMSE over every held-out window (sums over all tokens, not a mean of batch ratios)."""
    err = ref = 0.0
    for b in range(0, len(valid), batch):
        inputs, y = load_batch(valid, entry, teacher, range(b, min(b + batch, len(valid))), pe)
        err += (forward(entry.module, inputs, pe) - y).double().pow(2).sum().item()
        ref += y.double().pow(2).sum().item()
    return err / ref


def train_entry(
    entry: Entry,
    teacher: Teacher,
    data: tuple[LayerActivations, LayerActivations],
    pe: Any,
    bld: dict[str, Any],
    seed: int,
    ckpt: Path,
) -> dict[str, Any]:
    """Train one entry (resuming from `ckpt` if an earlier run left one); returns its metrics."""
    train, valid = data
    seq, batch = train.meta["seq_len"], bld["batch_size"]
    steps = max(1, math.ceil(bld["tokens"] / (batch * seq)))
    warmup = round(bld["warmup_frac"] * steps)
    optimizer = adamw(entry.module, bld["lr"], bld["weight_decay"])
    t0 = time.perf_counter()
    start, state = load_checkpoint(ckpt, entry.module, optimizer)
    if state is None:
        state = {"curve": [{"step": 0, "nmse": evaluate(entry, teacher, valid, pe, batch)}], "wall_s": 0.0}
    params = [p for p in entry.module.parameters() if p.requires_grad]
    wall0 = state["wall_s"]  # time spent by earlier, interrupted runs
    entry.module.train()
    bar = tqdm(range(start, steps), desc=f"layer {entry.layer} {entry.name}", unit="step", initial=start,
               total=steps, mininterval=2)
    for step in bar:
        set_lr(optimizer, cosine_lr(step, steps, bld["lr"], warmup, bld["min_lr_ratio"]))
        ids = batch_ids(len(train), batch, seed, entry.layer, step)
        inputs, y = load_batch(train, entry, teacher, ids, pe)
        loss = nmse(forward(entry.module, inputs, pe), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, bld["grad_clip"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        if done % bld["eval_every"] == 0 or done == steps:
            state["curve"].append({"step": done, "nmse": evaluate(entry, teacher, valid, pe, batch)})
            bar.set_postfix(train=f"{loss.item():.3g}", valid=f"{state['curve'][-1]['nmse']:.3g}")
        if done % bld["checkpoint_every"] == 0 or done == steps:
            state["wall_s"] = wall0 + time.perf_counter() - t0
            save_checkpoint(ckpt, entry.module, optimizer, done, state)
    entry.module.eval()
    return {"tokens": steps * batch * seq, "steps": steps, "warmup_steps": warmup, **state}


def measure_entry(entry: Entry, teacher: Teacher, valid: LayerActivations, pe: Any, batch: int) -> dict[str, Any]:
    """Metrics of an entry that is copied or empty: its held-out nMSE, nothing trained."""
    t0 = time.perf_counter()
    value = evaluate(entry, teacher, valid, pe, batch)
    return {"tokens": 0, "steps": 0, "curve": [{"step": 0, "nmse": value}], "wall_s": time.perf_counter() - t0}


# ---- the stage -----------------------------------------------------------------------------------


@torch.no_grad()
def mean_abs_intermediate(teacher: Teacher, train: LayerActivations, windows: int, batch: int) -> torch.Tensor:
    """Mean |act(gate(n)) * up(n)| per parent FFN channel, n = ln2(h), over the first `windows`
    training windows (the activity term of the channel contribution)."""
    block = teacher.layers["h"]
    total, count, n_win = 0.0, 0, min(windows, len(train))
    for b in range(0, n_win, batch):
        h = train.get(("h",), range(b, min(b + batch, n_win)))["h"].to(teacher.device, torch.float32)
        n = block.post_attention_layernorm(h)
        act = block.mlp.act_fn(block.mlp.gate_proj(n)) * block.mlp.up_proj(n)
        total = total + act.abs().flatten(0, -2).sum(0)
        count += act.shape[0] * act.shape[1]
    return (total / count).cpu()


def write_entry(library_dir: str | Path, entry: Entry, metrics: dict[str, Any], dtype: torch.dtype) -> None:
    """`{entry}.safetensors` (tensors + variant and block config in the metadata), then `{entry}.json`."""
    meta = {
        "format": "puzzle-library/1",
        "layer": str(entry.layer),
        "variant": entry.name,
        "kind": entry.kind,
        "block_config": json.dumps(entry.block_config, sort_keys=True),
    }
    tensors = entry.tensors(dtype)
    save_safetensors(library.entry_path(library_dir, entry.layer, entry.name), tensors, meta)
    metrics = {**metrics, "params": sum(t.numel() for t in tensors.values())}
    write_json(library.entry_path(library_dir, entry.layer, entry.name, "json"), metrics)


def run(
    cfg: dict[str, Any],
    parent_dir: str,
    train_dir: str,
    valid_dir: str,
    layer: int,
    library_dir: str,
    kind: str | None = None,
) -> list[dict[str, Any]]:
    """Initialize and train (or copy) every library entry of `layer`; returns their metrics."""
    bld, seed = cfg["bld"], cfg["seed"]
    if kind and bld["mode"] == "coupled":
        raise config_mod.ConfigError(f"config error: --kind {kind}: bld.mode = coupled trains whole blocks")
    torch.set_num_threads(cfg["threads"])
    device = pick_device(cfg["device"])
    hf, deci = parent_configs(parent_dir)
    shape = library.parent_shape(hf.to_dict())
    if deci.head_dim != shape.head_dim:
        raise ValueError(f"{parent_dir}: head_dim {deci.head_dim} != hidden / heads; KV pooling assumes equal")
    if not 0 <= layer < shape.num_hidden_layers:
        raise ValueError(f"layer {layer}: the parent has layers 0..{shape.num_hidden_layers - 1}")
    multiple = cfg["search_space"]["ffn"]["multiple_of"]
    names = library.entries(cfg, shape, kind)
    raw = parent_layer_tensors(parent_dir, layer)
    save_dtype, parent = next(iter(raw.values())).dtype, {k: v.float() for k, v in raw.items()}
    train, valid = LayerActivations(train_dir, layer), LayerActivations(valid_dir, layer)
    if train.meta["seq_len"] != valid.meta["seq_len"]:
        raise ValueError(f"seq_len differs: {train.meta['seq_len']} (train) vs {valid.meta['seq_len']} (valid)")
    pe = position_embeddings(hf, train.meta["seq_len"], device)
    teacher = Teacher(deci, layer, shape, multiple, parent, device)
    pruned = any(blocks.ffn_pct_of(f or "") not in (None, 100) for _, f in map(library.subblocks, names))
    act = mean_abs_intermediate(teacher, train, bld["init_windows"], bld["batch_size"]) if pruned else None
    ckpt_root = library.layer_dir(library_dir, layer) / ".bld_checkpoint"
    common = {
        "layer": layer, "mode": bld["mode"], "device": str(device), "train_activations": str(train_dir),
        "valid_activations": str(valid_dir), "train_windows": len(train), "valid_windows": len(valid),
        "batch_size": bld["batch_size"], "lr": bld["lr"],
        "target": "parent layer recomputed in fp32 from the stored input",
    }
    results = []
    for name in names:
        entry = Entry(name, layer, deci, shape, multiple, parent, act)
        entry.module.to(device)
        head = {**common, "variant": name, "kind": entry.kind, "init": entry.init,
                "block_config": entry.block_config, "trainable_params": entry.trainable_params()}
        if entry.trains:
            got = train_entry(entry, teacher, (train, valid), pe, bld, seed, ckpt_root / name)
        else:
            got = measure_entry(entry, teacher, valid, pe, bld["batch_size"])
        metrics = {**head, **got, "nmse_init": got["curve"][0]["nmse"], "nmse_final": got["curve"][-1]["nmse"]}
        metrics["wall_s"] = round(metrics["wall_s"], 3)
        write_entry(library_dir, entry, metrics, save_dtype)
        results.append(metrics)
    # Checkpoints go only once every entry of the job is written: a job killed between entries
    # loses its outputs to Snakemake, but not the training behind them.
    for name in names:
        shutil.rmtree(ckpt_root / name, ignore_errors=True)
    if ckpt_root.exists() and not any(ckpt_root.iterdir()):
        ckpt_root.rmdir()
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config_mod.add_arguments(parser)
    parser.add_argument("--parent", required=True, help="parent HF checkpoint folder")
    parser.add_argument("--train", required=True, help="training activations (activations/<corpus>/train)")
    parser.add_argument("--valid", required=True, help="held-out activations (activations/<corpus>/valid)")
    parser.add_argument("--layer", required=True, type=int, help="the layer whose entries to build")
    parser.add_argument("--kind", choices=["attention", "ffn"], help="decoupled only: just this subblock kind")
    parser.add_argument("--out", required=True, help="library folder (results/<experiment>/library)")


def main(args: argparse.Namespace) -> None:
    cfg = config_mod.from_args(args)
    for m in run(cfg, args.parent, args.train, args.valid, args.layer, args.out, args.kind):
        print(
            f"layer {m['layer']} {m['variant']:<24} nMSE {m['nmse_init']:.3g} -> {m['nmse_final']:.3g} "
            f"({m['steps']} steps, {m['wall_s']:.1f} s, {m['init']})"
        )
