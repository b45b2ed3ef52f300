"""Replace-1-block scoring: exact zero for the parent's block, suffix == full forward, reruns identical."""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import tiny_library as tl
from puzzle import blocks, cli, scoring


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scoring")
    parent = tl.make_parent(tmp / "parent")
    tl.make_shard(tmp / "data", "mixed", 3000, 96)
    tl.make_library(parent, tmp / "lib")
    return tmp


def parent_reference(tmp, windows):
    """The parent's own HF forward: log-probs, LM loss and accuracy on positions 0..T-2."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(tmp / "parent", dtype=torch.float32).eval()
    with torch.no_grad():
        logits = hf(input_ids=windows).logits[:, :-1].double()
    return logits


def metrics(logp_parent, logits, windows):
    logq = F.log_softmax(logits.double(), -1)
    tgt = windows[:, 1:]
    kl = (logp_parent.exp() * (logp_parent - logq)).sum(-1).mean().item()
    nll = -logq.gather(-1, tgt.unsqueeze(-1)).mean().item()
    acc = (logits.argmax(-1) == tgt).double().mean().item()
    return kl, nll, acc


def test_parent_block_scores_exactly_zero_and_the_parents_loss(setup):
    cfg = tl.scoring_cfg(candidates_per_pass=3)  # stacking other blocks must not disturb the parent's
    frame = scoring.run(cfg, setup / "parent", setup / "data", setup / "lib", log=lambda m: None)
    windows = scoring.valid_windows(setup / "data", "mixed", 6, 32)
    logits = parent_reference(setup, windows)
    _, nll, acc = metrics(F.log_softmax(logits, -1), logits, windows)
    own = frame[(frame.attention == "attn_kv2") & (frame.ffn == "ffn_100")]
    assert list(own.layer) == [0, 1, 2]
    assert (own.kl == 0.0).all()  # exactly, not approximately
    assert own.lm_loss.to_numpy() == pytest.approx([nll] * 3, abs=1e-6)
    assert own.token_acc.to_numpy() == pytest.approx([acc] * 3, abs=1e-12)
    # every other block moves the distribution
    assert (frame[~frame.index.isin(own.index)].kl > 1e-5).all()
    assert len(frame) == 3 * 4 * 4 and list(frame.columns) == scoring.COLUMNS


@pytest.mark.parametrize("layer,attn,ffn", [(1, "attn_kv1", "ffn_50"), (0, "attn_noop", "ffn_linear"), (2, "attn_linear", "ffn_noop")])
def test_suffix_from_cached_hidden_state_equals_full_forward_of_replaced_model(setup, layer, attn, ffn):
    from safetensors.torch import load_file

    from puzzle.nemotron_nas import DeciLMForCausalLM

    model = scoring.load_parent(setup / "parent", torch.device("cpu"), torch.float32)
    shape = scoring.parent_shape(model)
    attns, ffns = blocks.search_space(shape, tl.SPACE)
    cand = scoring.layer_candidates(model, layer, attns, ffns, setup / "lib", 8)
    windows = scoring.valid_windows(setup / "data", "mixed", 6, 32)
    rows = scoring.score_layers(model, windows, [cand], batch_size=4, candidates_per_pass=5, log=lambda m: None)
    row = next(r for r in rows if (r["attention"], r["ffn"]) == (attn, ffn))

    # the replaced model, built whole and run by its own forward (HF causal mask, all layers)
    cfg = model.config.with_block_config(layer, blocks.block_config(attn, ffn, shape, 8))
    child = DeciLMForCausalLM(cfg).eval()
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(f"model.layers.{layer}.")}
    for v in (attn, ffn):
        state.update({f"model.layers.{layer}.{k}": t for k, t in load_file(setup / "lib" / f"layer_{layer}" / f"{v}.safetensors").items()})
    child.load_state_dict(state, strict=True)
    with torch.no_grad():
        q = child(input_ids=windows).logits[:, :-1]
    kl, nll, acc = metrics(F.log_softmax(parent_reference(setup, windows), -1), q, windows)
    assert row["kl"] == pytest.approx(kl, abs=1e-6) and kl > 1e-5
    assert row["lm_loss"] == pytest.approx(nll, abs=1e-6)
    assert row["token_acc"] == pytest.approx(acc, abs=1e-12)


def test_noop_ffn_scores_positive_kl(setup):
    model = scoring.load_parent(setup / "parent", torch.device("cpu"), torch.float32)
    cand = scoring.layer_candidates(model, 1, ["attn_kv2"], ["ffn_100", "ffn_noop"], setup / "lib", 8)
    windows = scoring.valid_windows(setup / "data", "mixed", 6, 32)
    rows = scoring.score_layers(model, windows, [cand], 4, log=lambda m: None)
    assert rows[0]["kl"] == 0.0 and rows[1]["kl"] > 1e-4


def test_head_chunks_and_stacking_do_not_change_scores(setup, monkeypatch):
    """Tokens through the head 7 rows at a time (a ragged last chunk), candidates stacked or not."""
    model = scoring.load_parent(setup / "parent", torch.device("cpu"), torch.float32)
    ffns = ["ffn_100", "ffn_50", "ffn_noop"]
    cand = scoring.layer_candidates(model, 1, ["attn_kv2", "attn_kv1"], ffns, setup / "lib", 8)
    windows = scoring.valid_windows(setup / "data", "mixed", 6, 32)
    whole = scoring.score_layers(model, windows, [cand], 4, log=lambda m: None)
    monkeypatch.setattr(scoring, "HEAD_CHUNK_ELEMENTS", 7 * model.config.vocab_size)
    monkeypatch.setattr(scoring, "HEAD_MIN_ROWS", 1)
    for per_pass in (1, 2):
        rows = scoring.score_layers(model, windows, [cand], 4, per_pass, log=lambda m: None)
        for r, w in zip(rows, whole, strict=True):
            assert (r["attention"], r["ffn"], r["token_acc"]) == (w["attention"], w["ffn"], w["token_acc"])
            # float32 matmul rounding differs with the chunk's row count
            assert (r["kl"], r["lm_loss"]) == pytest.approx((w["kl"], w["lm_loss"]), abs=1e-6)
    assert whole[0]["kl"] == 0.0 and all(r["kl"] > 1e-5 for r in whole[1:])


def test_coupled_library_scores_equal_decoupled_for_the_same_weights(setup, tmp_path):
    from safetensors.torch import load_file, save_file

    attns, ffns = ["attn_kv2", "attn_kv1", "attn_noop"], ["ffn_100", "ffn_50", "ffn_noop"]
    d = tmp_path / "layer_1"
    d.mkdir()
    for a in attns:
        for f in ffns:
            t = {**load_file(setup / "lib/layer_1" / f"{a}.safetensors"), **load_file(setup / "lib/layer_1" / f"{f}.safetensors")}
            save_file(t, str(d / f"{blocks.composition(a, f)}.safetensors"))
    assert sorted(scoring.library_paths(tmp_path, 1, attns, ffns, coupled=True)) == sorted(
        p for p in d.iterdir() if p.name != "attn_noop+ffn_noop.safetensors"
    )
    model = scoring.load_parent(setup / "parent", torch.device("cpu"), torch.float32)
    windows = scoring.valid_windows(setup / "data", "mixed", 6, 32)
    dec = scoring.layer_candidates(model, 1, attns, ffns, setup / "lib", 8)
    cou = scoring.layer_candidates(model, 1, attns, ffns, tmp_path, 8, coupled=True)
    a = scoring.score_layers(model, windows, [dec], 4, log=lambda m: None)
    b = scoring.score_layers(model, windows, [cou], 4, log=lambda m: None)
    assert a == b


def test_missing_library_file_names_it(setup, tmp_path):
    model = scoring.load_parent(setup / "parent", torch.device("cpu"), torch.float32)
    (tmp_path / "layer_0").mkdir()
    with pytest.raises(FileNotFoundError, match="layer_0/attn_kv1.safetensors"):
        scoring.layer_candidates(model, 0, ["attn_kv2", "attn_kv1"], ["ffn_100"], tmp_path, 8)


def test_cli_rerun_is_identical_and_per_layer_jobs_merge_to_the_whole(setup, tmp_path):
    cfg = json.dumps({"threads": 1, "device": "cpu", "search_space": tl.SPACE,
                      "scoring": {"valid_windows": 4, "seq_len": 24, "batch_size": 3, "candidates_per_pass": 2}})
    common = ["score", "--cfg", cfg, "--parent", str(setup / "parent"), "--data", str(setup / "data"),
              "--library", str(setup / "lib")]
    assert cli.main([*common, "--out", str(tmp_path / "a.csv")]) == 0
    assert cli.main([*common, "--out", str(tmp_path / "b.csv")]) == 0
    whole = (tmp_path / "a.csv").read_bytes()
    assert whole == (tmp_path / "b.csv").read_bytes()
    for i in (2, 0, 1):
        assert cli.main([*common, "--layer", str(i), "--out", str(tmp_path / f"layer_{i}.csv")]) == 0
    parts = [str(tmp_path / f"layer_{i}.csv") for i in (2, 0, 1)]
    assert cli.main(["score", "--merge", *parts, "--out", str(tmp_path / "merged.csv")]) == 0
    assert (tmp_path / "merged.csv").read_bytes() == whole
    frame = pd.read_csv(tmp_path / "merged.csv")
    assert list(frame.columns) == ["layer", "attention", "ffn", "kl", "lm_loss", "token_acc"]
    assert cli.main([*common, "--layer", "7", "--out", str(tmp_path / "x.csv")]) == 2
