"""Children that stock vLLM and TensorRT-LLM load: each engine's per-layer reading of a child, mirrored.

Neither engine installs on a CPU-only machine, so what each one reads from a Nemotron-NAS checkpoint is repeated
here from its source, and run on children this project assembles:

- vLLM `vllm/model_executor/models/nemotron_nas.py` at commit 00bd1493b3e82d6c13c68ee8a0e1c5a96707e190
  (DeciLMDecoderLayer.__init__, DeciLMForCausalLM: tied head) with `LlamaAttention`/`LlamaMLP` of
  `vllm/model_executor/models/llama.py`, and `NemotronNasModelArchConfigConvertor.get_total_num_kv_heads` of
  `vllm/transformers_utils/model_arch_config_convertor.py` at ee92a6f355ccecabf55c391b40d9463e9083823c.
- TensorRT-LLM `tensorrt_llm/_torch/models/modeling_nemotron_nas.py` at commit
  0193dbd4189221d0fd5e9f20cdb384d3da8dbc24 (NemotronNASDecoderLayer, NemotronNASModel.__init__) and
  `tensorrt_llm/_torch/model_config.py` (`_infer_nemotron_ffn_mult`; torch_dtype filled from dtype), index copy
  listed at 1a0dc5f70054f66d892df6a964996fc5ead6f81e.

Both engines load the config with transformers' AutoConfig and trust_remote_code, so they get the DeciLMConfig
copied into the checkpoint, whose block_configs are attribute objects.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from safetensors import safe_open
from transformers import AutoConfig

from fixtures import SPACE, make_child, make_library, make_parent
from puzzle import config as config_mod
from puzzle import serving
from puzzle.nemotron_nas import block_config as block_config_module
from puzzle.nemotron_nas import configuration_decilm

HIDDEN, HEADS, KV, WIDTH, VOCAB = 64, 4, 2, 512, 96  # widths 512 and 256 are ffn_mult 12.0 and 6.0 at hidden 64
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64}
# Every variant kind each engine runs (vLLM: no linear subblocks); the parent block comes first.
VLLM_LAYERS = [("attn_kv2", "ffn_100"), ("attn_kv1", "ffn_50"), ("attn_noop", "ffn_50"), ("attn_kv2", "ffn_noop"),
               ("attn_noop", "ffn_100")]
TRTLLM_LAYERS = [("attn_kv2", "ffn_100"), ("attn_kv1", "ffn_50"), ("attn_linear", "ffn_noop"),
                 ("attn_noop", "ffn_linear"), ("attn_linear", "ffn_linear")]


def _ffn_mult_to_intermediate_size(ffn_mult: float, n_embd: int) -> int:
    """Both engines' own copy (identical in vLLM and TensorRT-LLM)."""
    intermediate_size = int(2 * ffn_mult * n_embd / 3)
    return intermediate_size if intermediate_size % 256 == 0 else intermediate_size + 256 - intermediate_size % 256


def vllm_tensors(config) -> dict[str, tuple[int, ...]]:
    """Checkpoint tensors vLLM's DeciLMForCausalLM loads for `config` (HF names, before it stacks q/k/v and
    gate/up), with shapes; its loader raises on a checkpoint tensor it has no parameter for and on a parameter
    the checkpoint does not fill, so the two sets must be equal."""
    h, heads = config.hidden_size, config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or h // heads  # LlamaAttention
    attention_bias = getattr(config, "attention_bias", False) or getattr(config, "bias", False)
    bias_o_proj = attention_bias
    out = {"model.embed_tokens.weight": (config.vocab_size, h), "model.norm.weight": (h,)}
    if not config.tie_word_embeddings:  # a tied head is the embedding (lm_head.* skipped)
        out["lm_head.weight"] = (config.vocab_size, h)
    for layer_idx in range(config.num_hidden_layers):
        block_config = config.block_configs[layer_idx]
        p = f"model.layers.{layer_idx}."
        if not block_config.attention.no_op:
            num_kv_heads = config.num_attention_heads // block_config.attention.n_heads_in_group
            q, kv = heads * head_dim, num_kv_heads * head_dim
            out |= {p + "input_layernorm.weight": (h,), p + "self_attn.q_proj.weight": (q, h),
                    p + "self_attn.k_proj.weight": (kv, h), p + "self_attn.v_proj.weight": (kv, h),
                    p + "self_attn.o_proj.weight": (h, q)}
            if attention_bias:
                out |= {p + "self_attn.q_proj.bias": (q,), p + "self_attn.k_proj.bias": (kv,),
                        p + "self_attn.v_proj.bias": (kv,)}
            if bias_o_proj:
                out[p + "self_attn.o_proj.bias"] = (h,)
        if not block_config.ffn.no_op:
            if hasattr(block_config.ffn, "ffn_mult"):
                intermediate_size = _ffn_mult_to_intermediate_size(block_config.ffn.ffn_mult, config.hidden_size)
            else:
                intermediate_size = block_config.ffn.intermediate_size
            hidden_act = getattr(block_config.ffn, "hidden_act", config.hidden_act)
            assert hidden_act == "silu"  # LlamaMLP raises on anything else
            out |= {
                p + "post_attention_layernorm.weight": (h,),
                p + "mlp.gate_proj.weight": (intermediate_size, h),
                p + "mlp.up_proj.weight": (intermediate_size, h),
                p + "mlp.down_proj.weight": (h, intermediate_size),
            }
            if getattr(config, "mlp_bias", False):
                out |= {p + f"mlp.{n}_proj.bias": (intermediate_size,) for n in ("gate", "up")}
                out[p + "mlp.down_proj.bias"] = (h,)
    return out


def vllm_total_num_kv_heads(config) -> int:
    for block in config.block_configs:
        if not block.attention.no_op:
            return config.num_attention_heads // block.attention.n_heads_in_group
    raise RuntimeError("Couldn't determine number of kv heads")


def trtllm_tensors(config) -> dict[str, tuple[int, ...]]:
    """Checkpoint tensors TensorRT-LLM's NemotronNASForCausalLM builds for `config` (no biases anywhere)."""
    h = config.hidden_size
    head_dim = getattr(config, "head_dim", None) or h // config.num_attention_heads
    # NemotronNASModel.__init__: the global num_key_value_heads becomes a per-layer list (0 = no KV cache).
    num_key_value_heads = [
        config.num_attention_heads // block.attention.n_heads_in_group if block.attention.n_heads_in_group else 0
        for block in config.block_configs
    ]
    out = {"model.embed_tokens.weight": (config.vocab_size, h), "model.norm.weight": (h,)}
    if not config.tie_word_embeddings:
        out["lm_head.weight"] = (config.vocab_size, h)
    for layer_idx, block_config in enumerate(config.block_configs):
        p = f"model.layers.{layer_idx}."
        if not block_config.attention.no_op:
            out[p + "input_layernorm.weight"] = (h,)
            if block_config.attention.replace_with_linear:
                out[p + "self_attn.linear_attn.weight"] = (h, h)
            else:
                q, kv = config.num_attention_heads * head_dim, num_key_value_heads[layer_idx] * head_dim
                out |= {
                    p + "self_attn.q_proj.weight": (q, h),
                    p + "self_attn.k_proj.weight": (kv, h),
                    p + "self_attn.v_proj.weight": (kv, h),
                    p + "self_attn.o_proj.weight": (h, q),
                }
        if not block_config.ffn.no_op:
            out[p + "post_attention_layernorm.weight"] = (h,)
            if block_config.ffn.replace_with_linear:
                out[p + "mlp.linear_mlp.weight"] = (h, h)
            else:
                width = _ffn_mult_to_intermediate_size(block_config.ffn.ffn_mult, config.hidden_size)
                out |= {
                    p + "mlp.gate_proj.weight": (width, h),
                    p + "mlp.up_proj.weight": (width, h),
                    p + "mlp.down_proj.weight": (h, width),
                }
    return out


def trtllm_mlp_hidden_size(config) -> int:
    """model_config.py `_infer_nemotron_ffn_mult` (the KV-cache manager's mlp_hidden_size)."""
    biggest_ffn_mult = max([(x.ffn.ffn_mult if x.ffn.ffn_mult is not None else 0) for x in config.block_configs])
    return _ffn_mult_to_intermediate_size(biggest_ffn_mult, config.hidden_size)


def checkpoint_tensors(child: Path) -> dict[str, tuple[int, ...]]:
    with safe_open(child / "model.safetensors", "pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}


@pytest.fixture(scope="module")
def children(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serving")
    parent = make_parent(root / "parent", layers=5, hidden=HIDDEN, heads=HEADS, kv=KV, inter=WIDTH, vocab=VOCAB)
    cfg_path = parent / "config.json"
    # llama3 RoPE, as transformers 5 writes a Llama config.json
    cfg_path.write_text(
        json.dumps({**json.loads(cfg_path.read_text()), "rope_parameters": {**LLAMA3_ROPE, "rope_theta": 500000.0}})
    )
    library = make_library(parent, root / "library", SPACE)
    return {
        "vllm": make_child(root, parent, library, VLLM_LAYERS, "vllm"),
        "trtllm": make_child(root, parent, library, TRTLLM_LAYERS, "trtllm"),
    }


def _engine_config(child: Path):
    """What vLLM and TensorRT-LLM get: AutoConfig with trust_remote_code. (In this process `import puzzle`
    registered the same class; the checkpoint's copy is byte-identical, and test_modeling loads the copy alone.)"""
    for name in ("configuration_decilm.py", "block_config.py"):
        source = Path(configuration_decilm.__file__).with_name(name)
        assert (child / name).read_bytes() == source.read_bytes()
    return AutoConfig.from_pretrained(child, trust_remote_code=True)


def test_vllm_reads_every_layer_of_a_child_it_supports(children):
    config = _engine_config(children["vllm"])
    assert [b.attention.no_op for b in config.block_configs] == [False, False, True, False, True]
    assert [b.ffn.ffn_mult for b in config.block_configs] == [12.0, 6.0, 6.0, None, 12.0]
    assert checkpoint_tensors(children["vllm"]) == vllm_tensors(config)
    assert vllm_total_num_kv_heads(config) == 2
    assert config.rope_parameters["rope_type"] == "llama3" and config.rope_parameters["rope_theta"] == 500000.0


def test_trtllm_reads_every_layer_of_a_child_it_supports(children):
    config = _engine_config(children["trtllm"])
    assert checkpoint_tensors(children["trtllm"]) == trtllm_tensors(config)
    assert trtllm_mlp_hidden_size(config) == WIDTH
    written = json.loads((children["trtllm"] / "config.json").read_text())
    assert written["torch_dtype"] == written["dtype"] == "float32"  # TensorRT-LLM reads torch_dtype
    assert config.rope_scaling["rope_type"] == "llama3" and config.rope_scaling["factor"] == 8.0


def test_what_an_engine_cannot_build_is_refused_by_the_config_check(children):
    """The mirrors fail exactly where serve.engine refuses the search space."""
    with pytest.raises(TypeError):  # linear attention: n_heads_in_group is None
        vllm_tensors(_engine_config(children["trtllm"]))
    explicit = _engine_config(children["vllm"]).with_block_config(
        0, {"attention": {"n_heads_in_group": 2}, "ffn": {"intermediate_size": 172}}
    )  # a width ffn_mult cannot express: transformers runs it, neither engine does
    with pytest.raises(TypeError):
        trtllm_tensors(explicit)
    with pytest.raises(TypeError):  # the ffn object has the ffn_mult attribute (None), so vLLM takes that branch
        vllm_tensors(explicit)
    parent = {
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV,
        "intermediate_size": WIDTH,
        "num_hidden_layers": 5,
    }
    assert serving.conflict("vllm", SPACE, parent) == (
        "search_space.attention.linear = true: expected false when serve.engine = vllm "
        "(vLLM builds no replace_with_linear subblock)"
    )
    assert serving.conflict("trtllm", SPACE, parent) is None  # 512 and 256 are ffn_mult widths at hidden 64
    narrow = {**SPACE, "ffn": {**SPACE["ffn"], "ratios": [0.3]}}  # 512 x 0.3 = 153.6 -> 152 (multiple_of 8)
    assert serving.conflict("trtllm", narrow, parent).startswith(
        "search_space.ffn.ratios has 0.3 (width 152 with multiple_of = 8): expected a width ffn_mult expresses at "
        "hidden_size 64"
    )
    assert serving.conflict("trtllm", SPACE, {**parent, "model_type": "qwen2"}).startswith(
        "parent model_type = qwen2 (q/k/v biases): expected a parent without biases"
    )


def test_config_json_round_trips_unchanged(children, tmp_path):
    for child in children.values():
        written = (child / "config.json").read_text()
        AutoConfig.from_pretrained(child, trust_remote_code=True).save_pretrained(tmp_path / child.name)
        assert (tmp_path / child.name / "config.json").read_text() == written


def test_block_configs_are_frozen_attribute_objects_written_as_the_published_json():
    block = block_config_module.BlockConfig.from_dict(
        {"attention": {"n_heads_in_group": 8}, "ffn": {"ffn_mult": 2.625}}, "b", 8192, 64
    )
    with pytest.raises(AttributeError):
        block.attention.no_op = True
    assert block.to_dict() == {
        "attention": {"n_heads_in_group": 8, "no_op": False, "replace_with_linear": False},
        "ffn": {"ffn_mult": 2.625, "no_op": False, "replace_with_linear": False},
    }
    assert block.ffn.width(8192) == 14336 and block.attention.num_key_value_heads(64) == 8


def test_serve_engine_is_checked_before_any_job(tmp_path):
    assert config_mod.validate({})["serve"]["engine"] == "transformers"  # the embedded default runs anything
    with pytest.raises(
        config_mod.ConfigError,
        match=r"^config error: search_space\.attention\.linear = true: "
        r"expected false when serve\.engine = vllm",
    ):
        config_mod.validate({"serve": {"engine": "vllm"}})
    with pytest.raises(
        config_mod.ConfigError,
        match=r"^config error: parent intermediate_size = 344: expected a "
        r"width ffn_mult expresses at hidden_size 128",
    ):  # the embedded parent's FFN
        config_mod.validate({"serve": {"engine": "trtllm"}})
    # The real-model config names vLLM and fits it (Llama-3.1-8B's shape).
    parent, text = tmp_path / "llama", tmp_path / "train.jsonl"
    parent.mkdir()
    (parent / "config.json").write_text(
        json.dumps(
            {
                "model_type": "llama",
                "hidden_size": 4096,
                "num_attention_heads": 32,
                "num_key_value_heads": 8,
                "intermediate_size": 14336,
                "num_hidden_layers": 32,
                "vocab_size": 128256,
            }
        )
    )
    text.write_text('{"text": "hi"}\n')
    real = yaml.safe_load((Path(__file__).parents[1] / "config" / "llama-3.1-8b-h100.yaml").read_text())
    real["parent"]["path"], real["data"]["files"] = str(parent), [str(text)]
    assert config_mod.validate(real)["serve"]["engine"] == "vllm"
