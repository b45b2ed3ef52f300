"""The aiconfigurator target: per-subblock prices that add up to aiconfigurator's own whole-model
estimates (Llama-3.1-70B, Nemotron-Super-49B, each scenario of the paper's Table 2), the costs table
it writes, and its one-line errors. Needs the `aiconfigurator` extra (aiconfigurator-core 0.12,
Python >= 3.11). The config.json files are the published ones, as aiconfigurator-core 0.12.0 ships
them in model_configs/ (tests/data/real-configs)."""

import json
from pathlib import Path

import pytest

from puzzle import config, costs
from puzzle import cost_model as cm
from puzzle.nemotron_nas.block_config import ffn_mult_to_intermediate_size

aic = pytest.importorskip("puzzle.aiconfigurator")
pytest.importorskip("aiconfigurator_core")

DATA = Path(__file__).parent / "data" / "real-configs"
LLAMA_70B = json.loads((DATA / "Llama-3.1-70B.config.json").read_text())
SUPER_49B = json.loads((DATA / "Llama-3_3-Nemotron-Super-49B-v1.config.json").read_text())
# the paper's Table 2 scenarios (input / output tokens) and its best settings:
# 51B at TP1, batch 256; 70B at TP4, batch 384
TABLE2 = [
    ("chatbot", 128, 128),
    ("text_generation", 128, 1024),
    ("long_text_generation", 128, 2048),
    ("inference_time_compute", 128, 4096),
    ("summarization_rag", 2048, 128),
    ("stress_test", 2048, 2048),
]


@pytest.fixture(scope="module")
def h100_fp8():
    return {tp: aic.Estimator("h100_sxm", "trtllm", None, "fp8", tp) for tp in (1, 4)}


@pytest.mark.parametrize("name,isl,osl", TABLE2)
def test_summed_subblocks_match_aiconfigurator_whole_model_within_5_percent(h100_fp8, name, isl, osl):
    parent_blocks = [{"attention": {"n_heads_in_group": 8}, "ffn": {"ffn_mult": 5.25}}] * 80
    cases = [
        ("49B", h100_fp8[1], SUPER_49B, SUPER_49B["block_configs"], 256),
        ("70B", h100_fp8[4], LLAMA_70B, parent_blocks, 384),
    ]
    for label, est, hf, block_configs, batch in cases:
        whole = est.whole_model_ms(hf, label, batch, isl, osl)  # aiconfigurator's own model (NemotronNas / LLAMA)
        ours = aic.summed_ms(est, LLAMA_70B, block_configs, batch, isl, osl)
        assert ours == pytest.approx(whole, rel=0.05), (label, name, ours, whole)


def test_the_table_prices_every_variant_and_memory_per_gpu(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "config.json").write_text(json.dumps(LLAMA_70B))
    space = {"attention": {"kv_heads": [4, 1]}, "ffn": {"ratios": [0.5, 0.25], "multiple_of": 256}}
    scen = [{"name": "text_generation", "input_len": 128, "output_len": 1024, "batch_sizes": [8, 64]}]
    targets = {"aic": {"system": "h100_sxm", "dtype": "fp8", "tp": 4}}
    cfg = config.validate(
        {
            "parent": {"path": str(tmp_path / "p")},
            "search_space": space,
            "search": {"target": "aic"},
            "costs": {"targets": targets, "scenarios": scen},
        }
    )
    frame, meta = costs.run(cfg, tmp_path / "p", "aic", log=lambda m: None)
    assert list(frame.columns) == costs.COLUMNS and meta["tp"] == 4 and meta["backend"] == "trtllm"
    assert meta["system"] == "h100_sxm" and meta["backend_version"] and meta["aiconfigurator_core"].startswith("0.")
    t = frame[frame.batch == 64].set_index("variant")
    # more work costs more; no-ops nothing; linear (one 8192 x 2048 GEMM per GPU) less than any GQA attention
    assert t.decode_ms["ffn_100"] > t.decode_ms["ffn_50"] > t.decode_ms["ffn_25"] > 0
    assert t.prefill_ms["attn_kv8"] > t.prefill_ms["attn_kv1"] > t.prefill_ms["attn_linear"] > 0
    assert t.decode_ms[["attn_noop", "ffn_noop"]].eq(0).all()
    assert frame[frame.batch == 64].decode_ms.sum() > frame[frame.batch == 8].decode_ms.sum()
    # memory per GPU at tp 4, fp8: the KV heads split 2 per GPU, 1 byte each; kv1 is replicated
    assert t.kv_bytes_per_token["attn_kv8"] == 2 * 2 * 128 and t.kv_bytes_per_token["attn_kv1"] == 2 * 1 * 128
    assert t.param_bytes["ffn_100"] == cm.param_bytes(
        "ffn_100", cm.Arch.from_config(LLAMA_70B), cm.Placement("fp8", 4)
    )
    # the table's prediction of the parent is aiconfigurator's own estimate of a 70B at tp 4
    parent = ["attn_kv8", "ffn_100"]
    predicted = (
        t.prefill_ms["non_block"]
        + 1024 * t.decode_ms["non_block"]
        + 80 * sum(t.prefill_ms[v] + 1024 * t.decode_ms[v] for v in parent)
    )
    whole = aic.Estimator("h100_sxm", "trtllm", None, "fp8", 4).whole_model_ms(LLAMA_70B, "70B", 64, 128, 1024)
    assert predicted == pytest.approx(whole, rel=0.05)


def test_bad_targets_stop_with_one_line_naming_the_key():
    with pytest.raises(config.ConfigError, match=r"system 'h999_sxm'.*no aiconfigurator data.*h100_sxm"):
        aic.Estimator("h999_sxm", "trtllm", None, "fp8", 1, target="x")
    with pytest.raises(config.ConfigError, match=r"costs.targets.x.dtype = 'float32'"):
        aic.Estimator("h100_sxm", "trtllm", None, "float32", 1, target="x")
    est = aic.Estimator("h100_sxm", "trtllm", None, "bfloat16", 1)
    with pytest.raises(config.ConfigError, match="multiple_of: 256"):
        est.subblock_ms(LLAMA_70B, "ffn", {"intermediate_size": 1000}, 1, 8, 8)
    # a width that ffn_mult expresses is priced like its ffn_mult
    width = ffn_mult_to_intermediate_size(2.625, 8192)
    a = est.subblock_ms(LLAMA_70B, "ffn", {"intermediate_size": width}, 1, 128, 128)[0]
    assert a == est.subblock_ms(LLAMA_70B, "ffn", {"ffn_mult": 2.625}, 1, 128, 128)[0]


def test_without_the_extra_an_aiconfigurator_target_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setattr(aic, "version", lambda: None)
    with pytest.raises(config.ConfigError, match=r"costs.targets.h100: .*pip install 'puzzle\[aiconfigurator\]'"):
        aic.Estimator("h100_sxm", "trtllm", None, "fp8", 1, target="h100")
