"""Nemotron-NAS ("DeciLM") model: a Llama whose layers differ (per-layer KV heads and FFN width, linear and
no-op subblocks), in the published checkpoint format (Llama tensor names, `block_configs` in config.json).

RMSNorm, RoPE and the attention kernels are transformers' own Llama pieces, so a subblock equal to the
parent's computes exactly what the parent computes. The KV cache is compact: it holds one entry per layer
with real attention (`config.attention_layers`), none for no-op or linear attention.

Imports nothing from the puzzle pipeline: this file and configuration_decilm.py ship as remote code.
"""

import re
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.masking_utils import create_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.llama.modeling_llama import (
    LlamaRMSNorm,
    LlamaRotaryEmbedding,
    apply_rotary_pos_emb,
    eager_attention_forward,
)
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, can_return_tuple
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .configuration_decilm import DeciLMConfig

_LAYER_KEY = re.compile(r"^(?:model\.)?layers\.(\d+)\.(.+)$")


class DeciLMAttention(nn.Module):
    """Llama GQA attention with this layer's own KV-head count (`n_heads_in_group` query heads per KV head)."""

    def __init__(self, config: DeciLMConfig, layer_idx: int) -> None:
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.num_key_value_heads = config.num_key_value_heads_of(layer_idx)
        if not self.num_key_value_heads:
            raise ValueError(f"block_configs[{layer_idx}].attention: no_op/linear, not GQA attention")
        # Position of this layer's K/V in the compact cache (attention-less layers take no slot).
        self.cache_idx = config.cache_index(layer_idx)
        self.head_dim = config.head_dim
        self.num_key_value_groups = config.num_attention_heads // self.num_key_value_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.is_causal = True

        q_out, kv_out = config.num_attention_heads * self.head_dim, self.num_key_value_heads * self.head_dim
        self.q_proj = nn.Linear(config.hidden_size, q_out, bias=config.attention_bias)
        self.k_proj = nn.Linear(config.hidden_size, kv_out, bias=config.attention_bias)
        self.v_proj = nn.Linear(config.hidden_size, kv_out, bias=config.attention_bias)
        self.o_proj = nn.Linear(q_out, config.hidden_size, bias=config.attention_bias)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None,
        cache: Cache | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)

        query_states = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        key_states = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value_states = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)

        cos, sin = position_embeddings
        query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)

        if cache is not None:
            key_states, value_states = cache.update(key_states, value_states, self.cache_idx)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self,
            query_states,
            key_states,
            value_states,
            attention_mask,
            dropout=0.0 if not self.training else self.attention_dropout,
            scaling=self.scaling,
            **kwargs,
        )
        attn_output = attn_output.reshape(*input_shape, -1).contiguous()
        return self.o_proj(attn_output), attn_weights


class DeciLMLinearAttention(nn.Module):
    """`replace_with_linear` attention: one hidden x hidden matrix on the normed input; no mixing across
    positions, so no KV cache. Called like DeciLMAttention (extra arguments are ignored)."""

    def __init__(self, config: DeciLMConfig) -> None:
        super().__init__()
        self.linear_attn = nn.Linear(config.hidden_size, config.hidden_size, bias=False)

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, None]:
        return self.linear_attn(hidden_states), None


class DeciLMMLP(nn.Module):
    """Llama SwiGLU, `down(act(gate(x)) * up(x))`, at this layer's width."""

    def __init__(self, config: DeciLMConfig, layer_idx: int) -> None:
        super().__init__()
        self.hidden_size = config.hidden_size
        self.intermediate_size = config.intermediate_size_of(layer_idx)
        if not self.intermediate_size:
            raise ValueError(f"block_configs[{layer_idx}].ffn: no_op/linear, not a SwiGLU FFN")
        self.gate_proj = nn.Linear(self.hidden_size, self.intermediate_size, bias=config.mlp_bias)
        self.up_proj = nn.Linear(self.hidden_size, self.intermediate_size, bias=config.mlp_bias)
        self.down_proj = nn.Linear(self.intermediate_size, self.hidden_size, bias=config.mlp_bias)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class DeciLMLinearMLP(nn.Module):
    """`replace_with_linear` FFN: one hidden x hidden matrix on the normed input."""

    def __init__(self, config: DeciLMConfig) -> None:
        super().__init__()
        self.linear_mlp = nn.Linear(config.hidden_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_mlp(x)


class DeciLMDecoderLayer(GradientCheckpointingLayer):
    """One layer as `config.block_configs[layer_idx]` says. A no-op subblock has neither module nor norm (the
    attribute is None and the checkpoint has no tensors for it); the others keep Llama's pre-norm residual."""

    def __init__(self, config: DeciLMConfig, layer_idx: int) -> None:
        super().__init__()
        self.hidden_size = config.hidden_size
        self.layer_idx = layer_idx
        attention, ffn = config.block_configs[layer_idx].attention, config.block_configs[layer_idx].ffn

        self.input_layernorm = None if attention.no_op else LlamaRMSNorm(config.hidden_size, config.rms_norm_eps)
        if attention.no_op:
            self.self_attn = None
        elif attention.replace_with_linear:
            self.self_attn = DeciLMLinearAttention(config)
        else:
            self.self_attn = DeciLMAttention(config, layer_idx)

        self.post_attention_layernorm = None if ffn.no_op else LlamaRMSNorm(config.hidden_size, config.rms_norm_eps)
        if ffn.no_op:
            self.mlp = None
        elif ffn.replace_with_linear:
            self.mlp = DeciLMLinearMLP(config)
        else:
            self.mlp = DeciLMMLP(config, layer_idx)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = False,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> torch.Tensor:
        if self.self_attn is not None:
            attn_output, _ = self.self_attn(
                hidden_states=self.input_layernorm(hidden_states),
                attention_mask=attention_mask,
                position_ids=position_ids,
                cache=cache,
                use_cache=use_cache,
                position_embeddings=position_embeddings,
                **kwargs,
            )
            hidden_states = hidden_states + attn_output
        if self.mlp is not None:
            hidden_states = hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))
        return hidden_states


def _describe_key(key: str, problem: str, config: DeciLMConfig) -> str:
    match = _LAYER_KEY.match(key)
    if match is None:
        return f"{key}: {problem}"
    layer = int(match.group(1))
    block = config.block_configs[layer].to_dict() if layer < config.num_hidden_layers else "no such layer"
    return f"layer {layer}, field {match.group(2)}: {problem} (block_configs[{layer}] = {block})"


class DeciLMPreTrainedModel(PreTrainedModel):
    config_class = DeciLMConfig
    config: DeciLMConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["DeciLMDecoderLayer"]
    _skip_keys_device_placement = ["cache"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_record_outputs = {"hidden_states": DeciLMDecoderLayer, "attentions": DeciLMAttention}

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> Any:
        """As PreTrainedModel.from_pretrained, but a checkpoint whose tensors do not match `block_configs`
        (missing or unexpected) is an error naming the layer and field, never a silent random init."""
        want_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        missing = sorted(info["missing_keys"])
        problems = [_describe_key(k, "missing from the checkpoint", model.config) for k in missing]
        # Unexpected layer tensors mean config and weights disagree; others (lm_head for DeciLMModel) are fine.
        problems += [
            _describe_key(k, "in the checkpoint but not in the model", model.config)
            for k in sorted(info["unexpected_keys"])
            if _LAYER_KEY.match(k)
        ]
        if problems:
            raise ValueError("checkpoint tensors do not match block_configs:\n  " + "\n  ".join(problems))
        return (model, info) if want_info else model


class DeciLMModel(DeciLMPreTrainedModel):
    def __init__(self, config: DeciLMConfig) -> None:
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList([DeciLMDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        # position_embeddings = rotary_emb(hidden_states, position_ids): the (cos, sin) every attention takes.
        self.rotary_emb = LlamaRotaryEmbedding(config=config)
        self.gradient_checkpointing = False
        self.post_init()

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")  # the name before transformers 5.24
    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPast:
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        if use_cache and cache is None:
            # Grown on demand, so it gets exactly one entry per attention layer.
            cache = DynamicCache()
        if position_ids is None:
            # Cache entry 0 belongs to the first attention layer, so its length is the number of past tokens.
            past_seen_tokens = cache.get_seq_length() if cache is not None else 0
            position_ids = torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device) + past_seen_tokens
            position_ids = position_ids.unsqueeze(0)

        causal_mask = create_causal_mask(
            config=self.config,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            cache=cache,
            position_ids=position_ids,
        )
        hidden_states = inputs_embeds
        position_embeddings = self.rotary_emb(hidden_states, position_ids=position_ids)
        for decoder_layer in self.layers:
            hidden_states = decoder_layer(
                hidden_states,
                attention_mask=causal_mask,
                position_embeddings=position_embeddings,
                position_ids=position_ids,
                cache=cache,
                use_cache=use_cache,
                **kwargs,
            )
        hidden_states = self.norm(hidden_states)
        return BaseModelOutputWithPast(last_hidden_state=hidden_states, cache=cache)


class DeciLMForCausalLM(DeciLMPreTrainedModel, GenerationMixin):
    # Makes save_pretrained copy this file (and the config's) next to the weights and write `auto_map`.
    _auto_class = "AutoModelForCausalLM"
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: DeciLMConfig) -> None:
        super().__init__(config)
        self.model = DeciLMModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def _prepare_cache_for_generation(
        self, generation_config: Any, model_kwargs: dict, *args: Any, **kwargs: Any
    ) -> None:
        super()._prepare_cache_for_generation(generation_config, model_kwargs, *args, **kwargs)
        made = model_kwargs.get("cache")
        # generate() sizes its default DynamicCache by num_hidden_layers; ours holds attention layers only.
        if type(made) is DynamicCache and not getattr(made, "_is_user_defined", False):
            model_kwargs["cache"] = DynamicCache(offloading=made.offloading)

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")  # the name before transformers 5.24
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Unpack[TransformersKwargs],
    ) -> CausalLMOutputWithPast:
        outputs: BaseModelOutputWithPast = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        # Only the last `logits_to_keep` positions (0 = all): generation needs just the last one.
        slice_indices = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, slice_indices, :])
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )
