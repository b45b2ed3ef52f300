"""What each serving engine runs of the Nemotron-NAS format, and the search-space check that follows from it.

`serve.engine` names the engine the child is meant for; a search space holding a variant that engine cannot
build is a config error before any job starts, not a child that fails to load at the end:

    transformers  anything this package's model code runs (explicit widths, linear subblocks, biases)
    vllm          no `replace_with_linear` subblock: its decoder layer builds GQA attention or a SwiGLU FFN only;
                  every FFN width through `ffn_mult`: it reads `intermediate_size` only when the ffn object has no
                  `ffn_mult` attribute, and our block objects (like NVIDIA's) always have one
    trtllm        every FFN width through `ffn_mult` (its only source of a width); no biased parent: attention and
                  MLP are built with bias=False

Read from vLLM `vllm/model_executor/models/nemotron_nas.py` (commit 00bd1493b3e8) and TensorRT-LLM
`tensorrt_llm/_torch/models/modeling_nemotron_nas.py` (commit 0193dbd41892); tests/test_serving.py mirrors them.
Imports no torch.
"""

from __future__ import annotations

from typing import Any

from puzzle import blocks

ENGINES = ("transformers", "vllm", "trtllm")
_WHY_WIDTHS = {
    "vllm": "vLLM takes the width from ffn_mult whenever the block has that attribute",
    "trtllm": "TensorRT-LLM computes every FFN width from ffn_mult",
}


def _biased(parent_cfg: dict[str, Any]) -> str | None:
    if parent_cfg.get("model_type") == "qwen2":  # q/k/v biases without an attention_bias key
        return "model_type = qwen2 (q/k/v biases)"
    for key in ("attention_bias", "mlp_bias"):
        if parent_cfg.get(key):
            return f"{key} = true"
    return None


def conflict(engine: str, space: dict[str, Any], parent_cfg: dict[str, Any]) -> str | None:
    """The first way the search space (or the parent) does not fit `engine`, as 'key = value: expected ...'
    (None when it fits). `parent_cfg` is the parent's config.json dict."""
    if engine == "transformers":
        return None
    when = f"when serve.engine = {engine}"
    if engine == "vllm":
        for kind in ("attention", "ffn"):
            if space[kind]["linear"]:
                return (
                    f"search_space.{kind}.linear = true: expected false {when} "
                    "(vLLM builds no replace_with_linear subblock)"
                )
    if engine == "trtllm" and (bias := _biased(parent_cfg)):
        return (
            f"parent {bias}: expected a parent without biases {when} "
            "(TensorRT-LLM builds attention and MLP with bias=False)"
        )
    parent = blocks.ParentShape.from_config(parent_cfg)
    multiple = space["ffn"]["multiple_of"]
    for name in blocks.search_space(parent, space)[1]:
        pct = blocks.ffn_pct_of(name)
        width = blocks.ffn_width(pct, parent, multiple) if pct is not None else None
        if width is None or blocks.intermediate_size_to_ffn_mult(width, parent.hidden_size) is not None:
            continue
        what = (
            f"parent intermediate_size = {width}"
            if pct == 100
            else f"search_space.ffn.ratios has {pct / 100:g} (width {width} with multiple_of = {multiple})"
        )
        return (
            f"{what}: expected a width ffn_mult expresses at hidden_size {parent.hidden_size} (a multiple of 256) "
            f"{when} ({_WHY_WIDTHS[engine]})"
        )
    return None
