"""The heterogeneous child model in the published Nemotron-NAS ("DeciLM") checkpoint format.

`block_config.py`, `configuration_decilm.py` and `modeling_decilm.py` import nothing from the puzzle pipeline:
save_pretrained copies them next to the weights, so a bare transformers install loads a child with
`trust_remote_code=True`.

The model classes are imported on first use: `puzzle.blocks` (torch-free, for the search) imports
`block_config` from here, which must not pull in torch or transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

from puzzle.nemotron_nas.block_config import (
    AttentionConfig,
    BlockConfig,
    FFNConfig,
    ffn_mult_to_intermediate_size,
    intermediate_size_to_ffn_mult,
)

_LAZY = {
    "DeciLMConfig": "configuration_decilm",
    **{
        name: "modeling_decilm"
        for name in (
            "DeciLMAttention", "DeciLMDecoderLayer", "DeciLMForCausalLM", "DeciLMLinearAttention",
            "DeciLMLinearMLP", "DeciLMMLP", "DeciLMModel", "DeciLMPreTrainedModel",
        )
    },
}

__all__ = [
    "AttentionConfig", "BlockConfig", "FFNConfig", "ffn_mult_to_intermediate_size",
    "intermediate_size_to_ffn_mult", "register", *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def register() -> None:
    """Register `nemotron-nas` with transformers' AutoConfig / AutoModel / AutoModelForCausalLM (idempotent)."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    from puzzle.nemotron_nas.configuration_decilm import DeciLMConfig
    from puzzle.nemotron_nas.modeling_decilm import DeciLMForCausalLM, DeciLMModel

    AutoConfig.register(DeciLMConfig.model_type, DeciLMConfig, exist_ok=True)
    AutoModel.register(DeciLMConfig, DeciLMModel, exist_ok=True)
    AutoModelForCausalLM.register(DeciLMConfig, DeciLMForCausalLM, exist_ok=True)
