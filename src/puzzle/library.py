"""The block library's layout: which entries a layer has, which need training, where their files are.

Decoupled BLD (the default) gives one entry per subblock variant (`attn_kv1`, `ffn_50`, ...);
coupled BLD gives one per (attention, FFN) composition (`attn_kv1+ffn_50`). Imports no torch:
the Snakefile plans the library's outputs from it, and later stages find their files with it.

    library/layer_{i}/{entry}.safetensors   the subblock tensors, Nemotron-NAS names without
                                            the `model.layers.{i}.` prefix (none for a no-op)
    library/layer_{i}/{entry}.json          how it was made: init, training curve, nMSE, time, and
                                            `file`: the safetensors file's size and sha256

Every reader of an entry (scoring, assembly, the paper's library summary) checks the file against
that record first (`verify_entry`): overwritten bytes that still decode to finite numbers are
caught there, not used.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from puzzle import blocks
from puzzle.io import ArtifactError, load_safetensors, read_json, sha256, write_json

EXTENSIONS = ("safetensors", "json")


def parent_shape(parent_cfg: dict[str, Any]) -> blocks.ParentShape:
    return blocks.ParentShape.from_config(parent_cfg)


def entries(cfg: dict[str, Any], parent: blocks.ParentShape, kind: str | None = None) -> list[str]:
    """Library entries of one layer, in a stable order: subblock variants (decoupled, optionally one
    `kind`, 'attention' or 'ffn') or attention+ffn compositions (coupled)."""
    attn, ffn = blocks.search_space(parent, cfg["search_space"])
    if cfg["bld"]["mode"] == "coupled":
        return [blocks.composition(a, f) for a in attn for f in ffn]
    return {None: attn + ffn, "attention": attn, "ffn": ffn}[kind]


def subblocks(entry: str) -> tuple[str | None, str | None]:
    """(attention variant, ffn variant) of an entry; None for the subblock a decoupled entry leaves out."""
    if "+" in entry:
        return blocks.split_composition(entry)
    return (entry, None) if blocks.kind_of(entry) == "attention" else (None, entry)


def needs_training(entry: str, parent: blocks.ParentShape) -> bool:
    """Entries made only of parent subblocks are copied and those made only of no-ops are empty; the
    rest are trained. In coupled mode a parent subblock beside a replaced one trains with it, as one block."""
    parts = [p for p in subblocks(entry) if p is not None]
    all_parent = all(p in blocks.parent_variants(parent) for p in parts)
    all_noop = all(p in (blocks.ATTN_NOOP, blocks.FFN_NOOP) for p in parts)
    return not (all_parent or all_noop)


def block_config(entry: str, parent: blocks.ParentShape, multiple: int) -> dict[str, Any]:
    """The Nemotron-NAS entries this library entry fills, as JSON: {"attention": ...}, {"ffn": ...} or both."""
    attn, ffn = subblocks(entry)
    out: dict[str, Any] = {}
    if attn is not None:
        out["attention"] = blocks.attention_config(attn, parent).to_dict()
    if ffn is not None:
        out["ffn"] = blocks.ffn_config(ffn, parent, multiple).to_dict()
    return out


def layer_dir(library_dir: str | os.PathLike, layer: int) -> Path:
    return Path(library_dir) / f"layer_{layer}"


def entry_path(library_dir: str | os.PathLike, layer: int, entry: str, ext: str = "safetensors") -> Path:
    return layer_dir(library_dir, layer) / f"{entry}.{ext}"


def output_files(library_dir: str, num_layers: int, names: list[str]) -> list[str]:
    """Every library file of every layer (what the Snakefile's `all` asks for)."""
    return [str(entry_path(library_dir, i, n, ext)) for i in range(num_layers) for n in names for ext in EXTENSIONS]


def write_entry_json(path: str | os.PathLike, metrics: dict[str, Any]) -> None:
    """`{entry}.json` beside the entry's safetensors file `path` (written first): `metrics` plus the
    file's size and sha256, which `verify_entry` checks."""
    path = Path(path)
    write_json(path.with_suffix(".json"), {**metrics, "file": {"bytes": path.stat().st_size, "sha256": sha256(path)}})


def verify_entry(path: str | os.PathLike) -> str:
    """The sha256 of the entry's safetensors file `path`, checked against its `{entry}.json` record;
    a file whose size or hash differs (overwritten, cut, replaced), or without a record, raises
    ArtifactError naming the file, the expected and actual values, and the remedy."""
    path = Path(path)
    record_path = path.with_suffix(".json")
    redo = f"rerun its bld job (delete {path} and {record_path.name}, then run snakemake again)"
    if not path.exists():
        raise ArtifactError(f"{path}: library file does not exist: {redo}")
    got = read_json(record_path).get("file")
    if not isinstance(got, dict) or not {"bytes", "sha256"} <= set(got):
        raise ArtifactError(f"{path}: {record_path} records no size and sha256 of it (made by an older BLD?): {redo}")
    size = path.stat().st_size
    if size != got["bytes"]:
        raise ArtifactError(f"{path}: {size} bytes, but {record_path} records {got['bytes']}: a changed file; {redo}")
    digest = sha256(path)
    if digest != got["sha256"]:
        raise ArtifactError(f"{path}: sha256 {digest}, but {record_path} records {got['sha256']}: "
                            f"the file was changed after BLD wrote it; {redo}")
    return digest


def load_entry(path: str | os.PathLike) -> dict:
    """The tensors of a library entry, after `verify_entry`."""
    verify_entry(path)
    return load_safetensors(path)
