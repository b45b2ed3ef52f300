"""Replace-1-block scoring: the parent with only layer i's block replaced, on held-out tokens.

For every layer i and every (attention, FFN) composition of the search space, the parent with only
that block swapped in is compared with the parent on fixed windows of the valid shard:

    kl         KL(parent || model) per token, mean, nats (the search's default objective)
    lm_loss    next-token cross-entropy, mean, nats
    token_acc  next-token (argmax) accuracy

Cost: a candidate never pays a full forward. Per window chunk, the parent runs once (embeddings,
layers, head); its hidden state at the input of layer i is kept, and each candidate runs only its
own layer i and the parent's layers i+1..L-1 and head; the parent's own block is not run. Within
layer i, the attention output of an attention variant is shared by all FFN variants composed with
it. The parent's next-token distribution p enters through three per-token quantities, so nothing of
vocabulary size is cached:

    KL(p || q) = [p.z_p - lse(z_p)] - [p.z_q - lse(z_q)],   p.z = (p @ W_head) . norm(h)

with z = W_head norm(h) the logits. The parent's block in layer i (library copies of the parent's
subblocks) scores the parent's own pass: KL exactly 0.0, the parent's LM loss and accuracy. A token
counts as predicted when its logit is the largest (so a tie for the top counts).

Library files (written by the `bld` stage) hold one subblock's tensors under per-layer
Nemotron-NAS names without the `model.layers.{i}.` prefix:
  decoupled: layer_{i}/{attention}.safetensors and layer_{i}/{ffn}.safetensors, composed here;
  coupled:   layer_{i}/{attention}+{ffn}.safetensors (one block); used when present.
A no-op subblock has no tensors (its file may be absent).

    python -m puzzle score --cfg JSON --parent DIR --data DIR --library DIR --layer 3 --out layer_3.csv
    python -m puzzle score --cfg JSON --parent DIR --data DIR --library DIR --out scores.csv  (all layers)
    python -m puzzle score ... --layer 0 --part 2/3 --out layer_0.part2of3.csv  (a third of its blocks)
    python -m puzzle score --merge layer_0.csv layer_1.part1of2.csv layer_1.part2of2.csv ... --out scores.csv

Parts (src/puzzle/score_plan.py) cut a layer's blocks at whole passes of `candidates_per_pass`,
so merged parts are byte-identical to the unsplit layer.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from puzzle import blocks, score_plan
from puzzle import config as config_mod
from puzzle.training import fixed_windows, pick_device, resolve_dtype

if TYPE_CHECKING:  # pandas and the model classes are imported where they are used
    import pandas as pd

    from puzzle.nemotron_nas.modeling_decilm import DeciLMDecoderLayer, DeciLMForCausalLM

COLUMNS = ["layer", "attention", "ffn", "kl", "lm_loss", "token_acc"]


# ---- models and subblocks -----------------------------------------------------------------------



def load_parent(path: str | Path, device: torch.device, dtype: torch.dtype, **placement: Any) -> Any:
    """The parent as a DeciLMForCausalLM (a Llama-family checkpoint is converted while it is read), over the job's
    devices of `device`'s type; `placement`: checkpoint.load's explicit max_memory / offload_folder instead.

    A parent dispatched over several devices is scored layer by layer on each layer's own device: every direct
    call of a layer's parts runs inside checkpoint.weights_on(layer)."""
    from puzzle import checkpoint

    model = checkpoint.load(path, dtype=dtype, device=checkpoint.devices_for(device), decilm=True, **placement)
    # Every forward here passes no mask: only SDPA then attends causally (eager would not).
    model.config._attn_implementation = "sdpa"
    return model


def parent_shape(model: DeciLMForCausalLM) -> blocks.ParentShape:
    """Shape of a DeciLM parent, each layer's own block included (a Nemotron-NAS parent's differ)."""
    return blocks.ParentShape.from_config(model.config.to_dict())


def own_composition(model: DeciLMForCausalLM, layer: int, ffns: list[str], multiple: int) -> tuple[str, str]:
    """The parent's own (attention, FFN) variant names in `layer`."""
    return score_plan.parent_compositions(parent_shape(model), ffns, multiple)[layer]


def subblock_layer(
    model: DeciLMForCausalLM, layer: int, attention: str, ffn: str, tensors: dict[str, torch.Tensor], multiple: int,
    device: torch.device,
) -> DeciLMDecoderLayer:
    """A DeciLMDecoderLayer of block (attention, ffn) in position `layer` on `device`, holding exactly `tensors`."""
    from puzzle.nemotron_nas import DeciLMDecoderLayer

    shape = parent_shape(model)
    cfg = model.config.with_block_config(layer, blocks.block_config(attention, ffn, shape, multiple))
    dtype = model.dtype
    module = DeciLMDecoderLayer(cfg, layer).to(device=device, dtype=dtype)
    missing, unexpected = module.load_state_dict(
        {k: v.to(device=device, dtype=dtype) for k, v in tensors.items()}, strict=False
    )
    if missing or unexpected:
        raise ValueError(
            f"layer {layer} block ({attention}, {ffn}): library tensors do not match the block: "
            f"missing {sorted(missing)}, unexpected {sorted(unexpected)}"
        )
    return module.eval()


def read_library_file(path: Path) -> dict[str, torch.Tensor]:
    from puzzle.library import load_entry

    return load_entry(path)


def library_paths(
    library_dir: str | Path, layer: int, attentions: list[str], ffns: list[str], coupled: bool
) -> list[Path]:
    """The library files that scoring layer `layer` reads (no-op subblocks need none)."""
    d = Path(library_dir) / f"layer_{layer}"
    if coupled:
        return [d / f"{blocks.composition(a, f)}.safetensors" for a in attentions for f in ffns
                if not (a == blocks.ATTN_NOOP and f == blocks.FFN_NOOP)]
    names = [v for v in [*attentions, *ffns] if v not in (blocks.ATTN_NOOP, blocks.FFN_NOOP)]
    return [d / f"{v}.safetensors" for v in names]


@dataclass
class LayerCandidates:
    """One layer's candidate blocks: shared attention modules and FFN modules (decoupled), or one
    module per composition (coupled)."""

    layer: int
    compositions: list[tuple[str, str]]
    attention: dict[str, DeciLMDecoderLayer]  # attention variant -> layer module holding that attention (FFN no-op)
    ffn: dict[str, DeciLMDecoderLayer]  # ffn variant -> layer module holding that FFN (attention no-op)
    coupled: dict[tuple[str, str], DeciLMDecoderLayer]  # (attention, ffn) -> layer module holding both
    parent: tuple[str, str] = ("", "")  # the parent's own composition in this layer
    device: torch.device = torch.device("cpu")  # the parent layer's (execution) device, where the blocks are


def layer_candidates(
    model: DeciLMForCausalLM, layer: int, attentions: list[str], ffns: list[str], library_dir: str | Path | None,
    multiple: int, coupled: bool = False, compositions: list[tuple[str, str]] | None = None,
) -> LayerCandidates:
    """Build the candidate modules of one layer from the library: of `compositions` (a part of the
    layer's, score_plan.part_compositions), default every attention x FFN one.

    Without a library file for one of the layer's own variants, the parent's own subblock is used
    (the library's are copies of it). The blocks are built on the device the parent's layer runs on."""
    from puzzle import checkpoint

    with checkpoint.weights_on(model.model.layers[layer]) as device:  # an offloaded layer's weights are loaded
        return _layer_candidates(model, layer, attentions, ffns, library_dir, multiple, coupled, compositions, device)


def _layer_candidates(
    model: DeciLMForCausalLM, layer: int, attentions: list[str], ffns: list[str], library_dir: str | Path | None,
    multiple: int, coupled: bool, compositions: list[tuple[str, str]] | None, device: torch.device,
) -> LayerCandidates:
    d = Path(library_dir) / f"layer_{layer}" if library_dir is not None else None
    parent_attn, parent_ffn = own_composition(model, layer, ffns, multiple)
    own = {k: v for k, v in model.model.layers[layer].state_dict().items()}
    own_attn = {k: v for k, v in own.items() if k.startswith(("input_layernorm.", "self_attn."))}
    own_ffn = {k: v for k, v in own.items() if k.startswith(("post_attention_layernorm.", "mlp."))}

    def tensors(variant: str, fallback: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if variant in (blocks.ATTN_NOOP, blocks.FFN_NOOP):
            return {}
        path = d / f"{variant}.safetensors" if d is not None else None
        if path is not None and path.exists():
            return read_library_file(path)
        if variant in (parent_attn, parent_ffn):
            return fallback
        raise FileNotFoundError(f"layer {layer}: library file {path} of variant {variant} is missing")

    comps = [(a, f) for a in attentions for f in ffns] if compositions is None else list(compositions)
    out = LayerCandidates(layer, comps, {}, {}, {}, (parent_attn, parent_ffn), device)
    if coupled:
        for a, f in comps:
            if a == blocks.ATTN_NOOP and f == blocks.FFN_NOOP:
                t = {}
            elif (a, f) == (parent_attn, parent_ffn) and not (d / f"{a}+{f}.safetensors").exists():
                t = own
            else:
                path = d / f"{blocks.composition(a, f)}.safetensors"
                if not path.exists():
                    raise FileNotFoundError(f"layer {layer}: coupled library file {path} is missing")
                t = read_library_file(path)
            out.coupled[(a, f)] = subblock_layer(model, layer, a, f, t, multiple, device)
        return out
    # Only the subblocks of these compositions: a part reads its share of the layer's library.
    for a in dict.fromkeys(a for a, _ in comps):
        out.attention[a] = subblock_layer(model, layer, a, blocks.FFN_NOOP, tensors(a, own_attn), multiple, device)
    for f in dict.fromkeys(f for _, f in comps):
        out.ffn[f] = subblock_layer(model, layer, blocks.ATTN_NOOP, f, tensors(f, own_ffn), multiple, device)
    return out


# ---- the forward pieces (one code path for the parent and every candidate) -----------------------


def attention_part(
    layer: DeciLMDecoderLayer, h: torch.Tensor, pos: tuple[torch.Tensor, torch.Tensor]
) -> torch.Tensor:
    """h + attention(norm(h)) as DeciLMDecoderLayer computes it (mask None: causal SDPA)."""
    if layer.self_attn is None:
        return h
    out, _ = layer.self_attn(
        hidden_states=layer.input_layernorm(h), attention_mask=None, position_embeddings=pos
    )
    return h + out


def ffn_part(layer: DeciLMDecoderLayer, h: torch.Tensor) -> torch.Tensor:
    if layer.mlp is None:
        return h
    return h + layer.mlp(layer.post_attention_layernorm(h))


def run_layer(
    layer: DeciLMDecoderLayer, h: torch.Tensor, pos: tuple[torch.Tensor, torch.Tensor]
) -> torch.Tensor:
    """Parent layer `layer` on `h`, on the layer's device (of a dispatched parent: its weights present there); the
    output stays on that device."""
    from puzzle import checkpoint

    with checkpoint.weights_on(layer) as device:
        return ffn_part(layer, attention_part(layer, h.to(device), to_device(pos, device)))


def to_device(pos: tuple[torch.Tensor, torch.Tensor], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return pos[0].to(device), pos[1].to(device)


# Logits elements per head chunk (16 MB in float32). A whole batch's logits (33 MB at 8 x 256 tokens
# and a 4k vocabulary) exceed glibc's 32 MB mmap cap, so each candidate paid ~16k page faults on fresh
# zeroed memory, ~40% of its head time on CPU; chunks reuse freed heap memory (and bound GPU memory).
# At least HEAD_MIN_ROWS rows, so a large vocabulary still gets matmuls of useful size.
HEAD_CHUNK_ELEMENTS = 1 << 22
HEAD_MIN_ROWS = 256


@dataclass
class HeadStats:
    """Per-token quantities of one forward's output distribution q (positions 0..T-2, flattened)."""

    dot: torch.Tensor  # p . z_q (float64), p the parent's distribution
    lse: torch.Tensor  # logsumexp(z_q) (float64)
    nll: torch.Tensor  # -log q[target] (float64)
    correct: torch.Tensor  # argmax z_q == target


def head_stats(
    model: DeciLMForCausalLM, h: torch.Tensor, targets: torch.Tensor, pbar: torch.Tensor | None, head_w: torch.Tensor
) -> tuple[HeadStats, torch.Tensor]:
    """Final norm + LM head (`head_w`, float32) on positions 0..T-2 of `h`, `targets` = the next tokens
    (flattened). With pbar = None (the parent's own pass), also returns pbar = p @ W_head, the parent's
    distribution folded into hidden size; a given pbar covers one copy of the windows, `h` may stack
    several candidates. The head runs in float32 whatever the model's dtype: bf16 logits would blur
    KLs of 1e-3. Tokens go through in chunks of about HEAD_CHUNK_ELEMENTS logits, on head_w's device
    (`targets` and `pbar` are there)."""
    x = model.model.norm(h[:, :-1]).float().flatten(0, 1).to(head_w.device)  # norm's own hook places it
    n, vocab = x.shape[0], head_w.shape[0]
    rows = max(HEAD_MIN_ROWS, HEAD_CHUNK_ELEMENTS // vocab)
    lse = torch.empty(n, device=x.device)
    logq_target = torch.empty(n, device=x.device)
    correct = torch.empty(n, dtype=torch.bool, device=x.device)
    own = pbar is None
    if own:
        pbar = torch.empty(n, x.shape[1], device=x.device)
    for s in range(0, n, rows):
        e = min(s + rows, n)
        t = targets[s:e, None]
        logits = x[s:e] @ head_w.T
        # Maxima without indices (amax is several times cheaper than max(dim)): the target is
        # predicted when its logit is the top one.
        top = logits.amax(dim=-1)
        torch.eq(logits.gather(-1, t).squeeze(-1), top, out=correct[s:e])
        # One fused log_softmax pass (torch.logsumexp is several times slower on CPU); the
        # log-sum-exp is read off at the argmax, where log q is smallest in magnitude and so most
        # precise: log_softmax is monotone within a row, so max log q is log q at the argmax.
        logq = torch.log_softmax(logits, dim=-1)
        torch.sub(top, logq.amax(dim=-1), out=lse[s:e])
        logq_target[s:e] = logq.gather(-1, t).squeeze(-1)
        if own:
            torch.mm(logq.exp_(), head_w, out=pbar[s:e])
    if own:
        pbar = pbar.double()
    dot = (x.double().view(-1, *pbar.shape) * pbar).sum(-1).flatten()
    return HeadStats(dot, lse.double(), -logq_target.double(), correct), pbar


@dataclass
class Totals:
    kl: float = 0.0
    nll: float = 0.0
    correct: int = 0
    tokens: int = 0

    def add(self, ref: HeadStats, cand: HeadStats) -> None:
        kl = (ref.dot - ref.lse) - (cand.dot - cand.lse)
        self.kl += float(kl.sum())
        self.nll += float(cand.nll.sum())
        self.correct += int(cand.correct.sum())
        self.tokens += cand.nll.numel()

    def row(self) -> dict[str, float]:
        n = self.tokens
        return {"kl": self.kl / n, "lm_loss": self.nll / n, "token_acc": self.correct / n}


def block_out(
    cand: LayerCandidates, a: str, f: str, h_in: torch.Tensor, pos: tuple[torch.Tensor, torch.Tensor],
    mids: dict[str, torch.Tensor],
) -> torch.Tensor:
    """Block (a, f) of `cand` on the layer input; an attention output is kept in `mids` for the
    FFN variants after it."""
    if cand.coupled:  # on the layer's device, like h_in and pos (a no-op block has no tensors to tell it)
        block = cand.coupled[(a, f)]
        return ffn_part(block, attention_part(block, h_in, pos))
    if a not in mids:
        mids[a] = attention_part(cand.attention[a], h_in, pos)
    return ffn_part(cand.ffn[f], mids[a])


def _split(stats: HeadStats, n: int) -> list[HeadStats]:
    parts = [t.chunk(n, dim=0) for t in (stats.dot, stats.lse, stats.nll, stats.correct)]
    return [HeadStats(*(p[k] for p in parts)) for k in range(n)]


@torch.inference_mode()
def score_layers(
    model: DeciLMForCausalLM,
    windows: torch.Tensor,
    candidates: list[LayerCandidates],
    batch_size: int,
    candidates_per_pass: int = 1,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Replace-1-block scores of every composition in `candidates` (one entry per layer) on `windows`.

    The parent runs once per chunk of `batch_size` windows for all layers together; every other
    candidate runs layers i..L-1 and the head only, `candidates_per_pass` of them stacked along the batch.
    """
    from puzzle import checkpoint

    device = checkpoint.input_device(model)
    layers = model.model.layers
    totals = {(c.layer, a, f): Totals() for c in candidates for a, f in c.compositions}
    wanted = {c.layer for c in candidates}
    with checkpoint.weights_on(model.lm_head):  # an offloaded head's weight stays held here when it goes back
        head_w = model.lm_head.weight.float()
    t0 = time.perf_counter()
    for start in range(0, len(windows), batch_size):
        ids = windows[start : start + batch_size].to(device)
        targets = ids[:, 1:].flatten().to(head_w.device)
        h = model.model.embed_tokens(ids)
        position_ids = torch.arange(ids.shape[1], device=device).unsqueeze(0)
        pos = model.model.rotary_emb(h, position_ids=position_ids)
        inputs = {}
        for i, layer in enumerate(layers):
            if i in wanted:
                inputs[i] = h
            h = run_layer(layer, h, pos)
        ref, pbar = head_stats(model, h, targets, None, head_w)
        for cand in candidates:
            i, h_in, pos_in = cand.layer, inputs[cand.layer].to(cand.device), to_device(pos, cand.device)
            mids: dict[str, torch.Tensor] = {}
            # The parent's own composition is the parent (library copies of its subblocks): not run,
            # its KL is exactly 0.0 and its loss and accuracy the parent's.
            if cand.parent in cand.compositions:
                totals[(i, *cand.parent)].add(ref, ref)
            # The passes of score_plan, which the parts of a layer are cut along.
            for group in score_plan.passes(cand.compositions, cand.parent, candidates_per_pass):
                hs = [block_out(cand, a, f, h_in, pos_in, mids) for a, f in group]
                x = hs[0] if len(hs) == 1 else torch.cat(hs, dim=0)
                for layer in layers[i + 1 :]:
                    x = run_layer(layer, x, pos)
                n = len(group)
                stats, _ = head_stats(model, x, targets.repeat(n), pbar, head_w)
                for (a, f), s in zip(group, _split(stats, n)):
                    totals[(i, a, f)].add(ref, s)
        done = min(start + batch_size, len(windows))
        log(f"windows {done}/{len(windows)}  {time.perf_counter() - t0:.1f} s")
    rows = []
    for c in candidates:
        for a, f in c.compositions:
            rows.append({"layer": c.layer, "attention": a, "ffn": f, **totals[(c.layer, a, f)].row()})
    return rows


# ---- stage --------------------------------------------------------------------------------------


def valid_windows(data_dir: str | Path, corpus: str, count: int, seq_len: int) -> torch.Tensor:
    from puzzle.data import read_shard

    return fixed_windows(read_shard(Path(data_dir) / corpus / "valid.bin"), count, seq_len)


def library_mode(cfg: dict[str, Any]) -> str:
    """`decoupled` (subblock files composed here) or `coupled` (one file per composition): bld.mode."""
    return cfg.get("bld", {}).get("mode", "decoupled")


def corpus_name(cfg: dict[str, Any]) -> str:
    """The shard folder scoring reads: scoring.corpus, else the experiment's main corpus."""
    if cfg["scoring"]["corpus"]:
        return cfg["scoring"]["corpus"]
    return "files" if cfg["data"]["source"] == "files" else cfg["data"]["corpus"]


def run(
    cfg: dict[str, Any], parent_dir: str | Path, data_dir: str | Path, library_dir: str | Path | None,
    layers: Iterable[int] | None = None, log: Callable[[str], None] = print, part: tuple[int, int] = (1, 1),
) -> pd.DataFrame:
    """Scores (a pandas DataFrame with COLUMNS) of the given layers (default: all); of part k of n
    of each layer's compositions with `part` = (k, n) (score_plan.part_compositions)."""
    import pandas as pd

    sc = cfg["scoring"]
    torch.set_num_threads(cfg["threads"])
    device = pick_device(cfg["device"])
    dtype = resolve_dtype(sc["dtype"], device)
    model = load_parent(parent_dir, device, dtype)
    shape = parent_shape(model)
    attentions, ffns = blocks.search_space(shape, cfg["search_space"])
    multiple = cfg["search_space"]["ffn"]["multiple_of"]
    layers = list(range(shape.num_hidden_layers)) if layers is None else list(layers)
    for i in layers:
        if not 0 <= i < shape.num_hidden_layers:
            raise config_mod.ConfigError(f"config error: --layer {i}: the parent has {shape.num_hidden_layers} layers")
    coupled = library_mode(cfg) == "coupled"
    comps = [(a, f) for a in attentions for f in ffns]
    cands = [
        layer_candidates(model, i, attentions, ffns, library_dir, multiple, coupled, score_plan.part_compositions(
            comps, own_composition(model, i, ffns, multiple), sc["candidates_per_pass"], *part))
        for i in layers
    ]
    windows = valid_windows(data_dir, corpus_name(cfg), sc["valid_windows"], sc["seq_len"])
    share = "" if part == (1, 1) else f", part {part[0]}/{part[1]}: {[len(c.compositions) for c in cands]} of them"
    log(
        f"scoring layers {layers}: {len(attentions)} attention x {len(ffns)} ffn = "
        f"{len(comps)} blocks per layer{share} on {len(windows)} windows x {windows.shape[1]} tokens, "
        f"{device} {dtype}"
    )
    rows = score_layers(model, windows, cands, sc["batch_size"], sc["candidates_per_pass"], log=log)
    return refuse_non_finite(pd.DataFrame(rows, columns=COLUMNS), "scoring")


def refuse_non_finite(frame: pd.DataFrame, where: str) -> pd.DataFrame:
    """`frame` unchanged when every score is a finite number; else the first bad row is named (a NaN
    comes from a corrupt block or a diverged one, and must not reach the search)."""
    import numpy as np
    import pandas as pd

    from puzzle.io import ArtifactError

    values = frame[COLUMNS[3:]].apply(pd.to_numeric, errors="coerce")
    bad = ~np.isfinite(values.to_numpy(dtype=float)).all(axis=1)
    if bad.any():
        row = frame[bad].iloc[0]
        raise ArtifactError(
            f"{where}: layer {row['layer']} block {row['attention']}+{row['ffn']} scores "
            f"{dict(row[COLUMNS[3:]])}: expected finite numbers"
        )
    return frame


def merge(paths: list[str]) -> pd.DataFrame:
    """Concatenate per-layer score tables (whole layers, or every part of a layer's:
    `layer_{i}.part{k}of{n}.csv`), ordered by layer, then part; rows within a table keep their order."""
    import pandas as pd

    from puzzle.io import ArtifactError, read_csv

    paths = sorted(paths, key=lambda p: score_plan.part_of_file(p)[0])  # stable: whole layers keep their order
    frames = [read_csv(p) for p in paths]
    parts: dict[int, list[tuple[int, int]]] = {}
    for p, f in zip(paths, frames):
        if list(f.columns) != COLUMNS:
            raise ValueError(f"{p}: columns {list(f.columns)}, expected {COLUMNS}")
        refuse_non_finite(f, p)
        for layer in f["layer"].unique():
            parts.setdefault(int(layer), []).append(score_plan.part_of_file(p))
    for layer, got in sorted(parts.items()):
        n = got[0][1]
        if sorted(got) != [(k, n) for k in range(1, n + 1)]:
            raise ArtifactError(f"merge: layer {layer} comes from parts {sorted(got)} (k, n): expected each of "
                                f"1..{n} of {n} once")
    out = pd.concat(frames, ignore_index=True)
    dup = out.duplicated(["layer", "attention", "ffn"])
    if dup.any():
        row = out[dup].iloc[0]
        raise ArtifactError(f"merge: layer {row['layer']} block {row['attention']}+{row['ffn']} is scored twice "
                            "in the tables merged: expected once")
    return out.sort_values("layer", kind="stable").reset_index(drop=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config_mod.add_arguments(parser)
    parser.add_argument("--parent", help="parent checkpoint folder (Llama-family or Nemotron-NAS)")
    parser.add_argument("--data", help="data folder holding <corpus>/valid.bin")
    parser.add_argument("--library", help="block library folder holding layer_{i}/{variant}.safetensors")
    parser.add_argument("--layer", type=int, action="append", help="score this layer (repeatable; default: all)")
    parser.add_argument("--part", metavar="K/N", help="score part K of N of each layer's blocks (default: all)")
    parser.add_argument("--merge", nargs="+", metavar="CSV", help="concatenate per-layer CSVs into --out instead")
    parser.add_argument("--out", required=True, help="output CSV: " + ", ".join(COLUMNS))


def main(args: argparse.Namespace) -> None:
    from puzzle.io import write_csv

    if args.merge:
        frame = merge(args.merge)
        write_csv(args.out, frame)
        print(f"{args.out}: {len(frame)} rows from {len(args.merge)} files")
        return
    if not (args.parent and args.data):
        raise config_mod.ConfigError("config error: --parent and --data are required (or --merge)")
    part = score_plan.parse_part(args.part) if args.part is not None else (1, 1)
    cfg = config_mod.from_args(args)
    frame = run(cfg, args.parent, args.data, args.library, args.layer, log=lambda m: print(m, flush=True), part=part)
    write_csv(args.out, frame)
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.5f}"))
