"""Compress stage (Table 18 baselines): Wanda 2:4 masks by hand and on a tiny Llama, low-rank = truncated SVD."""

import argparse
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import LlamaForCausalLM

from fixtures import BLD_PARENT, BLD_SHARDS, make_parent, write_shards
from puzzle import compress, evaluate
from puzzle.config import ConfigError

PROJ = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
CALIB = {"windows": 8, "seq_len": 16, "batch_size": 3}  # 3 does not divide 8: a short last batch too


def run_cli(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    compress.add_arguments(parser)
    compress.main(parser.parse_args(argv))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("compress")
    model = LlamaForCausalLM.from_pretrained(make_parent(root / "parent", **BLD_PARENT)).eval()
    (root / "parent" / "tokenizer.json").write_text('{"tiny": "tokenizer"}')
    shards = write_shards(root / "data", **BLD_SHARDS)
    cfg = json.dumps({"threads": 1, "device": "cpu", "seed": 3})
    run_cli(["--cfg", cfg, "--method", "wanda", "--parent", str(root / "parent"), "--train", str(shards / "train.bin"),
             "--windows", "8", "--seq-len", "16", "--batch-size", "3", "--out", str(root / "wanda")])
    run_cli(["--cfg", cfg, "--method", "low_rank", "--parent", str(root / "parent"), "--keep", "0.5",
             "--out", str(root / "low_rank")])
    parent = load_file(root / "parent" / "model.safetensors")
    return {"root": root, "model": model, "shards": shards, "parent": parent}


def block_weights(state: dict) -> dict:
    return {k: v for k, v in state.items() if k.startswith("model.layers.") and k.endswith("_proj.weight")}


def input_norms(model, windows: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    """||X_j||_2 over all tokens of `windows` at the input of each named linear, by a plain forward pass."""
    sq, handles = {}, []
    for name in names:
        def hook(module, args, name=name):
            x = args[0].float().reshape(-1, args[0].shape[-1])
            sq[name] = sq.get(name, 0) + x.pow(2).sum(0)
        handles.append(model.get_submodule(name).register_forward_pre_hook(hook))
    with torch.no_grad():
        model(input_ids=windows)
    for h in handles:
        h.remove()
    return {n: v.sqrt() for n, v in sq.items()}


# ---- the per-matrix math -------------------------------------------------------------------------


def test_prune_2_4_keeps_the_two_highest_weight_times_input_norm_of_every_group_of_four():
    w = torch.tensor([[1.0, -2.0, 3.0, 0.5, 4.0, 1.0, 1.0, 2.0],
                      [-3.0, 2.0, 50.0, -0.1, 1.0, -1.5, 3.0, -2.5]])
    norm = torch.tensor([1.0, 1.0, 0.1, 10.0, 2.0, 1.0, 1.0, 1.0])
    # scores row 0: [1, 2, 0.3, 5 | 8, 1, 1, 2] -> keep -2, 0.5 | 4, 2 (magnitude alone would keep 3 over 0.5)
    # scores row 1: [3, 2, 5, 1 | 2, 1.5, 3, 2.5] -> keep -3, 50 | 3, -2.5
    want = torch.tensor([[0.0, -2.0, 0.0, 0.5, 4.0, 0.0, 0.0, 2.0],
                         [-3.0, 0.0, 50.0, 0.0, 0.0, 0.0, 3.0, -2.5]])
    assert torch.equal(compress.prune_2_4(w, norm), want)
    with pytest.raises(ValueError, match="multiple of 4"):
        compress.prune_2_4(torch.ones(2, 6), torch.ones(6))


def test_low_rank_rank_and_truncated_svd():
    assert compress.low_rank_rank(32, 32, 0.5) == 8  # 8 * (32 + 32) = 512 = half of 32 * 32
    assert compress.low_rank_rank(16, 32, 0.5) == 5  # floor(256 / 48)
    assert compress.low_rank_rank(32, 32, 1.0) == 16  # keep = 1 is still a real truncation (16 < 32)
    assert compress.low_rank_rank(4, 1000, 0.01) == 1
    torch.manual_seed(0)
    w = torch.randn(12, 20)
    for rank in (1, 5, 12):
        approx = compress.truncated_svd(w, rank)
        u, s, vh = np.linalg.svd(w.double().numpy(), full_matrices=False)
        assert np.allclose(approx.numpy(), (u[:, :rank] * s[:rank]) @ vh[:rank], atol=1e-5)
        assert torch.linalg.matrix_rank(approx) == rank
    # a rank >= min(out, in) is no truncation: the weights come back
    assert torch.allclose(compress.truncated_svd(w, 12), w, atol=1e-5)
    assert torch.allclose(compress.truncated_svd(w, 20), w, atol=1e-5)


def test_calibration_windows_are_seeded(tiny):
    train = tiny["shards"] / "train.bin"
    a = compress.calibration_windows(train, 8, 16, seed=3)
    assert a.shape == (8, 16)
    assert torch.equal(a, compress.calibration_windows(train, 8, 16, seed=3))
    assert not torch.equal(a, compress.calibration_windows(train, 8, 16, seed=4))


# ---- wanda on a tiny Llama -----------------------------------------------------------------------


def test_wanda_zeroes_exactly_two_of_every_four_and_nothing_outside_the_blocks(tiny):
    out = load_file(tiny["root"] / "wanda" / "model.safetensors")
    parent = tiny["parent"]
    pruned = block_weights(out)
    assert len(pruned) == 2 * len(PROJ)
    for name, w in pruned.items():
        groups = (w == 0).reshape(w.shape[0], -1, 4).sum(-1)
        assert torch.all(groups == 2), name
        # the survivors are the parent's weights, unchanged
        assert torch.equal(w, parent[name] * (w != 0)), name
    for name, t in out.items():
        if name not in pruned:  # embeddings (tied LM head), norms
            assert torch.equal(t, parent[name]), name
    assert "lm_head.weight" not in out  # still tied, as in the parent


def test_wanda_scores_use_the_input_norms_of_the_calibration_windows_layer_by_layer(tiny):
    """Layer 0 is scored with the parent's input norms; layer 1's q/k/v with those of the model whose
    layer 0 is already pruned (the authors' sequential order), i.e. the compressed model's own."""
    windows = compress.calibration_windows(tiny["shards"] / "train.bin", 8, 16, seed=3)
    parent, out = tiny["parent"], load_file(tiny["root"] / "wanda" / "model.safetensors")
    layer0 = [f"model.layers.0.{m}.{p}" for m, ps in (("self_attn", PROJ[:4]), ("mlp", PROJ[4:])) for p in ps]
    norms = input_norms(tiny["model"], windows, layer0)
    for name in layer0:
        assert torch.equal(out[f"{name}.weight"], compress.prune_2_4(parent[f"{name}.weight"], norms[name])), name

    pruned = evaluate.load_model(tiny["root"] / "wanda", torch.device("cpu"), torch.float32)
    layer1_qkv = [f"model.layers.1.self_attn.{p}" for p in PROJ[:3]]
    pruned_norms = input_norms(pruned, windows, layer1_qkv)
    parent_norms = input_norms(tiny["model"], windows, layer1_qkv)
    for name in layer1_qkv:
        assert torch.equal(out[f"{name}.weight"], compress.prune_2_4(parent[f"{name}.weight"], pruned_norms[name]))
        # ... which differ from the parent's (else this test would not tell the orders apart)
        assert not torch.allclose(pruned_norms[name], parent_norms[name])


def test_wanda_compress_json(tiny):
    rec = json.loads((tiny["root"] / "wanda" / "compress.json").read_text())
    p = rec["parameters"]
    parent_total = sum(t.numel() for t in tiny["parent"].values())
    pruned = sum(t.numel() for t in block_weights(tiny["parent"]).values())
    assert rec["method"] == "wanda"
    assert rec["settings"] == {"pattern": "2:4", "train": str(tiny["shards"] / "train.bin"), "windows": 8,
                               "seq_len": 16, "tokens": 128, "batch_size": 3, "seed": 3}
    assert p["parent"] == p["total"] == parent_total
    assert p["nonzero"] == parent_total - pruned // 2
    assert p["fraction"] == pytest.approx(p["nonzero"] / parent_total)
    assert set(rec["matrices"]) == {k.removesuffix(".weight") for k in block_weights(tiny["parent"])}
    assert all(m["nonzero"] * 2 == m["parameters"] for m in rec["matrices"].values())


# ---- low rank on a tiny Llama --------------------------------------------------------------------


def test_low_rank_weights_are_the_truncated_svd_of_the_parent(tiny):
    out = load_file(tiny["root"] / "low_rank" / "model.safetensors")
    parent = tiny["parent"]
    rec = json.loads((tiny["root"] / "low_rank" / "compress.json").read_text())
    factorized = block_weights(out)
    assert len(factorized) == 2 * len(PROJ)
    for name, w in factorized.items():
        rank = compress.low_rank_rank(*w.shape, 0.5)
        assert rec["matrices"][name.removesuffix(".weight")]["rank"] == rank
        assert torch.linalg.matrix_rank(w) <= rank, name
        u, s, vh = np.linalg.svd(parent[name].double().numpy(), full_matrices=False)
        assert np.allclose(w.numpy(), (u[:, :rank] * s[:rank]) @ vh[:rank], atol=1e-5), name
    for name, t in out.items():
        if name not in factorized:
            assert torch.equal(t, parent[name]), name


def test_low_rank_compress_json(tiny):
    rec = json.loads((tiny["root"] / "low_rank" / "compress.json").read_text())
    p = rec["parameters"]
    parent_total = sum(t.numel() for t in tiny["parent"].values())
    # per layer, hidden 32, kv 16, FFN 48: q, o 32x32 -> r 8; k, v 16x32 -> 5; gate, up 48x32 and down 32x48 -> 9
    per_layer = 2 * 8 * 64 + 2 * 5 * 48 + 3 * 9 * 80
    dense = 2 * (2 * 32 * 32 + 2 * 16 * 32 + 3 * 48 * 32)
    assert rec["method"] == "low_rank" and rec["settings"] == {"keep": 0.5}
    assert rec["matrices"]["model.layers.1.self_attn.k_proj"] == {
        "shape": [16, 32], "rank": 5, "parameters": 512, "factorized": 240}
    assert p["parent"] == p["total"] == parent_total
    assert p["factorized"] == parent_total - dense + 2 * per_layer
    assert p["fraction"] == pytest.approx(p["factorized"] / parent_total)


def test_keep_one_with_full_rank_reproduces_the_model(tiny):
    """The same model round-trips when every rank covers its matrix (checks the write-back, not just the SVD)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny["root"] / "parent"))
    ref = {k: v.clone() for k, v in model.state_dict().items()}
    for m in compress.block_linears(model.model.layers).values():
        with torch.no_grad():
            m.weight.copy_(compress.truncated_svd(m.weight, min(m.weight.shape)))
    for k, v in model.state_dict().items():
        assert torch.allclose(v, ref[k], atol=1e-5), k
    with pytest.raises(ValueError, match="keep"):
        compress.low_rank(model, 1.5)


# ---- the saved folders ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["wanda", "low_rank"])
def test_output_loads_with_evaluate_and_gives_finite_logits(tiny, method):
    folder = tiny["root"] / method
    assert sorted(p.name for p in folder.iterdir()) == [
        "compress.json", "config.json", "generation_config.json", "model.safetensors", "tokenizer.json"]
    model = evaluate.load_model(folder, torch.device("cpu"), torch.float32)
    windows = compress.calibration_windows(tiny["shards"] / "train.bin", 2, 16, seed=0)
    with torch.no_grad():
        logits = model(input_ids=windows).logits
        parent_logits = tiny["model"](input_ids=windows).logits
    assert logits.shape == (2, 16, 64) and torch.isfinite(logits).all()
    assert not torch.allclose(logits, parent_logits, atol=1e-3)  # the compression did something
    state = model.state_dict()
    saved = load_file(folder / "model.safetensors")
    assert all(torch.equal(state[k], v) for k, v in saved.items())


def test_cli_needs_the_method_inputs(tiny):
    parent = str(tiny["root"] / "parent")
    with pytest.raises(ConfigError, match="--train"):
        run_cli(["--method", "wanda", "--parent", parent, "--out", str(tiny["root"] / "x")])
    with pytest.raises(ConfigError, match="--keep"):
        run_cli(["--method", "low_rank", "--parent", parent, "--keep", "0", "--out", str(tiny["root"] / "x")])
    with pytest.raises(ConfigError, match="--seq-len = 0"):
        run_cli(["--method", "wanda", "--parent", parent, "--train", str(tiny["shards"] / "train.bin"),
                 "--seq-len", "0", "--out", str(tiny["root"] / "x")])
    assert not (tiny["root"] / "x").exists()
