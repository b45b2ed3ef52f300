"""Per-token quality measures of a model against the next tokens and against its parent.

Shared by GKD (training loss, validation KL) and evaluation, so the KL a child is trained on is
the KL it is judged by. All in float32, in nats; each returns one value per token position.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F


def forward_kl(parent_logits: torch.Tensor, child_logits: torch.Tensor) -> torch.Tensor:
    """KL(parent || child) = sum_v p_v (log p_v - log q_v) at every position ([..., V] -> [...]).

    Exactly 0 where the two logits are equal (the difference of equal log-softmaxes is 0)."""
    logp = torch.log_softmax(parent_logits.float(), dim=-1)
    logq = torch.log_softmax(child_logits.float(), dim=-1)
    return (logp.exp() * (logp - logq)).sum(-1)


def next_token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of `targets` under `logits` at every position ([..., V], [...] -> [...])."""
    return F.cross_entropy(logits.flatten(0, -2).float(), targets.flatten(), reduction="none").view(targets.shape)


def next_token_correct(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1.0 where the argmax of `logits` is the target, else 0.0."""
    return (logits.argmax(-1) == targets).float()


def cosine_distance(child_hidden: torch.Tensor, parent_hidden: torch.Tensor) -> torch.Tensor:
    """1 - cos(h_child, h_parent) at every position ([..., H] -> [...])."""
    return 1.0 - F.cosine_similarity(child_hidden.float(), parent_hidden.float(), dim=-1)


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The decoder layers of an HF causal LM (Llama-family or Nemotron-NAS)."""
    return model.base_model.layers


@contextmanager
def layer_outputs(model: torch.nn.Module) -> Iterator[list[torch.Tensor]]:
    """Within the block, every forward of `model` appends each decoder layer's output hidden state
    (before the final norm) to the yielded list, in layer order."""
    captured: list[torch.Tensor] = []

    def hook(_module: torch.nn.Module, _args: tuple, output: torch.Tensor | tuple) -> None:
        captured.append(output[0] if isinstance(output, tuple) else output)

    handles = [layer.register_forward_hook(hook) for layer in decoder_layers(model)]
    try:
        yield captured
    finally:
        for h in handles:
            h.remove()
