"""Assemble stage: a search solution + the block library -> the child as a Nemotron-NAS checkpoint.

    python -m puzzle assemble --cfg JSON --solution solution.json --library LIBRARY --parent PARENT --out CHILD

Layer i of the child takes its tensors from the library (decoupled: `layer_i/{attention}` and
`layer_i/{ffn}`; coupled: `layer_i/{attention}+{ffn}`); the embeddings, final norm and LM head are
the parent's, and so is the tokenizer. The checkpoint folder also holds `assembly.json`: which
library file every layer came from, with its sha256, so a child can be traced to its pieces.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from puzzle import config as config_mod
from puzzle import library
from puzzle.convert import decilm_config_from_llama, save_child, tokenizer_files
from puzzle.io import load_safetensors, read_json, sha256, write_json

_LAYER_PREFIX = "model.layers."


def parent_global_tensors(parent_dir: str | Path) -> dict[str, torch.Tensor]:
    """The parent's tensors outside its decoder layers (embeddings, final norm, LM head unless tied),
    read from its safetensors (single file or sharded) without loading the layers."""
    from safetensors import safe_open

    d = Path(parent_dir)
    index = d / "model.safetensors.index.json"
    if index.exists():
        weight_map = read_json(index)["weight_map"]
        files = sorted({f for k, f in weight_map.items() if not k.startswith(_LAYER_PREFIX)})
    elif (d / "model.safetensors").exists():
        files = ["model.safetensors"]
    else:
        raise FileNotFoundError(f"{d}: no model.safetensors (the parent must be a safetensors checkpoint)")
    out = {}
    for name in files:
        with safe_open(str(d / name), framework="pt") as f:
            out.update({k: f.get_tensor(k) for k in f.keys() if not k.startswith(_LAYER_PREFIX)})
    return out


def layer_files(library_dir: str | Path, layer: int, attention: str, ffn: str, mode: str) -> list[Path]:
    """The library files of one layer's block (no-op subblocks have empty files; they are listed too)."""
    entries = [f"{attention}+{ffn}"] if mode == "coupled" else [attention, ffn]
    paths = [library.entry_path(library_dir, layer, e) for e in entries]
    for p in paths:
        if not p.exists():
            raise FileNotFoundError(f"layer {layer}: library file {p} is missing (bld.mode = {mode})")
    return paths


def solution_layers(solution: dict[str, Any]) -> list[tuple[str, str]]:
    layers = [(b["attention"], b["ffn"]) for b in solution["layers"]]
    if len(layers) != len(solution["block_configs"]):
        raise ValueError(
            f"solution has {len(layers)} layers but {len(solution['block_configs'])} block_configs entries"
        )
    return layers


def assemble_state(
    parent_dir: str | Path, library_dir: str | Path, layers: list[tuple[str, str]], mode: str
) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """(the child's state dict, the provenance of each layer: its library files and their sha256)."""
    state = parent_global_tensors(parent_dir)
    provenance = []
    for i, (attention, ffn) in enumerate(layers):
        files = layer_files(library_dir, i, attention, ffn, mode)
        digests = [library.verify_entry(p) for p in files]
        for path in files:
            for key, tensor in load_safetensors(path).items():
                full = f"{_LAYER_PREFIX}{i}.{key}"
                if full in state:
                    raise ValueError(f"layer {i}: tensor {key} is in more than one library file ({files})")
                state[full] = tensor
        provenance.append(
            {
                "layer": i,
                "attention": attention,
                "ffn": ffn,
                "files": [{"path": str(p), "sha256": h} for p, h in zip(files, digests)],
            }
        )
    return state, provenance


def build_child(
    parent_config: dict[str, Any], block_configs: list[dict[str, Any]], state: dict[str, torch.Tensor]
) -> Any:
    """A DeciLMForCausalLM of `block_configs` holding exactly `state` (every tensor present, every
    shape right): built on meta and the tensors assigned, so the model is `state` itself, no copy."""
    from puzzle.checkpoint import empty_model

    config = decilm_config_from_llama(parent_config, block_configs)
    dtype = next(iter(state.values())).dtype
    if config.tie_word_embeddings:
        state.setdefault("lm_head.weight", state["model.embed_tokens.weight"])
    model = empty_model(config, dtype)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as err:
        raise ValueError(f"library tensors do not fit the solution's block_configs: {err}") from None
    model.tie_weights()
    return model.eval()


def random_child(
    parent_config: dict[str, Any], block_configs: list[dict[str, Any]], seed: int, dtype: torch.dtype
) -> Any:
    """Table 15's random baselines: the architecture of `block_configs` with the model's own seeded
    random initialization; no tensor from the parent or the library."""
    from puzzle.nemotron_nas import DeciLMForCausalLM

    torch.manual_seed(seed)
    return DeciLMForCausalLM._from_config(decilm_config_from_llama(parent_config, block_configs), dtype=dtype).eval()


def assemble(
    solution_path: str | Path,
    library_dir: str | Path,
    parent_dir: str | Path,
    out_dir: str | Path,
    mode: str,
    random_weights: int | None = None,
) -> dict[str, Any]:
    """Write the child of `solution_path` to `out_dir`; returns the assembly record (assembly.json).
    `random_weights` (a seed): the solution's architecture, randomly initialized instead."""
    parent_dir = Path(parent_dir)
    solution = read_json(solution_path)
    layers = solution_layers(solution)
    parent_config = json.loads((parent_dir / "config.json").read_text())
    if len(layers) != parent_config["num_hidden_layers"]:
        raise ValueError(f"solution has {len(layers)} layers, the parent {parent_config['num_hidden_layers']}")
    if random_weights is None:
        state, provenance = assemble_state(parent_dir, library_dir, layers, mode)
        model = build_child(parent_config, solution["block_configs"], state)
    else:
        dtype = next(iter(parent_global_tensors(parent_dir).values())).dtype
        model = random_child(parent_config, solution["block_configs"], random_weights, dtype)
        provenance = [{"layer": i, "attention": a, "ffn": f, "files": []} for i, (a, f) in enumerate(layers)]
    record = {
        "solution": {"path": str(solution_path), "sha256": sha256(solution_path)},
        "parent": str(parent_dir),
        "library": None if random_weights is not None else str(library_dir),
        "mode": mode,
        "random_weights_seed": random_weights,
        "parameters": sum(p.numel() for p in model.parameters()),
        "layers": provenance,
    }
    tokenizer = tokenizer_files(parent_dir)
    with tempfile.TemporaryDirectory() as tmp:
        write_json(Path(tmp) / "assembly.json", record)
        save_child(model, out_dir, [*tokenizer, Path(tmp) / "assembly.json"])
    return record


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config_mod.add_arguments(parser)
    parser.add_argument("--solution", required=True, help="solution.json of the search stage")
    parser.add_argument("--library", required=True, help="block library folder (library/layer_{i}/...)")
    parser.add_argument("--parent", required=True, help="parent HF checkpoint folder (globals and tokenizer)")
    parser.add_argument("--out", required=True, help="output folder of the child checkpoint")
    parser.add_argument(
        "--scores",
        help="scores.csv the solution was searched on: the solution is verified against it and --costs first",
    )
    parser.add_argument("--costs", help="costs.csv the solution was searched on (with --scores)")
    parser.add_argument(
        "--random-weights",
        type=int,
        metavar="SEED",
        help="the solution's architecture with random weights (Table 15's baselines); --library is not read",
    )


def verify_solution(solution_path: str | Path, scores_path: str | Path, costs_path: str | Path) -> None:
    """A solution as the search wrote it: its blocks, costs, objective and constraints recomputed from
    the tables it was searched on (mip.verify); a hand-edited one stops here, naming the file."""
    from puzzle.io import ArtifactError
    from puzzle.search.mip import VerificationError, verify
    from puzzle.search.tables import load_costs, load_scores

    try:
        verify(read_json(solution_path), load_scores(scores_path), load_costs(costs_path), rel_tol=1e-6)
    except (VerificationError, KeyError, TypeError) as err:
        raise ArtifactError(
            f"{solution_path}: {err if isinstance(err, VerificationError) else f'missing or malformed field {err}'}"
            f" (tables {scores_path}, {costs_path})"
        ) from None


def main(args: argparse.Namespace) -> None:
    cfg = config_mod.from_args(args)
    if (args.scores is None) != (args.costs is None):
        raise config_mod.ConfigError("config error: --scores and --costs go together")
    if args.scores:
        verify_solution(args.solution, args.scores, args.costs)
    record = assemble(args.solution, args.library, args.parent, args.out, cfg["bld"]["mode"], args.random_weights)
    blocks = ", ".join(f"{r['attention']}+{r['ffn']}" for r in record["layers"])
    print(f"{args.out}: {record['parameters']:,} params; layers {blocks}")
