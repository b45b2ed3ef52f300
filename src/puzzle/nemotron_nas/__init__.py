"""The heterogeneous child model in the published Nemotron-NAS ("DeciLM") checkpoint format.

`configuration_decilm.py` and `modeling_decilm.py` import nothing from the puzzle pipeline: save_pretrained
copies both next to the weights, so a bare transformers install loads a child with `trust_remote_code=True`.
"""

from puzzle.nemotron_nas.configuration_decilm import (
    DeciLMConfig,
    ffn_mult_to_intermediate_size,
    intermediate_size_to_ffn_mult,
)
from puzzle.nemotron_nas.modeling_decilm import (
    DeciLMAttention,
    DeciLMDecoderLayer,
    DeciLMForCausalLM,
    DeciLMLinearAttention,
    DeciLMLinearMLP,
    DeciLMMLP,
    DeciLMModel,
    DeciLMPreTrainedModel,
)

__all__ = [
    "DeciLMAttention",
    "DeciLMConfig",
    "DeciLMDecoderLayer",
    "DeciLMForCausalLM",
    "DeciLMLinearAttention",
    "DeciLMLinearMLP",
    "DeciLMMLP",
    "DeciLMModel",
    "DeciLMPreTrainedModel",
    "ffn_mult_to_intermediate_size",
    "intermediate_size_to_ffn_mult",
    "register",
]


def register() -> None:
    """Register `nemotron-nas` with transformers' AutoConfig / AutoModel / AutoModelForCausalLM (idempotent)."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    AutoConfig.register(DeciLMConfig.model_type, DeciLMConfig, exist_ok=True)
    AutoModel.register(DeciLMConfig, DeciLMModel, exist_ok=True)
    AutoModelForCausalLM.register(DeciLMConfig, DeciLMForCausalLM, exist_ok=True)
