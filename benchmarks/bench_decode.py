"""CPU decode throughput of a Llama parent vs a hand-made Nemotron-NAS child, side by side.

    python benchmarks/bench_decode.py [--parent CHECKPOINT_DIR] [--new-tokens 64] [--batch 1]

Without --parent the parent is a random-init Llama (4 layers, hidden 128, 4 heads, 2 KV heads, width 344,
vocab 4096). The child drops attention in every other layer and halves those layers' FFN width (weights do
not matter for speed, so it is random-init). The parent converted to DeciLM is timed too: its speed
vs the Llama parent's is this implementation's own overhead. Decode = single-token forwards on a KV cache
after a prefill, timed with a wall clock; the models' runs alternate and the median of --repeats is reported.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedModel

from puzzle import blocks
from puzzle.convert import decilm_config_from_llama, llama_to_decilm
from puzzle.nemotron_nas import DeciLMForCausalLM

DEFAULT_PARENT = dict(num_hidden_layers=4, hidden_size=128, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=344, vocab_size=4096, max_position_embeddings=2048)


def child_of(parent: PreTrainedModel, shape: blocks.ParentShape) -> DeciLMForCausalLM:
    """Odd layers: attention no-op and FFN at half the parent's width; even layers: the parent's block."""
    parent_attn, parent_ffn = blocks.parent_variants(shape)
    block_configs = [
        blocks.block_config(blocks.ATTN_NOOP, blocks.ffn_name(50), shape, multiple=1)
        if i % 2
        else blocks.block_config(parent_attn, parent_ffn, shape, multiple=1)
        for i in range(shape.num_hidden_layers)
    ]
    return DeciLMForCausalLM(decilm_config_from_llama(parent.config, block_configs)).to(parent.dtype).eval()


@torch.inference_mode()
def decode_tokens_per_s(model: PreTrainedModel, prompt: torch.Tensor, new_tokens: int) -> float:
    """One run: prefill (untimed), then `new_tokens` single-token steps on the KV cache."""
    out = model(prompt, use_cache=True)
    cache, token = out.cache, out.logits[:, -1:].argmax(-1)
    start = time.perf_counter()
    for _ in range(new_tokens):
        out = model(token, cache=cache, use_cache=True)
        cache, token = out.cache, out.logits[:, -1:].argmax(-1)
    return prompt.shape[0] * new_tokens / (time.perf_counter() - start)


def kv_bytes_per_token(model: PreTrainedModel, prompt: torch.Tensor) -> int:
    with torch.inference_mode():
        cache = model(prompt[:1, :1], use_cache=True).cache
    return sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parent", help="Llama-family checkpoint folder (default: random tiny Llama)")
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)

    if args.parent:
        parent = AutoModelForCausalLM.from_pretrained(args.parent, use_safetensors=True, dtype="auto").eval()
    else:
        parent = LlamaForCausalLM(LlamaConfig(**DEFAULT_PARENT)).eval()
    shape = blocks.ParentShape.from_config(parent.config.to_dict())
    child = child_of(parent, shape)
    prompt = torch.randint(0, parent.config.vocab_size, (args.batch, args.prompt_len))

    models = {"parent": parent, "parent (DeciLM)": llama_to_decilm(parent), "child": child}
    rates: dict[str, list[float]] = {name: [] for name in models}
    # Interleaved runs, so a busy machine slows both alike; the first round is a warm-up.
    for round_ in range(args.repeats + 1):
        for name, model in models.items():
            rate = decode_tokens_per_s(model, prompt, args.new_tokens)
            if round_:
                rates[name].append(rate)
    rows = [
        (name, model.num_parameters(), kv_bytes_per_token(model, prompt), statistics.median(rates[name]))
        for name, model in models.items()
    ]
    print(f"decode on CPU, {torch.get_num_threads()} threads, batch {args.batch}, prompt {args.prompt_len}, "
          f"{args.new_tokens} new tokens, median of {args.repeats}")
    layers = [
        blocks.composition(blocks.attention_name_of(b.attention, shape.num_attention_heads),
                           blocks.ffn_name_of(b.ffn, shape))
        for b in child.config.block_configs
    ]
    print(f"child layers: {', '.join(layers)}")
    print(f"{'model':<16}{'params':>12}{'KV bytes/token':>16}{'decode tok/s':>14}")
    for name, params, kv, rate in rows:
        print(f"{name:<16}{params:>12,}{kv:>16,}{rate:>14.1f}")
    (_, p_params, p_kv, p_rate), _, (_, c_params, c_kv, c_rate) = rows
    print(f"{'child / parent':<16}{c_params / p_params:>12.3f}{c_kv / p_kv:>16.3f}{c_rate / p_rate:>14.3f}")


if __name__ == "__main__":
    main()
