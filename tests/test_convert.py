"""Llama-family parent -> Nemotron-NAS checkpoint: same logits, same greedy generation, published config."""

import argparse
import json

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from fixtures import TINY, random_model
from puzzle import convert
from puzzle.nemotron_nas import DeciLMForCausalLM

LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 5000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 32}


def ids(length: int = 10) -> torch.Tensor:
    return torch.randint(0, 256, (2, length), generator=torch.Generator().manual_seed(3))


def assert_same_model(parent, child):
    x = ids(40)  # past original_max_position_embeddings, so llama3 RoPE scaling matters
    with torch.no_grad():
        assert (parent(x).logits - child(x).logits).abs().max().item() <= 1e-5
    prompt = ids(6)
    expected = parent.generate(prompt, max_new_tokens=8, do_sample=False)
    assert torch.equal(child.generate(prompt, max_new_tokens=8, do_sample=False), expected)
    assert torch.equal(child.generate(prompt, max_new_tokens=8, do_sample=False, use_cache=False), expected)


@pytest.fixture
def llama_dir(tmp_path):
    parent = random_model(LlamaForCausalLM, LlamaConfig(**TINY, rope_parameters=dict(LLAMA3_ROPE)))
    parent.save_pretrained(tmp_path / "parent")
    (tmp_path / "parent" / "tokenizer.json").write_text("{}")
    return tmp_path / "parent", parent


def test_cli_converts_a_llama_checkpoint(llama_dir, tmp_path, capsys):
    src, parent = llama_dir
    parser = argparse.ArgumentParser()
    convert.add_arguments(parser)
    convert.main(parser.parse_args(["--parent", str(src), "--out", str(tmp_path / "child")]))
    assert "3 layers" in capsys.readouterr().out
    child = AutoModelForCausalLM.from_pretrained(tmp_path / "child")
    assert type(child) is DeciLMForCausalLM
    assert_same_model(parent, child)
    assert (tmp_path / "child" / "tokenizer.json").read_text() == "{}"
    cfg = json.loads((tmp_path / "child" / "config.json").read_text())
    assert cfg["model_type"] == "nemotron-nas" and cfg["num_key_value_heads"] is None
    assert cfg["rope_theta"] == 5000.0 and cfg["rope_scaling"]["rope_type"] == "llama3"
    # Every block is the parent's: 2 KV heads, and width 172 (not a multiple of 256, so written exactly).
    assert all(b["attention"]["n_heads_in_group"] == 2 for b in cfg["block_configs"])
    assert all(b["ffn"]["intermediate_size"] == 172 and "ffn_mult" not in b["ffn"] for b in cfg["block_configs"])


def test_parent_width_on_256_is_written_as_ffn_mult(tmp_path):
    parent = random_model(
        LlamaForCausalLM, LlamaConfig(**{**TINY, "intermediate_size": 256}, tie_word_embeddings=True)
    )
    out = convert.convert_llama(parent, tmp_path / "child")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["tie_word_embeddings"] is True
    assert all(b["ffn"]["ffn_mult"] == 6.0 and "intermediate_size" not in b["ffn"] for b in cfg["block_configs"])
    assert_same_model(parent, DeciLMForCausalLM.from_pretrained(out))


def test_qwen2_parent_keeps_its_qkv_biases():
    parent = random_model(Qwen2ForCausalLM, Qwen2Config(**TINY, tie_word_embeddings=True))
    child = convert.llama_to_decilm(parent)
    assert child.config.attention_bias
    assert torch.equal(child.model.layers[0].self_attn.q_proj.bias, parent.model.layers[0].self_attn.q_proj.bias)
    assert not child.model.layers[0].self_attn.o_proj.bias.any()
    assert_same_model(parent, child)


def test_mistral_parent_without_sliding_window():
    parent = random_model(MistralForCausalLM, MistralConfig(**TINY, sliding_window=None))
    assert_same_model(parent, convert.llama_to_decilm(parent))


def test_unsupported_parents_are_refused():
    with pytest.raises(ValueError, match="sliding-window"):
        convert.decilm_config_from_llama(MistralConfig(**TINY, sliding_window=16))
    with pytest.raises(ValueError, match="'gpt2' is not one of"):
        convert.decilm_config_from_llama({"model_type": "gpt2"})


def test_decilm_config_from_llama_with_child_blocks():
    blocks = [{"attention": {"no_op": True}, "ffn": {"intermediate_size": 96}}] * 3
    config = convert.decilm_config_from_llama(LlamaConfig(**TINY), blocks)
    assert config.attention_layers == [] and config.intermediate_size_of(2) == 96
    assert (config.hidden_size, config.vocab_size, config.rms_norm_eps) == (64, 256, 1e-5)
