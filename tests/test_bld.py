"""BLD training: it distills, it resumes exactly, and the library plan matches the search space."""

import pytest
import torch
from library_helpers import tiny_setup

from puzzle import blocks, bld, config, library
from puzzle.activations import LayerActivations


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_setup(tmp_path_factory.mktemp("bld"))


def _entry_and_data(tiny, name, layer=1):
    hf, deci = bld.parent_configs(tiny["parent"])
    shape = library.parent_shape(hf.to_dict())
    parent = bld.parent_layer_tensors(tiny["parent"], layer)
    cpu = torch.device("cpu")
    teacher = bld.Teacher(deci, layer, shape, 8, parent, cpu)
    data = LayerActivations(tiny["train"], layer), LayerActivations(tiny["valid"], layer)
    act = bld.mean_abs_intermediate(teacher, data[0], 24, 8)
    entry = bld.Entry(name, layer, deci, shape, 8, parent, act)
    return entry, teacher, data, bld.position_embeddings(hf, 16, cpu)


@pytest.mark.parametrize("name", ["ffn_50", "attn_kv1"])
def test_bld_lowers_heldout_nmse_below_its_value_at_init(tiny, tmp_path, name):
    entry, teacher, data, pe = _entry_and_data(tiny, name)
    frozen_before = {k: v.clone() for k, v in entry.module.state_dict().items() if k.startswith("mlp.")}
    cfg = {**tiny["cfg"]["bld"], "tokens": 8 * 16 * 32, "eval_every": 8}
    metrics = bld.train_entry(entry, teacher, data, pe, cfg, 0, tmp_path / "ckpt")
    curve = [p["nmse"] for p in metrics["curve"]]
    assert metrics["steps"] == 32 and [p["step"] for p in metrics["curve"]] == [0, 8, 16, 24, 32]
    # A random parent's channels matter alike, so half of them cannot be recovered; the rest can.
    assert curve[-1] < 0.95 * curve[0], curve
    assert bld.evaluate(entry, teacher, data[1], pe, 8) == pytest.approx(curve[-1])
    if name.startswith("attn"):  # the parent FFN trained beside it stays frozen
        after = entry.module.state_dict()
        assert all(torch.equal(v, after[k]) for k, v in frozen_before.items()) and frozen_before


def test_interrupted_bld_resumes_to_the_same_weights(tiny, tmp_path, monkeypatch):
    cfg = tiny["cfg"]["bld"]
    whole, teacher, data, pe = _entry_and_data(tiny, "attn_kv1")
    want = bld.train_entry(whole, teacher, data, pe, cfg, 0, tmp_path / "a")

    real_batch_ids = bld.batch_ids

    def killed_at_step_6(windows, batch, seed, layer, step):
        if step == 6:  # two steps after the checkpoint at step 4
            raise KeyboardInterrupt
        return real_batch_ids(windows, batch, seed, layer, step)

    first, *_ = _entry_and_data(tiny, "attn_kv1")
    monkeypatch.setattr(bld, "batch_ids", killed_at_step_6)
    with pytest.raises(KeyboardInterrupt):
        bld.train_entry(first, teacher, data, pe, cfg, 0, tmp_path / "b")
    monkeypatch.setattr(bld, "batch_ids", real_batch_ids)
    resumed, *_ = _entry_and_data(tiny, "attn_kv1")
    got = bld.train_entry(resumed, teacher, data, pe, cfg, 0, tmp_path / "b")
    assert got["curve"] == want["curve"]
    expected = whole.module.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in resumed.module.state_dict().items())


def test_library_plan_follows_the_search_space_and_bld_mode():
    parent = blocks.ParentShape(hidden_size=128, num_attention_heads=4, num_key_value_heads=2,
                                intermediate_size=344, num_hidden_layers=4)
    cfg = config.validate({"search_space": {"ffn": {"ratios": [0.5], "multiple_of": 8}}})
    decoupled = library.entries(cfg, parent)
    assert decoupled == ["attn_kv2", "attn_kv1", "attn_linear", "attn_noop", "ffn_100", "ffn_50", "ffn_linear",
                         "ffn_noop"]
    assert [n for n in decoupled if library.needs_training(n, parent)] == ["attn_kv1", "attn_linear", "ffn_50",
                                                                             "ffn_linear"]
    assert library.entries(cfg, parent, "ffn") == decoupled[4:]
    coupled = library.entries(config.deep_merge(cfg, {"bld": {"mode": "coupled"}}), parent)
    assert len(coupled) == 16 and "attn_linear+ffn_50" in coupled
    assert [n for n in coupled if not library.needs_training(n, parent)] == ["attn_kv2+ffn_100", "attn_noop+ffn_noop"]
    assert library.block_config("attn_kv1+ffn_50", parent, 8) == {  # 344 / 2 = 172, rounded to 176 = 22 x 8
        "attention": {"n_heads_in_group": 4, "no_op": False, "replace_with_linear": False},
        "ffn": {"no_op": False, "replace_with_linear": False, "intermediate_size": 176},
    }
