"""The GKD loss terms computed in sequence chunks, so no sequence x vocabulary tensor is ever held.

At 8192 tokens and a 128k vocabulary one window's float32 logits are 4.2 GB (and as much again for
the teacher and for their softmaxes). Here the logits of `chunk` positions at a time are made from
the final hidden states by the heads, reduced to per-token sums, and dropped; each chunk runs under
activation checkpointing, so its logits are recomputed in the backward pass instead of kept (an
exact KL, as in Puzzletron's TrainingFlashKLD: modelopt/torch/puzzletron/distillation/flash_kld.py).
The per-token terms are those of `metrics`, so the sums equal the full computation up to float
rounding; tests/test_gkd.py checks values and gradients.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from puzzle import metrics

TERMS = ("cosine", "kl", "lm")
Head = Callable[[torch.Tensor], torch.Tensor]


def _spans(length: int, chunk: int) -> list[slice]:
    return [slice(i, min(i + chunk, length)) for i in range(0, length, chunk)]


def _head_sums(
    s_final: torch.Tensor, t_final: torch.Tensor | None, targets: torch.Tensor, s_head: Head, t_head: Head | None,
    kl: bool, lm: bool,
) -> torch.Tensor:
    """[sum of KL(teacher || student), sum of next-token NLL] over the positions of one chunk."""
    s_logits = s_head(s_final).float()
    zero = s_logits.new_zeros(())
    kl_sum = lm_sum = zero
    if kl:
        with torch.no_grad():
            t_logits = t_head(t_final)
        kl_sum = metrics.forward_kl(t_logits, s_logits).sum()
    if lm:
        lm_sum = F.cross_entropy(s_logits.flatten(0, -2), targets.flatten(), reduction="sum")
    return torch.stack([kl_sum, lm_sum])


def _cosine_sum(s_hidden: torch.Tensor, t_hidden: torch.Tensor) -> torch.Tensor:
    return metrics.cosine_distance(s_hidden, t_hidden).sum()


def _run(fn: Callable[..., torch.Tensor], *args: torch.Tensor | None) -> torch.Tensor:
    """`fn(*args)`, recomputed in the backward pass when it takes part in one (nothing inside is kept)."""
    if torch.is_grad_enabled():
        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


def term_means(
    s_final: torch.Tensor,
    s_layers: list[torch.Tensor],
    s_head: Head,
    t_final: torch.Tensor | None,
    t_layers: list[torch.Tensor] | None,
    t_head: Head | None,
    targets: torch.Tensor,
    terms: dict[str, bool],
    chunk: int,
) -> torch.Tensor:
    """[cosine, kl, lm] means over the batch's tokens (0 for a term switched off).

    s_final/t_final: the student's and teacher's final (normed) hidden states [B, T, H]; s_layers/
    t_layers: every decoder layer's output; the heads map hidden states to logits. cosine = sum over
    layers of the mean over tokens of 1 - cos; kl = mean KL(teacher || student); lm = mean NLL."""
    if not any(terms[t] for t in TERMS):
        raise ValueError("no GKD loss term is switched on")
    length, tokens = targets.shape[1], targets.numel()
    sums = s_final.new_zeros(3, dtype=torch.float32)
    if terms["kl"] or terms["lm"]:

        def head(s: torch.Tensor, t: torch.Tensor | None, y: torch.Tensor) -> torch.Tensor:
            return _head_sums(s, t, y, s_head, t_head, terms["kl"], terms["lm"])

        for span in _spans(length, chunk):
            t_span = t_final[:, span] if terms["kl"] else None
            sums = sums + F.pad(_run(head, s_final[:, span], t_span, targets[:, span]), (1, 0))
    if terms["cosine"]:
        if len(s_layers) != len(t_layers):
            raise ValueError(f"child has {len(s_layers)} layer outputs, parent {len(t_layers)}")
        cos = sum(_run(_cosine_sum, s[:, span], t[:, span]) for s, t in zip(s_layers, t_layers)
                  for span in _spans(length, chunk))
        sums = sums + F.pad(cos.reshape(1), (0, 2))
    return sums / tokens


@torch.no_grad()
def kl_sums(s_final: torch.Tensor, s_head: Head, t_final: torch.Tensor, t_head: Head, chunk: int) -> torch.Tensor:
    """Each window's KL(teacher || student) summed over its positions [B], `chunk` positions at a time."""
    total = s_final.new_zeros(s_final.shape[0], dtype=torch.float32)
    for span in _spans(s_final.shape[1], chunk):
        total += metrics.forward_kl(t_head(t_final[:, span]), s_head(s_final[:, span])).sum(-1)
    return total


def final_and_layers(
    model: torch.nn.Module, ids: torch.Tensor, layers: bool
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(the final normed hidden state, each decoder layer's output when `layers`, else []) of an HF
    causal LM, without computing its logits: `logits_to_keep` selects no position."""
    final: list[torch.Tensor] = []
    with ExitStack() as stack:
        outs = stack.enter_context(metrics.layer_outputs(model)) if layers else []
        handle = model.base_model.norm.register_forward_hook(lambda _m, _a, out: final.append(out))
        stack.callback(handle.remove)
        model(input_ids=ids, logits_to_keep=torch.zeros(0, dtype=torch.long, device=ids.device))
    return final[0], list(outs)
