"""How replace-1-block scoring is split into jobs, without torch (the Snakefile and the planner call it).

Parts. `puzzle score --layer i --part k/n` scores the k-th of n shares of layer i's compositions.
A layer's compositions (attention-major: the row order of scores.csv) are cut into n contiguous
runs of whole passes, a pass being the `scoring.candidates_per_pass` candidates that go through
layers i+1.. stacked together. A candidate is then computed by exactly the operations of the
unsplit job, so the merged table is byte-identical to it. The parent's own composition is not run
(its KL is exactly 0): it goes with the composition before it.

Balance. Runs hold equal numbers of passes (within one): every candidate pays the same suffix,
layers i+1..L-1 and the LM head, which dwarfs its own block except near the last layer, where a
job is short anyway. Contiguous runs keep each attention variant's FFN group whole except at the
n-1 cuts; a cut group runs its attention sublayer once more, in the next part: one sublayer
against the L-1-i layers and the head every candidate runs. Cutting only between attention
groups instead would leave parts up to half a group (several whole candidates) apart.

Job time. Every part also runs the parent once (all layers, head and the parent's distribution):
a part's FLOPs are that plus its candidates' blocks, suffixes and heads, over the scored tokens
(`scoring.valid_windows` x `scoring.seq_len`). `scoring.parts: auto` takes the fewest parts whose
largest fits RUNTIME_FILL of the job's runtime at bld_plan.ASSUMED_TFLOPS.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from puzzle import bld_plan, blocks, cost_model
from puzzle.config import ConfigError

# A part is planned to fill this share of its runtime: loading the parent and the library, which
# the FLOPs leave out, and a GPU below the assumed throughput take the rest.
RUNTIME_FILL = 0.75

_PART_FILE = re.compile(r"\.part(\d+)of(\d+)\.csv$")


def parse_part(text: str) -> tuple[int, int]:
    """(k, n) of a `--part k/n` argument, 1 <= k <= n."""
    m = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise ConfigError(f"config error: --part {text!r}: expected K/N with 1 <= K <= N (part K of N parts)")
    return int(m.group(1)), int(m.group(2))


def part_file(scores_dir: str | Path, layer: int, k: int, n: int) -> str:
    """The score table of part k of n of a layer; one part is the whole layer's `layer_{i}.csv`."""
    name = f"layer_{layer}.csv" if n == 1 else f"layer_{layer}.part{k}of{n}.csv"
    return str(Path(scores_dir) / name)


def part_of_file(path: str | Path) -> tuple[int, int]:
    """(k, n) from a score table's file name (`layer_{i}.csv`: (1, 1))."""
    m = _PART_FILE.search(Path(path).name)
    return (int(m.group(1)), int(m.group(2))) if m else (1, 1)


def layer_files(scores_dir: str | Path, parts: dict[int, int]) -> list[str]:
    """Every score table of the layers in `parts` (layer -> number of parts), layer by layer, parts in order."""
    return [part_file(scores_dir, i, k, n) for i, n in sorted(parts.items()) for k in range(1, n + 1)]


def passes(compositions: list[tuple[str, str]], parent: tuple[str, str], per_pass: int) -> list[list[tuple[str, str]]]:
    """The candidates of a layer as score_layers runs them: all but the parent's own, `per_pass` at a time."""
    others = [c for c in compositions if c != parent]
    return [others[g : g + per_pass] for g in range(0, len(others), per_pass)]


def part_compositions(
    compositions: list[tuple[str, str]], parent: tuple[str, str], per_pass: int, k: int, n: int
) -> list[tuple[str, str]]:
    """Part k of n of a layer's compositions (module docstring), in their order."""
    runs = passes(compositions, parent, per_pass)
    if n > max(1, len(runs)):
        raise ConfigError(f"config error: --part {k}/{n}: the layer has {len(runs)} passes of candidates, "
                          f"expected at most {len(runs)} parts")
    part_of = {c: j * n // len(runs) for j, run in enumerate(runs) for c in run}
    out, current = [], 0
    for c in compositions:
        current = part_of.get(c, current)  # the parent's composition: the part before it
        if current == k - 1:
            out.append(c)
    return out


# ---- the parent's own blocks -------------------------------------------------------------------


def parent_compositions(shape: blocks.ParentShape, ffns: list[str], multiple: int) -> list[tuple[str, str]]:
    """Each layer's own (attention, FFN) variant names; FFN widths named as the search space's
    candidate of that width where one matches (a Nemotron-NAS parent's layers differ)."""
    if not shape.layers:
        return [blocks.parent_variants(shape)] * shape.num_hidden_layers
    return [(blocks.attention_name_of(b.attention, shape.num_attention_heads),
             blocks.ffn_name_of(b.ffn, shape, ffns, multiple)) for b in shape.layers]


def compositions(cfg: dict[str, Any], shape: blocks.ParentShape) -> list[tuple[str, str]]:
    """Every layer's candidate compositions, attention-major."""
    attentions, ffns = blocks.search_space(shape, cfg["search_space"])
    return [(a, f) for a in attentions for f in ffns]


def max_parts(cfg: dict[str, Any], parent_cfg: dict[str, Any]) -> int:
    """The most parts every layer can be cut into (one pass each)."""
    shape = blocks.ParentShape.from_config(parent_cfg)
    comps = compositions(cfg, shape)
    _, ffns = blocks.search_space(shape, cfg["search_space"])
    own = parent_compositions(shape, ffns, cfg["search_space"]["ffn"]["multiple_of"])
    return min(len(passes(comps, p, cfg["scoring"]["candidates_per_pass"])) for p in own)


# ---- FLOPs and parts ---------------------------------------------------------------------------


def _variant_flops(variant: str, arch: cost_model.Arch, multiple: int, seq: int) -> float:
    attention = blocks.kind_of(variant) == "attention" and variant not in (blocks.ATTN_LINEAR, blocks.ATTN_NOOP)
    return bld_plan._forward_flops(cost_model.param_count(variant, arch, multiple), arch, seq, attention)


def part_flops(cfg: dict[str, Any], parent_cfg: dict[str, Any], layer: int, k: int, n: int) -> float:
    """FLOPs of the scoring job of part k of n of `layer` (module docstring)."""
    sc, multiple = cfg["scoring"], cfg["search_space"]["ffn"]["multiple_of"]
    arch = bld_plan.parent_arch(cfg, parent_cfg)
    shape = arch.shape
    _, ffns = blocks.search_space(shape, cfg["search_space"])
    own = parent_compositions(shape, ffns, multiple)
    seq = sc["seq_len"]
    own_layer = [_variant_flops(a, arch, multiple, seq) + _variant_flops(f, arch, multiple, seq) for a, f in own]
    head = 2.0 * arch.hidden_size * arch.vocab_size
    suffix = sum(own_layer[layer + 1 :]) + head
    parent = sum(own_layer) + 2 * head  # the parent's head and its distribution folded into hidden size (pbar)
    comps = part_compositions(compositions(cfg, shape), own[layer], sc["candidates_per_pass"], k, n)
    run = [c for c in comps if c != own[layer]]
    blocks_flops = sum(_variant_flops(a, arch, multiple, seq) for a in {a for a, _ in run}) + sum(
        _variant_flops(f, arch, multiple, seq) for _, f in run)
    per_token = parent + blocks_flops + len(run) * suffix
    return per_token * sc["valid_windows"] * seq


def part_minutes(cfg: dict[str, Any], parent_cfg: dict[str, Any], layer: int, k: int, n: int) -> float:
    return part_flops(cfg, parent_cfg, layer, k, n) / (bld_plan.ASSUMED_TFLOPS * 1e12) / 60


def parts_for(cfg: dict[str, Any], parent_cfg: dict[str, Any], layer: int, runtime_minutes: float) -> int:
    """Jobs that score `layer`: `scoring.parts`, or for auto the fewest whose largest part's
    estimated time fits RUNTIME_FILL x `runtime_minutes` (at most one pass per part)."""
    value = cfg["scoring"]["parts"]
    if value != "auto":
        return int(value)
    most = max_parts(cfg, parent_cfg)
    for n in range(1, most + 1):
        if max(part_minutes(cfg, parent_cfg, layer, k, n) for k in range(1, n + 1)) <= RUNTIME_FILL * runtime_minutes:
            return n
    return most


def layer_parts(cfg: dict[str, Any], parent_cfg: dict[str, Any], runtime_minutes: float) -> dict[int, int]:
    """Layer -> its number of scoring jobs."""
    layers = blocks.ParentShape.from_config(parent_cfg).num_hidden_layers
    return {i: parts_for(cfg, parent_cfg, i, runtime_minutes) for i in range(layers)}


def check_parts(cfg: dict[str, Any], parent_cfg: dict[str, Any]) -> None:
    """A given `scoring.parts` leaves every part of every layer at least one pass of candidates."""
    value = cfg["scoring"]["parts"]
    if value != "auto" and value > (most := max_parts(cfg, parent_cfg)):
        raise ConfigError(
            f"config error: scoring.parts = {value}: a layer has {most} passes of candidates "
            f"(scoring.candidates_per_pass = {cfg['scoring']['candidates_per_pass']}), expected 'auto' or at most "
            f"{most}"
        )
