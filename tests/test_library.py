"""Block library: initialization from the parent (App. A), the activation dump, the file contract."""

import hashlib
import json

import pytest
import torch
from safetensors import safe_open

from fixtures import tiny_setup
from puzzle import bld, bld_init, library
from puzzle.activations import LayerActivations
from puzzle.bld_teacher import StoredInputs


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_setup(tmp_path_factory.mktemp("library"))


def _layer_setup(tiny, layer=0):
    hf, deci = bld.parent_configs(tiny["parent"])
    shape = library.parent_shape(hf.to_dict())
    parent = bld.parent_layer_tensors(tiny["parent"], layer)
    return hf, deci, shape, parent


def _rope(hf, seq):
    return bld.position_embeddings(hf, seq, torch.device("cpu"))


def test_parent_variants_reproduce_the_parent_layer_exactly(tiny):
    hf, deci, shape, parent = _layer_setup(tiny, 1)
    llama_layer = tiny["model"].model.layers[1]
    torch.manual_seed(1)
    x, pe = torch.randn(3, 12, 32), _rope(hf, 12)
    with torch.no_grad():
        want = llama_layer(x, position_embeddings=pe, attention_mask=None)
        h = x + llama_layer.self_attn(llama_layer.input_layernorm(x), position_embeddings=pe, attention_mask=None)[0]
        attn = bld.Entry("attn_kv2", 1, deci, shape, 8, parent, None)  # with the parent's (frozen) FFN
        ffn = bld.Entry("ffn_100", 1, deci, shape, 8, parent, None)  # reads h
        assert (bld.forward(attn.module, x, pe) - want).abs().max().item() < 1e-6
        assert (bld.forward(ffn.module, h, pe) - want).abs().max().item() < 1e-6
    assert attn.input == "x" and ffn.input == "h"


def test_kv_pooling_with_group_size_one_is_the_identity_and_otherwise_the_group_mean():
    w = torch.randn(2 * 4, 6)  # 2 KV heads of head_dim 4, hidden 6
    assert torch.equal(bld_init.pool_kv_heads(w, 2, 2, 4), w)
    assert torch.allclose(bld_init.pool_kv_heads(w, 2, 1, 4), (w[:4] + w[4:]) / 2)


def test_channel_pruning_keeps_exactly_the_top_contribution_channels_in_order():
    # W_down is H x I (nn.Linear): channel i is column i; its norms are 1, 2, 3, 0.1.
    down = torch.tensor([[1.0, 0.0, 3.0, 0.0], [0.0, 2.0, 0.0, 0.1]])
    mean_abs = torch.tensor([4.0, 1.0, 1.0, 50.0])  # contributions 4, 2, 3, 5 -> keep channels 3 and 0
    assert torch.allclose(bld_init.channel_contribution(mean_abs, down), torch.tensor([4.0, 2.0, 3.0, 5.0]))
    parent = {
        bld_init.FFN_NORM: torch.tensor([0.5, 2.0]),
        bld_init.GATE: torch.arange(8.0).reshape(4, 2),
        bld_init.UP: -torch.arange(8.0).reshape(4, 2),
        bld_init.DOWN: down,
    }
    got = bld_init.init_ffn("ffn_50", parent, 2, mean_abs)
    assert torch.equal(got[bld_init.GATE], parent[bld_init.GATE][[0, 3]])
    assert torch.equal(got[bld_init.UP], parent[bld_init.UP][[0, 3]])
    assert torch.equal(got[bld_init.DOWN], down[:, [0, 3]])
    assert torch.equal(got[bld_init.FFN_NORM], parent[bld_init.FFN_NORM])


def test_mean_abs_intermediate_is_measured_on_the_parent_ffn_input(tiny):
    hf, deci, shape, parent = _layer_setup(tiny)
    cpu = torch.device("cpu")
    teacher = bld.Teacher(deci, 0, shape, 8, parent, cpu)
    train = LayerActivations(tiny["train"], 0)
    got = bld.mean_abs_intermediate({0: teacher}, StoredInputs(tiny["train"], [0], cpu), 24, 8)[0]
    mlp, norm = tiny["model"].model.layers[0].mlp, tiny["model"].model.layers[0].post_attention_layernorm
    with torch.no_grad():
        n = norm(train.get(("h",), range(24))["h"].float())
        want = (torch.nn.functional.silu(mlp.gate_proj(n)) * mlp.up_proj(n)).abs().mean((0, 1))
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-7)


def test_linear_variants_are_weight_products_and_linear_attention_is_exact_on_one_token(tiny):
    hf, deci, shape, parent = _layer_setup(tiny)
    v, o = parent[bld_init.V], parent[bld_init.O]  # 2 KV heads of 8 for 4 query heads
    expanded = torch.cat([v[:8], v[:8], v[8:], v[8:]])
    assert torch.allclose(bld_init.linear_attention(v, o, 2, 4, 8), o @ expanded)
    lin_ffn = bld_init.init_ffn("ffn_linear", parent, 0, None)[bld_init.LINEAR_MLP]
    assert torch.allclose(lin_ffn, parent[bld_init.DOWN] @ parent[bld_init.UP])
    # With one token, softmax attends only to itself: attention = W_o W_v on the normed input.
    x, pe = torch.randn(5, 1, 32), _rope(hf, 1)
    with torch.no_grad():
        full = bld.forward(bld.Entry("attn_kv2", 0, deci, shape, 8, parent, None).module, x, pe)
        linear = bld.forward(bld.Entry("attn_linear", 0, deci, shape, 8, parent, None).module, x, pe)
    assert (full - linear).abs().max().item() < 1e-5


def test_activations_hold_layer_input_ffn_input_and_output(tiny):
    cfg, model = tiny["cfg"], tiny["model"]
    meta = json.loads((tiny["train"] / "meta.json").read_text())
    assert (meta["windows"], meta["seq_len"], meta["chunks"], meta["num_layers"]) == (24, 16, 3, 2)
    assert meta["bytes_per_token_per_layer"] == 3 * 32 * 2
    assert meta["total_bytes"] >= 2 * 24 * 16 * meta["bytes_per_token_per_layer"]
    l0, l1 = LayerActivations(tiny["train"], 0), LayerActivations(tiny["train"], 1)
    ids = [3, 9, 10, 23]  # across chunks of 10 windows
    a, b = l0.get(("x", "h", "y"), ids), l1.get(("x", "y"), ids)
    assert torch.equal(a["y"], b["x"])  # layer output = next layer's input
    from puzzle.data import read_shard
    from puzzle.training import fixed_windows

    windows = fixed_windows(read_shard(tiny["shards"] / "train.bin"), 24, 16)[ids]
    with torch.no_grad():
        hidden = model.model(input_ids=windows, output_hidden_states=True).hidden_states
        layer = model.model.layers[0]
        pe = _rope(model.config, 16)
        h = hidden[0] + layer.self_attn(layer.input_layernorm(hidden[0]), position_embeddings=pe,
                                        attention_mask=None)[0]
    assert torch.allclose(a["x"].float(), hidden[0], rtol=2e-3, atol=1e-3)
    assert torch.allclose(a["h"].float(), h, rtol=2e-3, atol=1e-3)
    assert torch.allclose(b["x"].float(), hidden[1], rtol=2e-3, atol=1e-3)
    assert a["x"].dtype == torch.float16 and cfg["activations"]["dtype"] == "fp16"


def test_library_files_have_exactly_the_contract_names(tiny, tmp_path):
    cfg = tiny["cfg"]
    cfg = {**cfg, "bld": {**cfg["bld"], "tokens": 8 * 16}}  # one step: names, not quality
    metrics = bld.run(cfg, str(tiny["parent"]), str(tiny["valid"]), [0], str(tmp_path), train=str(tiny["train"]))
    attn = {"input_layernorm.weight"} | {f"self_attn.{p}_proj.weight" for p in "qkvo"}
    ffn = {"post_attention_layernorm.weight"} | {f"mlp.{p}_proj.weight" for p in ("gate", "up", "down")}
    want = {
        "attn_kv2": attn, "attn_kv1": attn, "attn_linear": {"input_layernorm.weight", "self_attn.linear_attn.weight"},
        "attn_noop": set(), "ffn_100": ffn, "ffn_50": ffn,
        "ffn_linear": {"post_attention_layernorm.weight", "mlp.linear_mlp.weight"}, "ffn_noop": set(),
    }
    assert [m["variant"] for m in metrics] == list(want)
    for name, keys in want.items():
        with safe_open(str(library.entry_path(tmp_path, 0, name)), "pt") as f:
            assert set(f.keys()) == keys, name
            meta = f.metadata()
        assert meta["variant"] == name and meta["layer"] == "0"
        assert set(json.loads(meta["block_config"])) == {library.subblocks(name)[0] and "attention" or "ffn"}
        info = json.loads(library.entry_path(tmp_path, 0, name, "json").read_text())
        assert {"nmse_init", "nmse_final", "curve", "init", "trainable_params", "tokens", "wall_s"} <= set(info)
        data = library.entry_path(tmp_path, 0, name).read_bytes()  # the record every reader checks
        assert info["file"] == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert shapes_of(tmp_path, "attn_kv1")["self_attn.k_proj.weight"] == (8, 32)  # 1 KV head x head_dim 8
    assert shapes_of(tmp_path, "ffn_50")["mlp.down_proj.weight"] == (32, 24)
    parent = bld.parent_layer_tensors(tiny["parent"], 0)
    with safe_open(str(library.entry_path(tmp_path, 0, "ffn_100")), "pt") as f:
        assert all(torch.equal(f.get_tensor(k), parent[k]) for k in f.keys())  # copied, not trained
    by_name = {m["variant"]: m for m in metrics}
    assert by_name["attn_kv2"]["nmse_final"] == 0.0 and by_name["ffn_100"]["nmse_final"] == 0.0
    assert by_name["attn_noop"]["nmse_final"] > 0.01 and by_name["ffn_noop"]["nmse_final"] > 0.01
    assert not (library.layer_dir(tmp_path, 0) / ".bld_checkpoint").exists()


def shapes_of(library_dir, name):
    with safe_open(str(library.entry_path(library_dir, 0, name)), "pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}


def test_coupled_entries_are_compositions_holding_both_subblocks(tiny, tmp_path):
    cfg = tiny["cfg"]
    space = {"attention": {"kv_heads": [1], "linear": False, "no_op": True},
             "ffn": {"ratios": [], "linear": False, "no_op": True, "multiple_of": 8}}
    cfg = {**cfg, "search_space": space, "bld": {**cfg["bld"], "mode": "coupled", "tokens": 8 * 16}}
    metrics = bld.run(cfg, str(tiny["parent"]), str(tiny["valid"]), [0], str(tmp_path), train=str(tiny["train"]))
    steps = {m["variant"]: m["steps"] for m in metrics}
    assert steps == {"attn_kv2+ffn_100": 0, "attn_kv2+ffn_noop": 1, "attn_kv1+ffn_100": 1, "attn_kv1+ffn_noop": 1,
                     "attn_noop+ffn_100": 1, "attn_noop+ffn_noop": 0}
    keys = set(shapes_of(tmp_path, "attn_kv1+ffn_100"))
    assert {"self_attn.k_proj.weight", "mlp.down_proj.weight", "input_layernorm.weight",
            "post_attention_layernorm.weight"} <= keys and len(keys) == 9
    assert shapes_of(tmp_path, "attn_noop+ffn_noop") == {}


def test_interrupted_activation_dump_resumes_from_its_finished_chunks(tiny, tmp_path, monkeypatch):
    from puzzle import activations

    cfg, parent, shard = tiny["cfg"], str(tiny["parent"]), str(tiny["shards"] / "train.bin")
    real_save, written = activations.save_safetensors, []

    def killed_after_three_files(path, tensors, metadata):
        if len(written) == 3:
            raise KeyboardInterrupt
        written.append(path)
        real_save(path, tensors, metadata)

    monkeypatch.setattr(activations, "save_safetensors", killed_after_three_files)
    with pytest.raises(KeyboardInterrupt):
        activations.run(cfg, parent, shard, "train", str(tmp_path / "train"))
    assert not (tmp_path / "train").exists() and len(written) == 3
    written.clear()
    monkeypatch.setattr(activations, "save_safetensors", lambda *a: (written.append(a[0]), real_save(*a)))
    activations.run(cfg, parent, shard, "train", str(tmp_path / "train"))
    assert len(written) == 4  # chunk 0 (both layers) kept; chunk 1 redone (layer 1 was missing), chunk 2 new
    for layer in (0, 1):
        got = LayerActivations(tmp_path / "train", layer).get(("x", "h", "y"), range(24))
        want = LayerActivations(tiny["train"], layer).get(("x", "h", "y"), range(24))
        assert all(torch.equal(got[n], want[n]) for n in got)
    assert not (tmp_path / ".train.partial").exists()
