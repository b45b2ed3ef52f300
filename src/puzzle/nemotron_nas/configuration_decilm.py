"""DeciLMConfig: the published Nemotron-NAS ("DeciLM", `model_type: nemotron-nas`) configuration.

A Llama configuration whose per-layer shape lives in `block_configs`, one entry per layer:

    {"attention": {"n_heads_in_group": int | None, "no_op": bool, "replace_with_linear": bool},
     "ffn":       {"ffn_mult": float | None, "no_op": bool, "replace_with_linear": bool}}

The global `num_key_value_heads` and `intermediate_size` are null. An ffn entry may carry an explicit
`intermediate_size` instead of `ffn_mult` (vLLM reads it) for widths that `ffn_mult` cannot express.

This file imports nothing from the puzzle pipeline: it ships as remote code next to a checkpoint.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from transformers import PretrainedConfig

_ATTENTION_DEFAULTS = {"n_heads_in_group": None, "no_op": False, "replace_with_linear": False}
_FFN_DEFAULTS = {"no_op": False, "replace_with_linear": False}
# Published fields that no released model uses; we reject them rather than silently ignore them.
_UNSUPPORTED = {
    "attention": (
        "sparsify", "window_length", "num_sink_tokens", "use_prefill_window_in_sink_attention", "unshifted_sink"
    ),
    "ffn": ("sparsify",),
}


def ffn_mult_to_intermediate_size(ffn_mult: float, hidden_size: int) -> int:
    """The published formula (HF remote code, vLLM, TRT-LLM and llama.cpp agree)."""
    width = int(2 * ffn_mult * hidden_size / 3)
    return ((width + 255) // 256) * 256


def intermediate_size_to_ffn_mult(intermediate_size: int, hidden_size: int) -> float | None:
    """The `ffn_mult` that yields exactly this width, or None when no `ffn_mult` can express it."""
    ffn_mult = 1.5 * intermediate_size / hidden_size
    if ffn_mult_to_intermediate_size(ffn_mult, hidden_size) == intermediate_size:
        return ffn_mult
    return None


def _flags(where: str, entry: dict[str, Any]) -> None:
    if entry["no_op"] and entry["replace_with_linear"]:
        raise ValueError(f"{where}: no_op and replace_with_linear are both set")
    for key in _UNSUPPORTED[where.rsplit(".", 1)[-1]]:
        if entry.get(key):
            raise ValueError(f"{where}.{key}={entry[key]!r} is not supported (only null/false)")


def _attention_entry(where: str, entry: Mapping[str, Any], num_attention_heads: int) -> dict[str, Any]:
    entry = {**_ATTENTION_DEFAULTS, **entry}
    _flags(where, entry)
    if entry["no_op"] or entry["replace_with_linear"]:
        return entry
    group = entry["n_heads_in_group"]
    if isinstance(group, bool) or not isinstance(group, int) or group <= 0 or num_attention_heads % group:
        raise ValueError(
            f"{where}.n_heads_in_group={group!r} does not divide num_attention_heads={num_attention_heads}"
        )
    return entry


def _ffn_entry(where: str, entry: Mapping[str, Any], hidden_size: int) -> dict[str, Any]:
    entry = {**_FFN_DEFAULTS, **entry}
    _flags(where, entry)
    if entry["no_op"] or entry["replace_with_linear"]:
        return entry
    width = entry.get("intermediate_size")
    if width is None:
        if entry.get("ffn_mult") is None:
            raise ValueError(f"{where}.ffn_mult: missing (give ffn_mult or intermediate_size)")
        width = ffn_mult_to_intermediate_size(float(entry["ffn_mult"]), hidden_size)
    if isinstance(width, bool) or not isinstance(width, int) or width <= 0:
        raise ValueError(f"{where}.intermediate_size={width!r} is not a positive integer")
    # Canonical form: `ffn_mult` whenever it expresses the width (every runtime reads it), else the exact width.
    entry.pop("intermediate_size", None)
    ffn_mult = intermediate_size_to_ffn_mult(width, hidden_size)
    if ffn_mult is None:
        entry.pop("ffn_mult", None)
        entry["intermediate_size"] = width
    else:
        entry["ffn_mult"] = ffn_mult
    return entry


class DeciLMConfig(PretrainedConfig):
    """Nemotron-NAS configuration. Without `block_configs`, every layer gets the uniform Llama block given by
    `num_key_value_heads` and `intermediate_size` (then stored as null, as in the published format)."""

    model_type = "nemotron-nas"
    # Makes save_pretrained copy this file next to the weights and write `auto_map`.
    _auto_class = "AutoConfig"
    keys_to_ignore_at_inference = ["cache"]

    def __init__(
        self,
        vocab_size: int = 32000,
        hidden_size: int = 4096,
        intermediate_size: int | None = None,
        num_hidden_layers: int = 32,
        num_attention_heads: int = 32,
        num_key_value_heads: int | None = None,
        head_dim: int | None = None,
        hidden_act: str = "silu",
        max_position_embeddings: int = 2048,
        initializer_range: float = 0.02,
        rms_norm_eps: float = 1e-6,
        use_cache: bool = True,
        pad_token_id: int | None = None,
        bos_token_id: int | None = 1,
        eos_token_id: int | list[int] | None = 2,
        tie_word_embeddings: bool = False,
        rope_theta: float = 10000.0,
        rope_scaling: dict[str, Any] | None = None,
        attention_bias: bool = False,
        attention_dropout: float = 0.0,
        mlp_bias: bool = False,
        block_configs: list[dict[str, Any]] | None = None,
        **kwargs: Any,
    ) -> None:
        if block_configs is None:
            kv_heads = num_key_value_heads or num_attention_heads
            if num_attention_heads % kv_heads:
                raise ValueError(
                    f"num_key_value_heads={kv_heads} does not divide num_attention_heads={num_attention_heads}"
                )
            width = intermediate_size or 11008  # Llama's default width
            uniform = {
                "attention": {"n_heads_in_group": num_attention_heads // kv_heads},
                "ffn": {"intermediate_size": width},
            }
            block_configs = [uniform] * num_hidden_layers
        if len(block_configs) != num_hidden_layers:
            raise ValueError(
                f"block_configs has {len(block_configs)} entries but num_hidden_layers={num_hidden_layers} "
                "(one entry per layer)"
            )
        self.block_configs = [
            self._block_entry(i, block, hidden_size, num_attention_heads) for i, block in enumerate(block_configs)
        ]
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.head_dim = head_dim or hidden_size // num_attention_heads
        # Per-layer in `block_configs`; null globally, as the published format has them.
        self.num_key_value_heads = None
        self.intermediate_size = None
        self.hidden_act = hidden_act
        self.max_position_embeddings = max_position_embeddings
        self.initializer_range = initializer_range
        self.rms_norm_eps = rms_norm_eps
        self.use_cache = use_cache
        self.attention_bias = attention_bias
        self.attention_dropout = attention_dropout
        self.mlp_bias = mlp_bias
        self.pad_token_id = pad_token_id
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        self.tie_word_embeddings = tie_word_embeddings
        # transformers 5 folds these into `rope_parameters` during __init__; to_dict() writes them back out.
        self.rope_theta = rope_theta
        self.rope_parameters = copy.deepcopy(rope_scaling)
        super().__init__(**kwargs)

    @staticmethod
    def _block_entry(i: int, block: Any, hidden_size: int, num_attention_heads: int) -> dict[str, Any]:
        if not isinstance(block, Mapping) or not {"attention", "ffn"} <= block.keys():
            raise ValueError(f"block_configs[{i}]: expected {{'attention': {{...}}, 'ffn': {{...}}}}, got {block!r}")
        return {
            "attention": _attention_entry(f"block_configs[{i}].attention", block["attention"], num_attention_heads),
            "ffn": _ffn_entry(f"block_configs[{i}].ffn", block["ffn"], hidden_size),
        }

    # ----- per-layer shape ------------------------------------------------------------------------------------

    def num_key_value_heads_of(self, layer_idx: int) -> int:
        """KV heads of layer `layer_idx` (0 when its attention is no-op or linear: it keeps no KV cache)."""
        entry = self.block_configs[layer_idx]["attention"]
        if entry["no_op"] or entry["replace_with_linear"]:
            return 0
        return self.num_attention_heads // entry["n_heads_in_group"]

    def intermediate_size_of(self, layer_idx: int) -> int:
        """SwiGLU width of layer `layer_idx` (0 when its FFN is no-op or linear)."""
        entry = self.block_configs[layer_idx]["ffn"]
        if entry["no_op"] or entry["replace_with_linear"]:
            return 0
        if entry.get("intermediate_size") is not None:
            return entry["intermediate_size"]
        return ffn_mult_to_intermediate_size(entry["ffn_mult"], self.hidden_size)

    @property
    def attention_layers(self) -> list[int]:
        """Layers with real (KV-cached) attention; the KV cache holds one entry per such layer, in this order."""
        return [i for i in range(self.num_hidden_layers) if self.num_key_value_heads_of(i)]

    def cache_index(self, layer_idx: int) -> int:
        """Index of layer `layer_idx`'s K/V in the (compact) KV cache."""
        return self.attention_layers.index(layer_idx)

    def with_block_config(self, layer_idx: int, block_config: Mapping[str, Any]) -> "DeciLMConfig":
        """A validated copy whose layer `layer_idx` is `block_config` (e.g. to build one variant's subblock)."""
        config = copy.deepcopy(self)
        config.block_configs[layer_idx] = self._block_entry(
            layer_idx, copy.deepcopy(block_config), self.hidden_size, self.num_attention_heads
        )
        return config

    # ----- serialization --------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        # Published layout: `rope_theta` and `rope_scaling` at top level (rope_scaling null for plain RoPE).
        rope = output.pop("rope_parameters", None) or {}
        output["rope_theta"] = rope.get("rope_theta", output.get("rope_theta"))
        scaling = {k: v for k, v in rope.items() if k != "rope_theta"}
        output["rope_scaling"] = scaling if scaling.get("rope_type", "default") != "default" else None
        return output
