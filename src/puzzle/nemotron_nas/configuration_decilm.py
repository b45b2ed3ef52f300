"""DeciLMConfig: the published Nemotron-NAS ("DeciLM", `model_type: nemotron-nas`) configuration.

A Llama configuration whose per-layer shape lives in `block_configs`, one BlockConfig per layer (attribute
objects, see block_config.py; config.json holds their `to_dict()`). The global `num_key_value_heads` and
`intermediate_size` are null.

Written so that transformers 4.x and 5.x readers (vLLM, TensorRT-LLM) both see `rope_scaling` and the dtype:
config.json carries `rope_theta` + `rope_scaling` at top level and both `dtype` and `torch_dtype`.

This file imports nothing from the puzzle pipeline: it ships as remote code next to a checkpoint.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from transformers import PretrainedConfig

from .block_config import (
    BlockConfig,
    ffn_mult_to_intermediate_size,  # noqa: F401  (re-exported: the format's one width formula)
    intermediate_size_to_ffn_mult,  # noqa: F401
)

# transformers 5 keeps RoPE in `rope_parameters` and makes `rope_scaling` a property over it; in 4.x
# `rope_scaling` is a plain attribute, and TensorRT-LLM (pinned to 4.x) reads only that.
_ROPE_SCALING_IS_ALIAS = isinstance(getattr(PretrainedConfig, "rope_scaling", None), property)


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
        self.block_configs: list[BlockConfig] = [
            BlockConfig.from_dict(block, f"block_configs[{i}]", hidden_size, num_attention_heads)
            for i, block in enumerate(block_configs)
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
        # transformers 5 folds these into `rope_parameters` during __init__; to_dict() writes them back out.
        self.rope_theta = rope_theta
        if _ROPE_SCALING_IS_ALIAS:
            self.rope_parameters = copy.deepcopy(rope_scaling)
        else:
            self.rope_scaling = copy.deepcopy(rope_scaling)
        # Through the base class: transformers 4.x's __init__ resets these to its own defaults (tie = True).
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )

    # ----- per-layer shape ------------------------------------------------------------------------------------

    def num_key_value_heads_of(self, layer_idx: int) -> int:
        """KV heads of layer `layer_idx` (0 when its attention is no-op or linear: it keeps no KV cache)."""
        return self.block_configs[layer_idx].attention.num_key_value_heads(self.num_attention_heads)

    def intermediate_size_of(self, layer_idx: int) -> int:
        """SwiGLU width of layer `layer_idx` (0 when its FFN is no-op or linear)."""
        return self.block_configs[layer_idx].ffn.width(self.hidden_size)

    @property
    def attention_layers(self) -> list[int]:
        """Layers with real (KV-cached) attention; the KV cache holds one entry per such layer, in this order."""
        return [i for i in range(self.num_hidden_layers) if self.num_key_value_heads_of(i)]

    def cache_index(self, layer_idx: int) -> int:
        """Index of layer `layer_idx`'s K/V in the (compact) KV cache."""
        return self.attention_layers.index(layer_idx)

    def with_block_config(self, layer_idx: int, block_config: BlockConfig | Mapping[str, Any]) -> DeciLMConfig:
        """A validated copy whose layer `layer_idx` is `block_config` (e.g. to build one variant's subblock)."""
        config = copy.deepcopy(self)
        config.block_configs[layer_idx] = BlockConfig.from_dict(
            block_config, f"block_configs[{layer_idx}]", self.hidden_size, self.num_attention_heads
        )
        return config

    # ----- serialization --------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        output["block_configs"] = [block.to_dict() for block in self.block_configs]
        # Published layout: `rope_theta` and `rope_scaling` at top level (rope_scaling null for plain RoPE).
        # transformers 4 already has it so; 5 holds both in `rope_parameters`.
        if "rope_parameters" in output:
            rope = output.pop("rope_parameters") or {}
            output["rope_theta"] = rope.get("rope_theta", output.get("rope_theta"))
            scaling = {k: v for k, v in rope.items() if k != "rope_theta"}
            output["rope_scaling"] = scaling if scaling.get("rope_type", "default") != "default" else None
        return output

    def to_json_string(self, use_diff: bool = True) -> str:
        """As transformers writes it, plus `torch_dtype` beside `dtype`: transformers >= 4.56 writes only
        `dtype`, older readers only know `torch_dtype`. (Added here, not in to_dict(): transformers 5 reads every
        to_dict() key back as an attribute while diffing, and `torch_dtype` is a deprecated one there.)"""
        output = json.loads(super().to_json_string(use_diff))
        dtype = output.get("dtype", output.get("torch_dtype"))
        if dtype is not None:
            output["dtype"] = output["torch_dtype"] = dtype
        return json.dumps(output, indent=2, sort_keys=True) + "\n"
