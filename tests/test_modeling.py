"""The Nemotron-NAS child model: exact math per subblock, the config format, save/load, KV cache, remote code."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoModelForCausalLM

from puzzle import blocks
from puzzle.convert import save_child
from puzzle.nemotron_nas import (
    DeciLMAttention,
    DeciLMConfig,
    DeciLMDecoderLayer,
    DeciLMForCausalLM,
    DeciLMModel,
    ffn_mult_to_intermediate_size,
    intermediate_size_to_ffn_mult,
)

HIDDEN, HEADS, VOCAB = 64, 4, 256
HEAD_DIM = HIDDEN // HEADS

# One layer of each kind: GQA (2 and 1 KV heads, and full MHA), linear and no-op subblocks, explicit and
# ffn_mult widths.
MIXED_BLOCKS = [
    {"attention": {"n_heads_in_group": 2}, "ffn": {"intermediate_size": 172}},
    {"attention": {"no_op": True}, "ffn": {"replace_with_linear": True}},
    {"attention": {"replace_with_linear": True}, "ffn": {"no_op": True}},
    {"attention": {"n_heads_in_group": 4}, "ffn": {"ffn_mult": 6.0}},
    {"attention": {"no_op": True}, "ffn": {"intermediate_size": 96}},
    {"attention": {"n_heads_in_group": 1}, "ffn": {"no_op": True}},
]


def make_config(block_configs=MIXED_BLOCKS, **overrides) -> DeciLMConfig:
    kwargs = dict(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=len(block_configs),
        num_attention_heads=HEADS,
        rms_norm_eps=1e-5,
        rope_theta=500.0,
        block_configs=block_configs,
    )
    return DeciLMConfig(**{**kwargs, **overrides})


def make_model(config: DeciLMConfig, seed: int = 0) -> DeciLMForCausalLM:
    """Random weights everywhere, norms included (their default all-ones would hide a missing norm)."""
    torch.manual_seed(seed)
    model = DeciLMForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model


def input_ids(batch: int = 2, length: int = 9, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


# ----- an independent forward, in plain torch ops ---------------------------------------------------------------


def ref_rmsnorm(x, weight, eps=1e-5):
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def ref_rope(x, theta=500.0):
    """x: [batch, heads, seq, head_dim]; rotate-half RoPE at positions 0..seq-1."""
    dim, seq = x.shape[-1], x.shape[-2]
    inv_freq = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    angles = torch.arange(seq, dtype=torch.float32)[:, None] * inv_freq[None, :]
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()
    rotated = torch.cat([-x[..., dim // 2 :], x[..., : dim // 2]], -1)
    return x * cos + rotated * sin


def ref_attention(x, sd, prefix, kv_heads):
    batch, seq, _ = x.shape
    q = (x @ sd[prefix + "q_proj.weight"].T).view(batch, seq, HEADS, HEAD_DIM).transpose(1, 2)
    k = (x @ sd[prefix + "k_proj.weight"].T).view(batch, seq, kv_heads, HEAD_DIM).transpose(1, 2)
    v = (x @ sd[prefix + "v_proj.weight"].T).view(batch, seq, kv_heads, HEAD_DIM).transpose(1, 2)
    q, k = ref_rope(q), ref_rope(k)
    k, v = k.repeat_interleave(HEADS // kv_heads, dim=1), v.repeat_interleave(HEADS // kv_heads, dim=1)
    scores = q @ k.transpose(-1, -2) / HEAD_DIM**0.5
    scores = scores.masked_fill(torch.ones(seq, seq, dtype=torch.bool).triu(1), float("-inf"))
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, seq, HIDDEN)
    return out @ sd[prefix + "o_proj.weight"].T


def ref_swiglu(x, sd, prefix):
    return (F.silu(x @ sd[prefix + "gate_proj.weight"].T) * (x @ sd[prefix + "up_proj.weight"].T)) @ sd[
        prefix + "down_proj.weight"
    ].T


def ref_logits(block_configs, sd, ids):
    x = sd["model.embed_tokens.weight"][ids]
    for i, block in enumerate(block_configs):
        p = f"model.layers.{i}."
        attn, ffn = block["attention"], block["ffn"]
        if not attn.get("no_op"):
            h = ref_rmsnorm(x, sd[p + "input_layernorm.weight"])
            if attn.get("replace_with_linear"):
                x = x + h @ sd[p + "self_attn.linear_attn.weight"].T
            else:
                x = x + ref_attention(h, sd, p + "self_attn.", HEADS // attn["n_heads_in_group"])
        if not ffn.get("no_op"):
            h = ref_rmsnorm(x, sd[p + "post_attention_layernorm.weight"])
            if ffn.get("replace_with_linear"):
                x = x + h @ sd[p + "mlp.linear_mlp.weight"].T
            else:
                x = x + ref_swiglu(h, sd, p + "mlp.")
    return ref_rmsnorm(x, sd["model.norm.weight"]) @ sd["lm_head.weight"].T


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_heterogeneous_forward_matches_reference(attn_implementation):
    model = make_model(make_config())
    model.config._attn_implementation = attn_implementation
    ids = input_ids()
    with torch.no_grad():
        logits = model(ids).logits
        expected = ref_logits(MIXED_BLOCKS, model.state_dict(), ids)
    assert (logits - expected).abs().max().item() <= 1e-5


def test_tensor_names_per_subblock():
    sd = make_model(make_config()).state_dict()
    keys = set(sd)

    def layer(i):
        return {k.removeprefix(f"model.layers.{i}.") for k in keys if k.startswith(f"model.layers.{i}.")}

    gqa = {f"self_attn.{n}_proj.weight" for n in "qkvo"} | {"input_layernorm.weight"}
    swiglu = {f"mlp.{n}_proj.weight" for n in ("gate", "up", "down")} | {"post_attention_layernorm.weight"}
    assert layer(0) == gqa | swiglu
    assert layer(1) == {"mlp.linear_mlp.weight", "post_attention_layernorm.weight"}
    assert layer(2) == {"self_attn.linear_attn.weight", "input_layernorm.weight"}
    assert layer(4) == swiglu
    assert layer(5) == gqa
    assert sd["model.layers.0.self_attn.k_proj.weight"].shape == (2 * HEAD_DIM, HIDDEN)  # 2 KV heads
    assert sd["model.layers.3.self_attn.k_proj.weight"].shape == (1 * HEAD_DIM, HIDDEN)  # 1 KV head
    assert sd["model.layers.0.mlp.gate_proj.weight"].shape == (172, HIDDEN)  # explicit width, exactly
    assert sd["model.layers.3.mlp.gate_proj.weight"].shape == (256, HIDDEN)  # ffn_mult 6.0 at hidden 64
    assert sd["model.layers.1.mlp.linear_mlp.weight"].shape == (HIDDEN, HIDDEN)
    assert {k for k in keys if not k.startswith("model.layers.")} == {
        "model.embed_tokens.weight",
        "model.norm.weight",
        "lm_head.weight",
    }


def test_single_layer_api_reproduces_the_model():
    """What BLD does: one DeciLMDecoderLayer on its own, fed the previous layer's output."""
    model = make_model(make_config())
    ids = input_ids()
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
        hidden = out.hidden_states  # embeddings, then each layer's output (the last one normed)
        position_ids = torch.arange(ids.shape[1])[None]
        position_embeddings = model.model.rotary_emb(hidden[0], position_ids)
        mask = torch.full((ids.shape[1], ids.shape[1]), float("-inf")).triu(1)[None, None]
        for i in range(model.config.num_hidden_layers - 1):
            layer = DeciLMDecoderLayer(model.config, i).eval()
            layer.load_state_dict(model.model.layers[i].state_dict())
            got = layer(hidden[i], attention_mask=mask, position_embeddings=position_embeddings)
            assert torch.allclose(got, hidden[i + 1], atol=1e-5)


def test_with_block_config_builds_a_variant_subblock():
    config = make_config()
    variant = config.with_block_config(1, blocks.block_config("attn_kv1", "ffn_100", _parent_shape(config)))
    attn = DeciLMAttention(variant, 1)
    assert (attn.num_key_value_heads, attn.num_key_value_groups, attn.layer_idx) == (1, 4, 1)
    assert attn.k_proj.weight.shape == (HEAD_DIM, HIDDEN)
    assert config.block_configs[1].attention.no_op  # the original is untouched
    with pytest.raises(ValueError, match=r"block_configs\[1\]\.attention\.n_heads_in_group"):
        config.with_block_config(1, {"attention": {"n_heads_in_group": 3}, "ffn": {"no_op": True}})


def _parent_shape(config: DeciLMConfig) -> blocks.ParentShape:
    return blocks.ParentShape(HIDDEN, HEADS, 2, 172, config.num_hidden_layers)


# ----- the config format --------------------------------------------------------------------------------------


@pytest.mark.parametrize("hidden", [64, 96, 2048, 3072, 4096, 5120, 8192])
def test_ffn_mult_round_trips_for_multiples_of_256(hidden):
    for width in range(256, 50_000, 256):
        mult = intermediate_size_to_ffn_mult(width, hidden)
        assert mult is not None and ffn_mult_to_intermediate_size(mult, hidden) == width


def test_published_ffn_mult_values():
    # Nemotron-Super-49B / Llama-3.1-70B shapes at hidden 8192, and Llama-3.1-8B's 14336 at hidden 4096.
    published = {5.25: 28672, 4.59375: 25088, 3.9375: 21504, 3.28125: 17920, 2.625: 14336, 1.3125: 7168,
                 1.0: 5632, 0.5: 2816}
    for mult, width in published.items():
        assert ffn_mult_to_intermediate_size(mult, 8192) == width
    assert intermediate_size_to_ffn_mult(14336, 4096) == 5.25


def test_explicit_intermediate_size_is_honoured_and_ffn_mult_written_when_possible(tmp_path):
    config = make_config()
    ffn = [b.ffn for b in config.block_configs]
    assert ffn[0].intermediate_size == 172 and ffn[0].ffn_mult is None  # 172 has no ffn_mult
    assert ffn[4].intermediate_size == 96 and ffn[4].ffn_mult is None
    assert ffn[3].ffn_mult == 6.0 and ffn[3].intermediate_size is None
    assert [config.intermediate_size_of(i) for i in range(6)] == [172, 0, 0, 256, 96, 0]
    # An explicit width that ffn_mult can express is written as ffn_mult.
    as_width = make_config([{"attention": {"n_heads_in_group": 1}, "ffn": {"intermediate_size": 512}}])
    assert as_width.block_configs[0].ffn.to_dict() == {"no_op": False, "replace_with_linear": False, "ffn_mult": 12.0}
    config.save_pretrained(tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())["block_configs"]
    assert written[0]["ffn"] == {"intermediate_size": 172, "no_op": False, "replace_with_linear": False}
    assert DeciLMConfig.from_pretrained(tmp_path).intermediate_size_of(0) == 172


def test_block_vocabulary_entries_are_read_as_written():
    parent = blocks.ParentShape(hidden_size=256, num_attention_heads=4, num_key_value_heads=2,
                                intermediate_size=688, num_hidden_layers=4)
    entries = [
        blocks.block_config("attn_kv2", "ffn_100", parent),  # 688: explicit width
        blocks.block_config("attn_kv1", "ffn_50", parent),  # 256: ffn_mult 1.5
        blocks.block_config("attn_linear", "ffn_linear", parent),
        blocks.block_config("attn_noop", "ffn_noop", parent),
    ]
    config = DeciLMConfig(hidden_size=256, num_attention_heads=4, num_hidden_layers=4, block_configs=entries)
    assert [config.num_key_value_heads_of(i) for i in range(4)] == [2, 1, 0, 0]
    assert [config.intermediate_size_of(i) for i in range(2)] == [e.ffn.width(256) for e in entries[:2]] == [688, 256]
    assert config.block_configs == entries  # the same objects back
    for entry, got in zip(entries, config.block_configs):
        assert blocks.attention_name_of(got.attention, 4) == blocks.attention_name_of(entry.attention, 4)
        assert blocks.ffn_name_of(got.ffn, parent) == blocks.ffn_name_of(entry.ffn, parent)


def test_config_json_is_the_published_format(tmp_path):
    model = make_model(make_config(rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                 "high_freq_factor": 4.0, "original_max_position_embeddings": 64}))
    save_child(model, tmp_path / "child")
    cfg = json.loads((tmp_path / "child" / "config.json").read_text())
    assert cfg["model_type"] == "nemotron-nas" and cfg["architectures"] == ["DeciLMForCausalLM"]
    assert cfg["auto_map"] == {
        "AutoConfig": "configuration_decilm.DeciLMConfig",
        "AutoModelForCausalLM": "modeling_decilm.DeciLMForCausalLM",
    }
    assert cfg["num_key_value_heads"] is None and cfg["intermediate_size"] is None
    assert cfg["rope_theta"] == 500.0 and cfg["rope_scaling"]["rope_type"] == "llama3"
    assert cfg["rope_scaling"]["factor"] == 8.0 and "rope_parameters" not in cfg
    for key in ("hidden_size", "num_attention_heads", "rms_norm_eps", "vocab_size", "tie_word_embeddings",
                "hidden_act", "attention_bias", "mlp_bias", "max_position_embeddings", "bos_token_id",
                "eos_token_id", "pad_token_id"):
        assert key in cfg, key
    assert [b["attention"]["n_heads_in_group"] for b in cfg["block_configs"]] == [2, None, None, 4, None, 1]
    assert {p.name for p in (tmp_path / "child").iterdir()} >= {
        "config.json", "model.safetensors", "configuration_decilm.py", "modeling_decilm.py", "block_config.py"
    }


def test_reads_a_published_style_config_json(tmp_path):
    """Key set of the released Nemotron-Super-49B config.json (values scaled down)."""
    attn = {"n_heads_in_group": 2, "no_op": False, "num_sink_tokens": None, "replace_with_linear": False,
            "sparsify": None, "unshifted_sink": False, "use_prefill_window_in_sink_attention": False,
            "window_length": None}
    noop = {**attn, "n_heads_in_group": None, "no_op": True}
    ffn = {"ffn_mult": 6.0, "no_op": False, "replace_with_linear": False, "sparsify": None}
    published = {
        "architectures": ["DeciLMForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "auto_map": {"AutoConfig": "configuration_decilm.DeciLMConfig",
                     "AutoModelForCausalLM": "modeling_decilm.DeciLMForCausalLM"},
        "block_configs": [{"attention": attn, "ffn": ffn}, {"attention": noop, "ffn": {**ffn, "ffn_mult": 3.0}}],
        "bos_token_id": 1, "eos_token_id": [2, 3], "hidden_act": "silu", "hidden_size": HIDDEN,
        "initializer_range": 0.02, "intermediate_size": None, "max_position_embeddings": 256, "mlp_bias": False,
        "model_type": "nemotron-nas", "num_attention_heads": HEADS, "num_hidden_layers": 2,
        "num_key_value_heads": None, "rms_norm_eps": 1e-05,
        "rope_scaling": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                         "original_max_position_embeddings": 64, "rope_type": "llama3"},
        "rope_theta": 500000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "transformers_version": "4.48.3", "use_cache": True, "vocab_size": VOCAB,
    }
    (tmp_path / "config.json").write_text(json.dumps(published))
    config = DeciLMConfig.from_pretrained(tmp_path)
    assert [config.num_key_value_heads_of(i) for i in range(2)] == [2, 0]
    assert [config.intermediate_size_of(i) for i in range(2)] == [256, 256]  # 3.0 -> int(128) rounds up to 256
    assert config.rope_parameters["rope_type"] == "llama3" and config.rope_parameters["rope_theta"] == 500000.0
    assert config.block_configs[0].attention.window_length is None  # published extras are kept
    assert config.to_dict()["block_configs"] == published["block_configs"]
    model = AutoModelForCausalLM.from_config(config)
    assert type(model) is DeciLMForCausalLM and model.model.layers[1].self_attn is None


def test_config_errors_name_the_layer_and_field():
    with pytest.raises(ValueError, match=r"block_configs has 6 entries but num_hidden_layers=5"):
        make_config(num_hidden_layers=5)
    with pytest.raises(ValueError, match=r"num_key_value_heads=3 does not divide num_attention_heads=4"):
        DeciLMConfig(hidden_size=HIDDEN, num_attention_heads=HEADS, num_key_value_heads=3, num_hidden_layers=1)
    bad = [dict(b) for b in MIXED_BLOCKS]
    bad[3] = {"attention": {"n_heads_in_group": 3}, "ffn": {"ffn_mult": 1.0}}
    with pytest.raises(ValueError, match=r"block_configs\[3\]\.attention\.n_heads_in_group=3 does not divide"):
        make_config(bad)
    bad[3] = {"attention": {"n_heads_in_group": 2}, "ffn": {"no_op": False}}
    with pytest.raises(ValueError, match=r"block_configs\[3\]\.ffn\.ffn_mult: missing"):
        make_config(bad)
    bad[3] = {"attention": {"no_op": True, "replace_with_linear": True}, "ffn": {"no_op": True}}
    with pytest.raises(ValueError, match=r"block_configs\[3\]\.attention: no_op and replace_with_linear"):
        make_config(bad)
    bad[3] = {"attention": {"no_op": True, "window_length": 128}, "ffn": {"no_op": True}}
    with pytest.raises(ValueError, match=r"block_configs\[3\]\.attention\.window_length=128 is not supported"):
        make_config(bad)


# ----- save / load --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tied", [False, True])
def test_save_load_round_trip_is_exact(tmp_path, tied):
    model = make_model(make_config(tie_word_embeddings=tied))
    ids = input_ids()
    save_child(model, tmp_path / "child")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "child")  # registered by `import puzzle`
    assert type(loaded) is DeciLMForCausalLM
    assert type(AutoModel.from_pretrained(tmp_path / "child")) is DeciLMModel  # lm_head.weight is not an error
    assert loaded.config.block_configs == model.config.block_configs
    assert ("lm_head.weight" in load_file(tmp_path / "child" / "model.safetensors")) is not tied
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)


def test_save_child_replaces_an_existing_checkpoint(tmp_path):
    save_child(make_model(make_config(), seed=0), tmp_path / "child")
    model = make_model(make_config(), seed=1)
    save_child(model, tmp_path / "child")
    loaded = DeciLMForCausalLM.from_pretrained(tmp_path / "child")
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["child"]  # no temporary folders left behind


def test_missing_or_unexpected_tensor_names_the_layer_and_field(tmp_path):
    save_child(make_model(make_config()), tmp_path)
    path = tmp_path / "model.safetensors"
    tensors = load_file(path)
    del tensors["model.layers.3.self_attn.k_proj.weight"]
    save_file(tensors, path, metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"layer 3, field self_attn\.k_proj\.weight: missing"):
        DeciLMForCausalLM.from_pretrained(tmp_path)
    # A tensor for a subblock the config says is no-op means config and weights disagree.
    tensors["model.layers.3.self_attn.k_proj.weight"] = torch.zeros(HEAD_DIM, HIDDEN)
    tensors["model.layers.1.input_layernorm.weight"] = torch.ones(HIDDEN)
    save_file(tensors, path, metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"layer 1, field input_layernorm\.weight: in the checkpoint"):
        AutoModelForCausalLM.from_pretrained(tmp_path)


# ----- KV cache and generation --------------------------------------------------------------------------------


def test_kv_cache_holds_only_attention_layers():
    config = make_config()
    model = make_model(config)
    ids = input_ids(length=6)
    out = model.generate(ids, max_new_tokens=5, do_sample=False, return_dict_in_generate=True)
    cache = out.cache
    assert config.attention_layers == [0, 3, 5]
    assert len(cache.layers) == 3  # layers 1, 2 (no-op, linear) and 4 (no-op) have no entry
    kv_heads = [config.num_key_value_heads_of(i) for i in config.attention_layers]
    assert [tuple(layer.keys.shape) for layer in cache.layers] == [(2, kv, 10, HEAD_DIM) for kv in kv_heads]
    no_cache = model.generate(ids, max_new_tokens=5, do_sample=False, use_cache=False)
    assert torch.equal(out.sequences, no_cache)


def test_incremental_decoding_matches_full_forward():
    model = make_model(make_config())
    ids = input_ids(length=8)
    with torch.no_grad():
        full = model(ids).logits
        prefix = model(ids[:, :5], use_cache=True)
        cache = prefix.cache
        steps = [prefix.logits]
        for t in range(5, 8):
            out = model(ids[:, t : t + 1], cache=cache, use_cache=True)
            steps.append(out.logits)
    assert (torch.cat(steps, 1) - full).abs().max().item() <= 1e-5


def test_model_without_attention_generates():
    no_attention = [{"attention": {"no_op": True}, "ffn": {"intermediate_size": 96}}] * 2
    model, prompt = make_model(make_config(no_attention)), input_ids(length=4)
    out = model.generate(prompt, max_new_tokens=3, do_sample=False, return_dict_in_generate=True)
    assert len(out.cache.layers) == 0
    assert torch.equal(out.sequences, model.generate(prompt, max_new_tokens=3, do_sample=False, use_cache=False))


# ----- remote code --------------------------------------------------------------------------------------------

REMOTE_LOAD = textwrap.dedent(
    """
    import sys
    sys.modules["puzzle"] = None  # the checkpoint's own code must be enough: importing puzzle now fails
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoModel, AutoModelForCausalLM
    child, io = sys.argv[1], sys.argv[2]
    model = AutoModelForCausalLM.from_pretrained(child, trust_remote_code=True)
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    ids = load_file(io)["ids"]
    with torch.no_grad():
        logits = model(ids).logits
    generated = model.generate(ids, max_new_tokens=4, do_sample=False)
    save_file({"logits": logits, "generated": generated}, io)
    """
)


def test_trust_remote_code_loads_without_our_package(tmp_path):
    model = make_model(make_config())
    ids = input_ids()
    save_child(model, tmp_path / "child")
    io = tmp_path / "io.safetensors"
    save_file({"ids": ids}, io)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1")
    subprocess.run([sys.executable, "-c", REMOTE_LOAD, str(tmp_path / "child"), str(io)],
                   cwd=tmp_path, env=env, check=True, timeout=120)
    remote = load_file(io)
    with torch.no_grad():
        assert torch.equal(remote["logits"], model(ids).logits)
    assert torch.equal(remote["generated"], model.generate(ids, max_new_tokens=4, do_sample=False))
