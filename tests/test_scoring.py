"""Replace-1-block scoring: exact zero for the parent's block, suffix == full forward, reruns identical."""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import fixtures as fx
from puzzle import bld_plan, blocks, cli, library, score_plan, scoring
from puzzle.config import ConfigError


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scoring")
    parent = fx.make_parent(tmp / "parent")
    fx.write_shards(tmp / "data" / "mixed", splits=("valid",), tokens=3000)
    fx.make_library(parent, tmp / "lib")
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
    cfg = fx.scoring_cfg(candidates_per_pass=3)  # stacking other blocks must not disturb the parent's
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


@pytest.mark.parametrize(
    "layer,attn,ffn", [(1, "attn_kv1", "ffn_50"), (0, "attn_noop", "ffn_linear"), (2, "attn_linear", "ffn_noop")]
)
def test_suffix_from_cached_hidden_state_equals_full_forward_of_replaced_model(setup, layer, attn, ffn):
    from safetensors.torch import load_file

    from puzzle.nemotron_nas import DeciLMForCausalLM

    model = scoring.load_parent(setup / "parent", torch.device("cpu"), torch.float32)
    shape = scoring.parent_shape(model)
    attns, ffns = blocks.search_space(shape, fx.SPACE)
    cand = scoring.layer_candidates(model, layer, attns, ffns, setup / "lib", 8)
    windows = scoring.valid_windows(setup / "data", "mixed", 6, 32)
    rows = scoring.score_layers(model, windows, [cand], batch_size=4, candidates_per_pass=5, log=lambda m: None)
    row = next(r for r in rows if (r["attention"], r["ffn"]) == (attn, ffn))

    # the replaced model, built whole and run by its own forward (HF causal mask, all layers)
    cfg = model.config.with_block_config(layer, blocks.block_config(attn, ffn, shape, 8))
    child = DeciLMForCausalLM(cfg).eval()
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(f"model.layers.{layer}.")}
    for v in (attn, ffn):
        lib = load_file(setup / "lib" / f"layer_{layer}" / f"{v}.safetensors")
        state.update({f"model.layers.{layer}.{k}": t for k, t in lib.items()})
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
            t = {**load_file(setup / "lib/layer_1" / f"{a}.safetensors"),
                 **load_file(setup / "lib/layer_1" / f"{f}.safetensors")}
            save_file(t, str(d / f"{blocks.composition(a, f)}.safetensors"))
            library.write_entry_json(d / f"{blocks.composition(a, f)}.safetensors", {})
    assert sorted(scoring.library_paths(tmp_path, 1, attns, ffns, coupled=True)) == sorted(
        p for p in d.glob("*.safetensors") if p.name != "attn_noop+ffn_noop.safetensors"
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


def score_argv(setup):
    """`puzzle score` of the setup's parent, data and library: 4 windows of 24 tokens, passes of 2 candidates."""
    cfg = json.dumps({"threads": 1, "device": "cpu", "search_space": fx.SPACE,
                      "scoring": {"valid_windows": 4, "seq_len": 24, "batch_size": 3, "candidates_per_pass": 2}})
    return ["score", "--cfg", cfg, "--parent", str(setup / "parent"), "--data", str(setup / "data"),
            "--library", str(setup / "lib")]


def test_cli_rerun_is_identical_and_per_layer_jobs_merge_to_the_whole(setup, tmp_path):
    common = score_argv(setup)
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


# ---- parts: a layer's blocks over several jobs ---------------------------------------------------


def test_part_jobs_merge_byte_identical_to_the_unsplit_run_and_rerun_identically(setup, tmp_path):
    """Stacked passes of 2 (15 candidates + the parent's block per layer: 8 passes), cut 3 and 2 ways."""
    common = score_argv(setup)
    assert cli.main([*common, "--out", str(tmp_path / "whole.csv")]) == 0
    parts = {0: 3, 1: 2, 2: 1}
    files = score_plan.layer_files(tmp_path, parts)
    assert [Path(f).name for f in files] == ["layer_0.part1of3.csv", "layer_0.part2of3.csv", "layer_0.part3of3.csv",
                                             "layer_1.part1of2.csv", "layer_1.part2of2.csv", "layer_2.csv"]
    for f in files:
        k, n = score_plan.part_of_file(f)
        layer = int(Path(f).name.split(".")[0].removeprefix("layer_"))
        assert cli.main([*common, "--layer", str(layer), "--part", f"{k}/{n}", "--out", f]) == 0
    sizes = [len(pd.read_csv(f)) for f in files]
    # passes (2, 2, .., 1) 3+3+2 and 4+4: 6+6+3 and 8+7 candidates, the parent's block (first) with part 1
    assert sizes == [7, 6, 3, 9, 7, 16]
    assert not list(tmp_path.glob("*.tmp*"))  # written by rename only
    merged = tmp_path / "merged.csv"
    assert cli.main(["score", "--merge", *reversed(files), "--out", str(merged)]) == 0  # any order of inputs
    assert merged.read_bytes() == (tmp_path / "whole.csv").read_bytes()
    again = tmp_path / "again.csv"
    assert cli.main([*common, "--layer", "0", "--part", "2/3", "--out", str(again)]) == 0
    assert again.read_bytes() == Path(files[1]).read_bytes()
    # a part missing, or one merged twice, is refused by name
    assert cli.main(["score", "--merge", *files[1:], "--out", str(tmp_path / "x.csv")]) == 2
    assert cli.main(["score", "--merge", *files, files[3], "--out", str(tmp_path / "x.csv")]) == 2
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.parametrize("arg", ["0/2", "3/2", "x", "2", "1/2/3"])
def test_bad_part_is_one_line_naming_the_flag(setup, tmp_path, capsys, arg):
    cfg = json.dumps({"threads": 1, "device": "cpu", "search_space": fx.SPACE})
    argv = ["score", "--cfg", cfg, "--parent", str(setup / "parent"), "--data", str(setup / "data"),
            "--library", str(setup / "lib"), "--layer", "0", "--part", arg, "--out", str(tmp_path / "p.csv")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--part {arg!r}: expected K/N with 1 <= K <= N" in err
    assert not (tmp_path / "p.csv").exists()


@pytest.mark.parametrize("n_attn,n_ffn,parent,per_pass", [(4, 4, (0, 0), 1), (4, 4, (0, 0), 2), (3, 5, (1, 2), 3),
                                                           (2, 3, (1, 2), 2), (4, 4, None, 4)])
def test_every_candidate_in_exactly_one_part_in_whole_passes_and_balanced(n_attn, n_ffn, parent, per_pass):
    comps = [(f"a{i}", f"f{j}") for i in range(n_attn) for j in range(n_ffn)]
    own = (f"a{parent[0]}", f"f{parent[1]}") if parent else ("attn_x", "ffn_x")  # None: not in the space
    runs = score_plan.passes(comps, own, per_pass)
    for n in range(1, len(runs) + 1):
        parts = [score_plan.part_compositions(comps, own, per_pass, k, n) for k in range(1, n + 1)]
        assert [c for p in parts for c in p] == comps  # each once, in order: concatenating parts is the whole
        # each part is whole passes of the unsplit run, so score_layers stacks exactly the same candidates
        counts = []
        for p in parts:
            mine = score_plan.passes(p, own, per_pass)
            assert all(r in runs for r in mine)
            counts.append(len(mine))
        assert sum(counts) == len(runs) and max(counts) - min(counts) <= 1
    with pytest.raises(ConfigError, match=rf"--part 1/{len(runs) + 1}: the layer has {len(runs)} passes"):
        score_plan.part_compositions(comps, own, per_pass, 1, len(runs) + 1)


def real_cfg(tmp_path, name, **scoring):
    """The 8B experiment config on a parent folder holding only the public config.json of `name`."""
    import yaml

    from puzzle import config

    parent = tmp_path / name
    parent.mkdir()
    (parent / "config.json").write_text((Path(__file__).parent / "data" / f"{name}.config.json").read_text())
    raw = yaml.safe_load((Path(__file__).parents[1] / "config" / "llama-3.1-8b-h100.yaml").read_text())
    raw["parent"]["path"], raw["data"]["files"] = str(parent), [str(parent / "config.json")]
    raw["scoring"].update(scoring)
    cfg = config.validate(raw)
    return cfg, config.parent_config(cfg)


def test_auto_parts_split_the_long_70b_layers_only(tmp_path):
    cfg, parent = real_cfg(tmp_path, "Llama-3.1-70B")
    h, vocab, layers = parent["hidden_size"], parent["vocab_size"], parent["num_hidden_layers"]
    tokens = cfg["scoring"]["valid_windows"] * cfg["scoring"]["seq_len"]
    arch = bld_plan.parent_arch(cfg, parent)
    layer = bld_plan.parent_layer_flops(arch, cfg["scoring"]["seq_len"])
    n_run = len(score_plan.compositions(cfg, arch.shape)) - 1  # the parent's own block is not run
    head = 2 * h * vocab
    # layer 0, one job: the parent once (80 layers, its head twice), then every candidate's 79 suffix layers and
    # head; its own block, between nothing and a parent layer, on top
    low = tokens * (80 * layer + 2 * head + n_run * (79 * layer + head))
    whole = score_plan.part_flops(cfg, parent, 0, 1, 1)
    assert low < whole < low + tokens * n_run * layer
    minutes = whole / (bld_plan.ASSUMED_TFLOPS * 1e12) / 60
    assert 0.75 * 60 < minutes < 2 * 0.75 * 60  # over the 45 minutes a 60-minute job is planned to fill
    assert score_plan.parts_for(cfg, parent, 0, 60) == 2
    assert score_plan.parts_for(cfg, parent, layers - 1, 60) == 1
    assert score_plan.parts_for(cfg, parent, 0, 10_000) == 1
    assert score_plan.parts_for(cfg, parent, 0, 1) == score_plan.max_parts(cfg, parent)  # at most a pass a part
    # the embedded micro parent: one job per layer
    from puzzle import config

    micro = config.load(Path(__file__).parents[1] / ".test" / "config" / "config.yaml")
    assert set(score_plan.layer_parts(micro, config.parent_config(micro), 60).values()) == {1}


@pytest.mark.parametrize("value,message", [
    (0, "scoring.parts = 0: expected a number >= 1"),
    ("x", 'scoring.parts = "x": expected auto'),
    (1.5, "scoring.parts = 1.5: expected integer or string"),
    (99, "scoring.parts = 99: a layer has 39 passes of candidates (scoring.candidates_per_pass = 1), expected 'auto' "
         "or at most 39"),
])
def test_bad_scoring_parts_stops_in_config_validation(tmp_path, value, message):
    with pytest.raises(ConfigError) as err:
        real_cfg(tmp_path, "Llama-3.1-8B", parts=value)
    assert str(err.value) == f"config error: {message}"


def test_dry_run_plans_a_job_per_layer_part(repo, tmp_path, venv_env):
    import shutil
    import subprocess
    import sys

    wd = tmp_path / "wd"
    shutil.copytree(repo / "config", wd / "config")
    (tmp_path / "over.yaml").write_text("scoring:\n  parts: 2\n")
    r = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(repo / "workflow" / "Snakefile"), "--directory", str(wd), "-n",
         "-p", "--configfile", str(repo / ".test" / "config" / "config.yaml"), str(tmp_path / "over.yaml")],
        capture_output=True, text=True, env=venv_env,
    )
    assert r.returncode == 0, r.stderr + r.stdout
    stats = dict(line.split() for line in r.stdout.split("Job stats:")[1].split("total")[0].splitlines()[3:] if line)
    assert stats["score_part"] == "4" and "score" not in stats
    parts = [f"results/micro/scores/layer_{i}.part{k}of2.csv" for i in (0, 1) for k in (1, 2)]
    assert "input: " + ", ".join(parts) + "\n    output: results/micro/scores/scores.csv" in r.stdout
    assert "--layer 1 --part 2/2 --out results/micro/scores/layer_1.part2of2.csv" in r.stdout


# ---- a heterogeneous (Nemotron-NAS) parent ------------------------------------------------------


def test_heterogeneous_parent_scores_each_layer_against_its_own_block(setup):
    from puzzle.nemotron_nas import DeciLMConfig, DeciLMForCausalLM

    layer_blocks = [{"attention": {"n_heads_in_group": 2}, "ffn": {"intermediate_size": 64}},  # attn_kv2 + ffn_100
                    {"attention": {"n_heads_in_group": 4}, "ffn": {"intermediate_size": 32}}]  # attn_kv1 + ffn_50
    cfg = DeciLMConfig(vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, rms_norm_eps=1e-5,
                       block_configs=layer_blocks)
    torch.manual_seed(0)
    model = DeciLMForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    model.config._attn_implementation = "sdpa"
    assert scoring.own_composition(model, 0, ["ffn_100", "ffn_50", "ffn_noop"], 8) == ("attn_kv2", "ffn_100")
    assert scoring.own_composition(model, 1, ["ffn_100", "ffn_50", "ffn_noop"], 8) == ("attn_kv1", "ffn_50")
    # no library: each layer's own subblocks are the parent's (a replaced block read from another layer's
    # shape would not load)
    cands = [scoring.layer_candidates(model, 0, ["attn_kv2", "attn_noop"], ["ffn_100", "ffn_noop"], None, 8),
             scoring.layer_candidates(model, 1, ["attn_kv1", "attn_noop"], ["ffn_50", "ffn_noop"], None, 8)]
    windows = scoring.valid_windows(setup / "data", "mixed", 6, 32)
    rows = scoring.score_layers(model, windows, cands, 4, log=lambda m: None)
    by = {(r["layer"], r["attention"], r["ffn"]): r for r in rows}
    with torch.no_grad():
        logp = F.log_softmax(model(input_ids=windows).logits[:, :-1].double(), -1)
    _, nll, acc = metrics(logp, logp, windows)
    for own in ((0, "attn_kv2", "ffn_100"), (1, "attn_kv1", "ffn_50")):
        assert by[own]["kl"] == 0.0 and by[own]["lm_loss"] == pytest.approx(nll, abs=1e-6)
        assert by[own]["token_acc"] == pytest.approx(acc, abs=1e-12)
    # layer 1 with its FFN removed, against the whole replaced model's own forward
    child = DeciLMForCausalLM(cfg.with_block_config(1, {"attention": {"n_heads_in_group": 4}, "ffn": {"no_op": True}}))
    child.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("model.layers.1.mlp.")
                           and not k.startswith("model.layers.1.post_attention_layernorm.")}, strict=True)
    with torch.no_grad():
        q = child.eval()(input_ids=windows).logits[:, :-1]
    kl, nll, acc = metrics(logp, q, windows)
    row = by[(1, "attn_kv1", "ffn_noop")]
    assert kl > 1e-4 and row["kl"] == pytest.approx(kl, abs=1e-6)
    assert row["lm_loss"] == pytest.approx(nll, abs=1e-6) and row["token_acc"] == pytest.approx(acc, abs=1e-12)


# ---- a parent dispatched over several devices ----------------------------------------------------


def test_a_parent_split_over_cpu_and_disk_scores_exactly_as_a_whole_one(setup, tmp_path):
    """The hook path multi-GPU scoring takes: a layer offloaded to disk has its weights loaded for the direct calls
    of its parts (and for its own subblocks with no library), one on the CPU runs there; fp32 scores are equal."""
    whole = scoring.load_parent(setup / "parent", torch.device("cpu"), torch.float32)
    layer = sum(p.numel() * 4 for p in whole.model.layers[0].parameters())
    embed = whole.model.embed_tokens.weight.numel() * 4
    split = scoring.load_parent(setup / "parent", torch.device("cpu"), torch.float32,
                                max_memory={"cpu": embed + 2 * layer + 1000, "disk": 10**9},
                                offload_folder=tmp_path / "offload")
    placed = split.hf_device_map
    assert placed["model.layers.0"] == "cpu" and placed["model.layers.1"] == placed["model.layers.2"] == "disk"
    assert placed["lm_head"] == placed["model.norm"] == "disk"
    attns, ffns = blocks.search_space(scoring.parent_shape(whole), fx.SPACE)
    windows = scoring.valid_windows(setup / "data", "mixed", 6, 32)

    def scores(model, library, attentions, ffn_variants):
        cands = [scoring.layer_candidates(model, i, attentions, ffn_variants, library, 8) for i in range(3)]
        return pd.DataFrame(scoring.score_layers(model, windows, cands, 4, 3, log=lambda m: None))

    want = scores(whole, setup / "lib", attns, ffns)
    assert (want.kl > 0).sum() == 3 * (len(attns) * len(ffns) - 1)  # every block but the parent's own moves it
    pd.testing.assert_frame_equal(scores(split, setup / "lib", attns, ffns), want, check_exact=True)
    # no library: the blocks are the parent's own subblocks, read from the (offloaded) layer
    own = (["attn_kv2", "attn_noop"], ["ffn_100", "ffn_noop"])
    pd.testing.assert_frame_equal(scores(split, None, *own), scores(whole, None, *own), check_exact=True)
    assert all(p.is_meta for p in split.model.layers[1].parameters())  # offloaded again after each use
