"""Costs: exact memory, the analytic roofline against a hand calculation, the memory check, the table."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import fixtures as fx
from puzzle import blocks, cli, config, costs
from puzzle import cost_model as cm

# the tiny parent of fixtures.make_parent: hidden 32, 4 heads (head_dim 8), 2 KV heads, FFN 64, vocab 96, 3 layers
PARENT = {"model_type": "llama", "hidden_size": 32, "num_attention_heads": 4, "num_key_value_heads": 2,
          "intermediate_size": 64, "num_hidden_layers": 3, "vocab_size": 96, "tie_word_embeddings": True}
ARCH = cm.Arch.from_config(PARENT)
CFG = {"threads": 1, "device": "cpu", "search_space": fx.SPACE}
BF16 = cm.Placement("bfloat16")


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    return fx.make_parent(tmp_path_factory.mktemp("costs") / "parent")


def test_analytic_decode_of_one_subblock_equals_a_hand_calculation():
    dev = cm.Device("toy", peak_tflops=1e-6, bandwidth_gbs=1e-3, memory_gb=1)  # 1 MFLOP/s, 1 MB/s
    # attn_kv1, batch 2, 20 cached tokens, bf16 (2 bytes); q_dim = 32, kv_dim = 8
    # flops: projections 2*2*32*(2*32 + 2*8) = 10,240; attention 4*2*4*8*(20+1) = 5,376  -> 15,616
    # params: q 32*32 + o 32*32 + k 32*8 + v 32*8 + norm 32 = 2,592 -> 5,184 bytes
    # bytes: 5,184 + activations 2*2*32*2 = 256 + K/V 2*2*21*8*2 = 1,344              -> 6,784
    flops, nbytes = cm.decode_work("attn_kv1", ARCH, batch=2, kv_len=20, place=BF16)
    assert (flops, nbytes) == (15_616, 6_784)
    assert cm.roofline_ms(flops, nbytes, dev) == pytest.approx(1e3 * max(15_616 / 1e6, 6_784 / 1e6))
    # ffn_50 (width 32 at multiple_of 8) prefill of 2 x 10 tokens: 6*2*10*32*32 = 122,880 flops;
    # bytes: (3*32*32 + 32)*2 = 6,208 weights + 2*2*10*32*2 = 2,560 activations
    assert cm.prefill_work("ffn_50", ARCH, 2, 10, BF16, multiple=8) == (122_880, 8_768)
    # causal prefill attention, kv2: 2*1*10*32*(64+32) + 2*1*4*8*10*11
    assert cm.prefill_work("attn_kv2", ARCH, 1, 10, cm.Placement("float32"))[0] == 61_440 + 7_040


def test_param_and_kv_bytes_match_the_modules_and_the_formula():
    from puzzle.nemotron_nas import DeciLMDecoderLayer

    attns, ffns = blocks.search_space(ARCH.shape, fx.SPACE)
    for v in attns + ffns:
        pair = (v, "ffn_noop") if v.startswith("attn") else ("attn_noop", v)
        cfg = costs.stack_config(PARENT, blocks.block_config(*pair, ARCH.shape, 8), 1)
        n = sum(p.numel() for p in DeciLMDecoderLayer(cfg, 0).parameters())
        assert cm.param_count(v, ARCH, 8) == n, v
    assert cm.kv_bytes_per_token("attn_kv2", ARCH, 2) == 2 * 2 * 8 * 2
    assert cm.kv_bytes_per_token("attn_kv1", ARCH, 4) == 2 * 1 * 8 * 4
    assert [cm.kv_bytes_per_token(v, ARCH, 2) for v in ("attn_linear", "attn_noop", "ffn_100", "non_block")] == [0] * 4
    # tied embeddings: one vocab x hidden matrix + the final norm
    assert cm.param_count("non_block", ARCH) == 96 * 32 + 32


def test_oversized_scenario_fails_early_naming_scenario_bytes_and_memory(parent, capsys):
    cfg = config.validate(
        {
            **CFG,
            "costs": {
                "targets": {"small": {"device": "h100_sxm", "memory_gb": 0.01}},
                "scenarios": [
                    {"name": "ok", "input_len": 8, "output_len": 8},
                    {"name": "huge", "input_len": 4096, "output_len": 4096, "batch_sizes": [64, 128]},
                ],
            },
        },
        stage="costs",
    )
    params, kv = cm.memory_needed(ARCH, 64, 4096, 4096, BF16, multiple=8)
    assert kv == 3 * 2 * 2 * 8 * 2 * 64 * 8192 and params == (3 * (2592 + 512 + 6176) + 96 * 32 + 32) * 2
    with pytest.raises(config.ConfigError) as err:
        costs.run(cfg, parent, "small")
    msg = str(err.value)
    assert "'huge' at batch 64" in msg and f"{params + kv:,} bytes" in msg and "10,000,000 bytes" in msg
    assert "h100_sxm" in msg
    # the CLI: one line, exit status 2, nothing written
    code = cli.main(
        [
            "costs",
            "--cfg",
            json.dumps({**CFG, "costs": cfg["costs"]}),
            "--parent",
            str(parent),
            "--target",
            "small",
            "--out",
            str(parent.parent / "x" / "costs.csv"),
        ]
    )
    assert code == 2 and "'huge' at batch 64" in capsys.readouterr().err
    assert not (parent.parent / "x").exists()


def test_measured_and_analytic_tables_have_the_contract_columns(parent, tmp_path):
    scen = [{"name": "tiny", "input_len": 8, "output_len": 4, "batch_sizes": [1, 2]}]
    cfg = {
        **CFG,
        "costs": {
            "targets": {"here": {"measure": True}, "h100": {"device": "h100_sxm"}},
            "scenarios": scen,
            "repeats": 2,
            "warmup": 1,
            "n_copies": 1,
            "on_noise": "mark",
        },
    }
    frames = {}
    for target in ("here", "h100"):
        out = tmp_path / target / "costs.csv"
        assert (
            cli.main(
                ["costs", "--cfg", json.dumps(cfg), "--parent", str(parent), "--target", target, "--out", str(out)]
            )
            == 0
        )
        frames[target] = pd.read_csv(out)
        meta = json.loads((out.parent / "costs.json").read_text())
        assert {"device", "dtype", "method"} <= set(meta)
    here, h100 = frames["here"], frames["h100"]
    assert list(here.columns) == costs.COLUMNS == list(h100.columns)
    assert costs.COLUMNS == [
        "kind",
        "variant",
        "scenario",
        "batch",
        "input_len",
        "output_len",
        "prefill_ms",
        "decode_ms",
        "param_bytes",
        "kv_bytes_per_token",
        "device",
        "dtype",
        "tp",
        "prefill_ms_lo",
        "prefill_ms_hi",
        "decode_ms_lo",
        "decode_ms_hi",
        "noisy",
    ]
    # every measured time lies in its interval; an estimate's interval is the time itself
    for k in ("prefill_ms", "decode_ms"):
        assert (here[k + "_lo"] <= here[k]).all() and (here[k] <= here[k + "_hi"]).all()
        assert (h100[k + "_lo"] == h100[k]).all() and (h100[k + "_hi"] == h100[k]).all()
    assert not h100.noisy.any() and (here.tp == 1).all()
    attns, ffns = blocks.search_space(ARCH.shape, fx.SPACE)
    assert list(here.variant[:9]) == attns + ffns + ["non_block"] and len(here) == 2 * 9
    assert set(here.kind) == {"attention", "ffn", "non_block"} and list(here.batch.unique()) == [1, 2]
    assert (here.dtype == "float32").all() and (h100.dtype == "bfloat16").all() and (h100.device == "h100_sxm").all()
    kv = dict(zip(here.variant, here.kv_bytes_per_token))
    assert kv == {
        "attn_kv2": 2 * 2 * 8 * 4,
        "attn_kv1": 2 * 1 * 8 * 4,
        "attn_linear": 0,
        "attn_noop": 0,
        "ffn_100": 0,
        "ffn_50": 0,
        "ffn_linear": 0,
        "ffn_noop": 0,
        "non_block": 0,
    }
    noop = here[here.variant.isin(["attn_noop", "ffn_noop"])]
    assert (noop[["prefill_ms", "decode_ms", "param_bytes"]] == 0).all().all()
    assert (here[["prefill_ms", "decode_ms"]] >= 0).all().all() and here.prefill_ms[here.variant == "non_block"].gt(
        0
    ).all()
    # analytic: more work, more time (the roofline is monotone in width), and bytes are half at bf16
    h = h100[h100.batch == 1].set_index("variant")
    assert h.decode_ms["ffn_100"] > h.decode_ms["ffn_50"] > 0 and h.decode_ms["attn_kv2"] > h.decode_ms["attn_kv1"]
    assert (h100.param_bytes * 2 == here.param_bytes).all()


def test_target_must_be_measured_or_analytic():
    with pytest.raises(config.ConfigError, match="'device' is a required property"):
        config.validate({"costs": {"targets": {"x": {"dtype": "float32"}}}})
    with pytest.raises(ValueError, match="not one of"):
        cm.device("tpu_v9")
    assert cm.device("tpu_v9", 100, 1000, 16).peak_tflops == 100
    assert cm.device("h200").bandwidth_gbs == 4800 and cm.device("h100_sxm", memory_gb=94).memory_gb == 94


@pytest.mark.parametrize("together", [True, False])
def test_measured_rows_together_or_in_pairs_give_the_same_table(together):
    scen = [{"name": "tiny", "input_len": 6, "output_len": 4, "batch_sizes": [1, 2]}]
    cfg = {"repeats": 2, "warmup": 0, "n_copies": 1, "statistic": "median", "clock": "wall", "on_noise": "mark"}
    extra_model = costs.build_model(
        costs.stack_config(PARENT, blocks.block_config("attn_kv1", "ffn_50", ARCH.shape, 8), 3),
        torch.device("cpu"),
        torch.float32,
    )
    rows, extra = costs.measured_rows(
        PARENT,
        ARCH,
        fx.SPACE,
        scen,
        cfg,
        torch.device("cpu"),
        "float32",
        8,
        log=lambda m: None,
        also=[extra_model],
        together=together,
    )
    assert extra["timed_together"] is together
    assert set(extra["also"]) == {("tiny", 1), ("tiny", 2)}
    assert all(len(v) == 1 and len(v[0]) == 2 and min(v[0]) > 0 for v in extra["also"].values())
    attns, ffns = blocks.search_space(ARCH.shape, fx.SPACE)
    assert [r["variant"] for r in rows] == (attns + ffns + ["non_block"]) * 2
    assert list(rows[0]) == costs.COLUMNS and all(r["prefill_ms"] >= 0 and r["decode_ms"] >= 0 for r in rows)
    # without `also`, nothing extra in the sidecar
    _, extra = costs.measured_rows(
        PARENT,
        ARCH,
        fx.SPACE,
        scen,
        {**cfg, "repeats": 1},
        torch.device("cpu"),
        "float32",
        8,
        log=lambda m: None,
        together=together,
    )
    assert "also" not in extra


def test_stacks_are_held_together_only_when_they_fit(monkeypatch):
    scen = [{"name": "tiny", "input_len": 6, "output_len": 4, "batch_sizes": [1]}]
    need = costs.together_bytes(ARCH, fx.SPACE, scen, 2, 4, 8)
    # every stack's parameters at least (N + 2N copies of each layer), KV caches on top
    layers = sum(cm.param_count(v, ARCH, 8) for _, pair in costs.stack_specs(ARCH, fx.SPACE) for v in pair)
    assert need > 3 * 2 * layers * 4
    assert costs.together_bytes(ARCH, fx.SPACE, scen, 4, 4, 8) > need
    cfg = {
        "repeats": 1,
        "warmup": 0,
        "n_copies": 2,
        "statistic": "median",
        "clock": "wall",
        "on_noise": "mark",
        "remeasure": 0,
    }
    monkeypatch.setattr(costs, "device_memory_bytes", lambda device: 3.9 * need)
    _, extra = costs.measured_rows(
        PARENT, ARCH, fx.SPACE, scen, cfg, torch.device("cpu"), "float32", 8, log=lambda m: None
    )
    assert extra["timed_together"] is False
    monkeypatch.setattr(costs, "device_memory_bytes", lambda device: 4.1 * need)
    _, extra = costs.measured_rows(
        PARENT, ARCH, fx.SPACE, scen, cfg, torch.device("cpu"), "float32", 8, log=lambda m: None
    )
    assert extra["timed_together"] is True


def test_tensor_parallel_fp8_decode_of_one_subblock_equals_a_hand_calculation():
    fp8_tp2 = cm.Placement("fp8", tp=2)
    # attn_kv1 over 2 GPUs: 2 of the 4 query heads per GPU (q_dim 16), the one KV head replicated (kv_dim 8)
    # params per GPU: GEMMs 2*32*16 + 2*32*8 = 1,536 at 1 byte + norm 32 at 2 bytes (bf16) = 1,600 bytes
    assert cm.param_bytes("attn_kv1", ARCH, fp8_tp2) == 1_600
    assert cm.kv_bytes_per_token("attn_kv1", ARCH, fp8_tp2.weight_bytes, fp8_tp2.tp) == 2 * 1 * 8 * 1
    # decode, batch 2, 20 cached: flops 2*2*32*(2*16 + 2*8) = 6,144 + 4*2*2*8*21 = 2,688 -> 8,832;
    # bytes 1,600 + activations 2*2*32*2 (bf16) = 256 + K/V 2*2*21*8*1 (fp8) = 672 -> 2,528
    assert cm.decode_work("attn_kv1", ARCH, 2, 20, fp8_tp2) == (8_832, 2_528)
    # ffn_50 (width 32 -> 16 per GPU) prefill of 2 x 10 tokens: 6*2*10*32*16 = 61,440 flops
    assert cm.prefill_work("ffn_50", ARCH, 2, 10, fp8_tp2, multiple=8)[0] == 61_440
    # the all-reduce of its output, 2 x 1 x 32 bf16 = 128 bytes: ring 2 (tp - 1) / tp of it, plus the latency
    dev = cm.Device("toy", 1e-6, 1e-3, 1, fp8_tflops=2e-6, interconnect_gbs=1e-3)  # 1 MB/s link
    assert cm.allreduce_s("attn_kv1", ARCH, 2, 1, fp8_tp2, dev) == pytest.approx(128 / 1e6 + cm.ALLREDUCE_LATENCY_S)
    assert (
        cm.allreduce_s("attn_kv1", ARCH, 2, 1, BF16, dev) == 0 == cm.allreduce_s("attn_noop", ARCH, 2, 1, fp8_tp2, dev)
    )
    # fp8 runs at the fp8 peak: 2 MFLOP/s here
    assert cm.roofline_ms(2e6, 0, dev, "fp8") == pytest.approx(1e3) and cm.roofline_ms(2e6, 0, dev) == pytest.approx(
        2e3
    )
    with pytest.raises(ValueError, match="no fp8 peak"):
        cm.device("a100_80gb").tflops("fp8")


def _real_parent(tmp_path, name):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(
        (Path(__file__).parent / "data" / "real-configs" / f"{name}.config.json").read_text()
    )
    return folder


def test_a_70b_plans_at_fp8_on_one_80gb_h100_and_at_tp4_in_bf16_but_not_at_tp1(tmp_path):
    parent = _real_parent(tmp_path, "Llama-3.1-70B")
    space = {"attention": {"kv_heads": [4, 2, 1]}, "ffn": {"ratios": [0.5], "multiple_of": 256}}
    scen = [{"name": "text_generation", "input_len": 128, "output_len": 1024, "batch_sizes": [1, 8, 64]}]
    targets = {
        "fp8": {"device": "h100_sxm", "dtype": "fp8"},
        "tp4": {"device": "h100_sxm", "dtype": "bfloat16", "tp": 4},
        "bf16": {"device": "h100_sxm", "dtype": "bfloat16"},
    }
    cfg = config.validate({"search_space": space, "costs": {"targets": targets, "scenarios": scen}}, stage="costs")
    arch = cm.Arch.from_config(json.loads((parent / "config.json").read_text()))
    for target, budget in (("fp8", 80e9), ("tp4", 80e9)):
        frame, meta = costs.run(cfg, parent, target, log=lambda m: None)
        one = frame[frame.batch == 1].set_index("variant")
        params = one.param_bytes["non_block"] + 80 * (one.param_bytes["attn_kv8"] + one.param_bytes["ffn_100"])
        place = cm.Placement(targets[target]["dtype"], targets[target].get("tp", 1))
        assert params == cm.memory_needed(arch, 1, 128, 1024, place)[0] < budget
        assert (frame.tp == place.tp).all() and meta["tp"] == place.tp
        # per GPU: 1 byte a weight at fp8 (head and embedding kept in bf16), a quarter of bf16 at tp 4
        assert (
            one.param_bytes["ffn_100"]
            == {"fp8": 3 * 8192 * 28672 + 2 * 8192, "tp4": 2 * 3 * 8192 * 7168 + 2 * 8192}[target]
        )
    # fp8 on one GPU: batch 64 of 1152 tokens needs 12 GB of KV cache on top of 72.7 GB: named, not fatal
    assert costs.run(cfg, parent, "fp8", log=lambda m: None)[1]["parent_exceeds_memory"] == ["text_generation@64"]
    with pytest.raises(
        config.ConfigError, match=r"'text_generation' at batch 1 .* bfloat16\) at the parent's architecture"
    ):
        costs.run(cfg, parent, "bf16", log=lambda m: None)
    # more GPUs: the time of the group falls (the work splits), the all-reduce makes it less than 4x
    tp4 = costs.run(cfg, parent, "tp4", log=lambda m: None)[0].set_index(["variant", "batch"])
    tp1 = costs.analytic_rows(arch, space, costs.scenarios(cfg), cm.device("h100_sxm"), BF16, 256)
    tp1 = pd.DataFrame(tp1).set_index(["variant", "batch"])
    ratio = tp1.decode_ms[("ffn_100", 64)] / tp4.decode_ms[("ffn_100", 64)]
    assert 2 < ratio < 4


def _fake_stack_timer(cost_s, empty_s, fixed_s, noise, calls):
    """A timing.time_models that knows each stack's true time (fixed + layers x (empty + variant)) and adds
    `noise` (relative, seeded by the call's seed): synthetic timings with a known answer."""

    def variant_of(model):
        if model.config.num_hidden_layers == 0:
            return None
        entry = model.config.block_configs[0]
        a = blocks.attention_name_of(entry.attention, ARCH.num_attention_heads)
        f = blocks.ffn_name_of(entry.ffn, ARCH.shape, ["ffn_100", "ffn_50"], 8)
        return a if f == "ffn_noop" else f

    def fake(models, batch, input_len, output_len, timer, seed=0, rounds=None, warmup=True):
        calls.append(seed)
        rng = np.random.default_rng(seed)
        r = timer.repeats if rounds is None else rounds
        out = []
        for _ in ("prefill", "decode"):
            out.append([])
            for m in models:
                v, layers = variant_of(m), m.config.num_hidden_layers
                true = fixed_s + layers * (empty_s + (cost_s.get(v, 0.0) if v else 0.0))
                out[-1].append(list(true * (1 + noise * rng.standard_normal(r))))
        return tuple(out)

    return fake


@pytest.mark.parametrize("together", [True, False])
def test_a_difference_lost_in_noise_is_timed_again_then_stops_or_is_marked(monkeypatch, together):
    # true per-layer costs: ffn_50 costs nothing beyond an empty layer, every other subblock clearly more
    cost_s = {
        "attn_kv2": 0.02,
        "attn_kv1": 0.015,
        "attn_linear": 0.01,
        "ffn_100": 0.03,
        "ffn_50": 0.0,
        "ffn_linear": 0.01,
    }
    calls = []
    monkeypatch.setattr(costs.timing, "time_models", _fake_stack_timer(cost_s, 0.005, 0.1, 0.002, calls))
    scen = [{"name": "tiny", "input_len": 6, "output_len": 4, "batch_sizes": [1]}]
    cfg = {
        "repeats": 20,
        "warmup": 0,
        "n_copies": 2,
        "statistic": "median",
        "clock": "wall",
        "interval": 0.9,
        "bootstrap": 500,
        "remeasure": 2,
        "on_noise": "stop",
    }
    with pytest.raises(costs.NoisyCostsError) as err:
        costs.measured_rows(
            PARENT, ARCH, fx.SPACE, scen, cfg, torch.device("cpu"), "float32", 8, log=lambda m: None, together=together
        )
    msg = str(err.value)
    assert "tiny@1 ffn_50" in msg and "costs.on_noise: mark" in msg and "attn_kv" not in msg
    # timed once, then twice more (costs.remeasure); apart the noisy variant's and the empty layer's stacks
    units = 1 if together else 1 + 7  # the model without layers, then the empty layer and 6 stacks
    assert len(calls) == units + 2 * (1 if together else 2)
    calls.clear()
    rows, extra = costs.measured_rows(
        PARENT,
        ARCH,
        fx.SPACE,
        scen,
        {**cfg, "on_noise": "mark"},
        torch.device("cpu"),
        "float32",
        8,
        log=lambda m: None,
        together=together,
    )
    got = {r["variant"]: r for r in rows}
    assert [v for v, r in got.items() if r["noisy"]] == ["ffn_50"] and extra["noisy_rows"][0].startswith(
        "tiny@1 ffn_50"
    )
    assert got["ffn_50"]["prefill_ms_lo"] == 0.0  # written, clamped at 0, with an interval that says why
    rounds = extra["rounds"]["tiny@1"]
    assert rounds[("all" if together else "ffn_50")] == 3 * 20 and (together or rounds["attn_kv2"] == 20)
    # the 90% intervals hold the true costs (1e3: ms) about 9 times in 10 (here 12 of them, seeded), and
    # the non-block part is fixed + L x the empty layer
    held = [
        got[v][k + "_lo"] <= 1e3 * c <= got[v][k + "_hi"]
        for v, c in cost_s.items()
        for k in ("prefill_ms", "decode_ms")
    ]
    assert sum(held) >= 9
    for v, c in cost_s.items():
        assert got[v]["prefill_ms"] == pytest.approx(1e3 * c, abs=0.6) and got[v]["decode_ms"] == pytest.approx(
            1e3 * c, abs=0.6
        )
    assert got["non_block"]["decode_ms"] == pytest.approx(1e3 * (0.1 + 3 * 0.005), rel=0.02)
