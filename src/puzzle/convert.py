"""Llama-family checkpoint -> Nemotron-NAS ("DeciLM") checkpoint in which every block equals the parent's.

    python -m puzzle convert --parent PARENT_DIR --out CHILD_DIR

Parents: LlamaForCausalLM, MistralForCausalLM (without an effective sliding window) and Qwen2ForCausalLM
(its q/k/v biases are kept; the format has one `attention_bias` for q/k/v/o, so o_proj gets a zero bias).
Tensor names are Llama's in both formats, so the weights are copied as they are.
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from transformers import PretrainedConfig, PreTrainedModel

from puzzle.nemotron_nas import DeciLMConfig, DeciLMForCausalLM

SUPPORTED_PARENTS = ("llama", "mistral", "qwen2")
# Parent files a child needs besides weights and config (tokenizer in its various HF layouts).
TOKENIZER_FILES = (
    "tokenizer*", "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt", "chat_template*"
)


def tokenizer_files(folder: str | Path, extra: tuple[str, ...] = ()) -> list[Path]:
    """The tokenizer files (and `extra` patterns) of a checkpoint folder, in a stable order."""
    return sorted({p for pattern in (*TOKENIZER_FILES, *extra) for p in Path(folder).glob(pattern) if p.is_file()})


def _rope(parent: Mapping[str, Any]) -> tuple[float, dict[str, Any] | None]:
    """(rope_theta, rope_scaling) from a transformers 5 `rope_parameters` or an older config.json."""
    rope = dict(parent.get("rope_parameters") or parent.get("rope_scaling") or {})
    theta = float(rope.pop("rope_theta", parent.get("rope_theta", 10000.0)))
    kind = rope.get("rope_type", rope.get("type", "default"))
    return theta, (rope if kind != "default" else None)


def _check_full_attention(parent: Mapping[str, Any]) -> None:
    """Our attention is full causal attention; a parent that attends through a window would differ."""
    window = parent.get("sliding_window")
    if parent["model_type"] == "qwen2":
        active = bool(parent.get("use_sliding_window"))
    else:
        active = window is not None and window < parent.get("max_position_embeddings", 0)
    if active:
        raise ValueError(f"{parent['model_type']} parent uses sliding-window attention ({window}); not supported")


def decilm_config_from_llama(
    parent: PretrainedConfig | Mapping[str, Any], block_configs: list[dict[str, Any]] | None = None
) -> DeciLMConfig:
    """The DeciLMConfig of a Llama-family parent: its globals, with `block_configs` (default: every layer
    equal to the parent's block)."""
    cfg = parent.to_dict() if isinstance(parent, PretrainedConfig) else dict(parent)
    if cfg.get("model_type") not in SUPPORTED_PARENTS:
        raise ValueError(f"parent model_type {cfg.get('model_type')!r} is not one of {SUPPORTED_PARENTS}")
    _check_full_attention(cfg)
    heads = cfg["num_attention_heads"]
    if block_configs is None:
        kv_heads = cfg.get("num_key_value_heads") or heads
        parent_block = {
            "attention": {"n_heads_in_group": heads // kv_heads},
            "ffn": {"intermediate_size": cfg["intermediate_size"]},
        }
        block_configs = [copy.deepcopy(parent_block) for _ in range(cfg["num_hidden_layers"])]
    rope_theta, rope_scaling = _rope(cfg)
    return DeciLMConfig(
        vocab_size=cfg["vocab_size"],
        hidden_size=cfg["hidden_size"],
        num_hidden_layers=cfg["num_hidden_layers"],
        num_attention_heads=heads,
        head_dim=cfg.get("head_dim"),
        hidden_act=cfg.get("hidden_act", "silu"),
        max_position_embeddings=cfg.get("max_position_embeddings", 2048),
        initializer_range=cfg.get("initializer_range", 0.02),
        rms_norm_eps=cfg.get("rms_norm_eps", 1e-6),
        pad_token_id=cfg.get("pad_token_id"),
        bos_token_id=cfg.get("bos_token_id"),
        eos_token_id=cfg.get("eos_token_id"),
        tie_word_embeddings=cfg.get("tie_word_embeddings", False),
        rope_theta=rope_theta,
        rope_scaling=rope_scaling,
        attention_bias=cfg["model_type"] == "qwen2" or cfg.get("attention_bias", False),
        attention_dropout=cfg.get("attention_dropout", 0.0),
        mlp_bias=cfg.get("mlp_bias", False),
        block_configs=block_configs,
    )


def llama_to_decilm(parent: PreTrainedModel) -> DeciLMForCausalLM:
    """The parent as a DeciLMForCausalLM (same dtype, same generation config) holding the parent's own weight
    tensors (built on meta and assigned: no copy, so the two share their weights)."""
    from puzzle.checkpoint import empty_model

    config = decilm_config_from_llama(parent.config)
    state = dict(parent.state_dict())
    if parent.config.model_type == "qwen2":
        for i in range(config.num_hidden_layers):
            o_proj = state[f"model.layers.{i}.self_attn.o_proj.weight"]
            state[f"model.layers.{i}.self_attn.o_proj.bias"] = o_proj.new_zeros(o_proj.shape[0])
    child = empty_model(config, parent.dtype)
    child.load_state_dict(state, strict=not config.tie_word_embeddings, assign=True)
    child.tie_weights()
    child.generation_config = copy.deepcopy(parent.generation_config)
    return child.eval()


def save_child(model: DeciLMForCausalLM, out_dir: str | os.PathLike, extra_files: Iterable[Path] = ()) -> Path:
    """save_pretrained (safetensors, plus configuration_decilm.py and modeling_decilm.py) into a temporary folder
    beside `out_dir`, with `extra_files` copied in, then renamed onto `out_dir`: a killed job leaves no half child."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        for path in extra_files:
            shutil.copy2(path, tmp / Path(path).name)
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def convert_llama(parent: str | os.PathLike | PreTrainedModel, out_dir: str | os.PathLike) -> Path:
    """Write the Nemotron-NAS form of a Llama-family parent (a checkpoint folder or a loaded model) to `out_dir`;
    a folder's tokenizer files come along. Weights are read from safetensors only (never unpickled)."""
    if isinstance(parent, PreTrainedModel):
        return save_child(llama_to_decilm(parent), out_dir)
    from puzzle import checkpoint  # converts while reading: the parent is never held as a Llama

    return save_child(checkpoint.load(parent, decilm=True), out_dir, tokenizer_files(parent))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--parent", required=True, help="Llama-family HF checkpoint folder (safetensors)")
    parser.add_argument("--out", required=True, help="output folder of the Nemotron-NAS checkpoint")


def main(args: argparse.Namespace) -> None:
    out = convert_llama(args.parent, args.out)
    config = DeciLMConfig.from_pretrained(out)
    print(f"{out}: nemotron-nas checkpoint, {config.num_hidden_layers} layers, each equal to {args.parent}'s")
