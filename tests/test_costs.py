"""Costs: exact memory, the analytic roofline against a hand calculation, the memory check, the table."""

import json

import pandas as pd
import pytest
import torch

import tiny_library as tl
from puzzle import blocks, cli, config, costs
from puzzle import cost_model as cm

# the tiny parent of tiny_library: hidden 32, 4 heads (head_dim 8), 2 KV heads, FFN 64, vocab 96, 3 layers
PARENT = {"model_type": "llama", "hidden_size": 32, "num_attention_heads": 4, "num_key_value_heads": 2,
          "intermediate_size": 64, "num_hidden_layers": 3, "vocab_size": 96, "tie_word_embeddings": True}
ARCH = cm.Arch.from_config(PARENT)
CFG = {"threads": 1, "device": "cpu", "search_space": tl.SPACE}


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    return tl.make_parent(tmp_path_factory.mktemp("costs") / "parent")


def test_analytic_decode_of_one_subblock_equals_a_hand_calculation():
    dev = cm.Device("toy", peak_tflops=1e-6, bandwidth_gbs=1e-3, memory_gb=1)  # 1 MFLOP/s, 1 MB/s
    # attn_kv1, batch 2, 20 cached tokens, bf16 (2 bytes); q_dim = 32, kv_dim = 8
    # flops: projections 2*2*32*(2*32 + 2*8) = 10,240; attention 4*2*4*8*(20+1) = 5,376  -> 15,616
    # params: q 32*32 + o 32*32 + k 32*8 + v 32*8 + norm 32 = 2,592 -> 5,184 bytes
    # bytes: 5,184 + activations 2*2*32*2 = 256 + K/V 2*2*21*8*2 = 1,344              -> 6,784
    flops, nbytes = cm.decode_work("attn_kv1", ARCH, batch=2, kv_len=20, e=2)
    assert (flops, nbytes) == (15_616, 6_784)
    assert cm.roofline_ms(flops, nbytes, dev) == pytest.approx(1e3 * max(15_616 / 1e6, 6_784 / 1e6))
    # ffn_50 (width 32 at multiple_of 8) prefill of 2 x 10 tokens: 6*2*10*32*32 = 122,880 flops;
    # bytes: (3*32*32 + 32)*2 = 6,208 weights + 2*2*10*32*2 = 2,560 activations
    assert cm.prefill_work("ffn_50", ARCH, 2, 10, 2, multiple=8) == (122_880, 8_768)
    # causal prefill attention, kv2: 2*1*10*32*(64+32) + 2*1*4*8*10*11
    assert cm.prefill_work("attn_kv2", ARCH, 1, 10, 4)[0] == 61_440 + 7_040


def test_param_and_kv_bytes_match_the_modules_and_the_formula():
    from puzzle.nemotron_nas import DeciLMDecoderLayer

    attns, ffns = blocks.search_space(ARCH.shape, tl.SPACE)
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
    cfg = config.validate({**CFG, "costs": {
        "targets": {"small": {"device": "h100_sxm", "memory_gb": 0.01}},
        "scenarios": [{"name": "ok", "input_len": 8, "output_len": 8},
                      {"name": "huge", "input_len": 4096, "output_len": 4096, "batch_sizes": [1, 64]}]}})
    params, kv = cm.memory_needed(ARCH, 64, 4096, 4096, 2)
    assert kv == 3 * 2 * 2 * 8 * 2 * 64 * 8192 and params == (3 * (2592 + 512 + 6176) + 96 * 32 + 32) * 2
    with pytest.raises(config.ConfigError) as err:
        costs.run(cfg, parent, "small")
    msg = str(err.value)
    assert "'huge' at batch 64" in msg and f"{params + kv:,} bytes" in msg and "10,000,000 bytes" in msg
    assert "h100_sxm" in msg
    # the CLI: one line, exit status 2, nothing written
    code = cli.main(["costs", "--cfg", json.dumps({**CFG, "costs": cfg["costs"]}), "--parent", str(parent),
                     "--target", "small", "--out", str(parent.parent / "x" / "costs.csv")])
    assert code == 2 and "'huge' at batch 64" in capsys.readouterr().err
    assert not (parent.parent / "x").exists()


def test_measured_and_analytic_tables_have_the_contract_columns(parent, tmp_path):
    scen = [{"name": "tiny", "input_len": 8, "output_len": 4, "batch_sizes": [1, 2]}]
    cfg = {**CFG, "costs": {"targets": {"here": {"measure": True}, "h100": {"device": "h100_sxm"}},
                            "scenarios": scen, "repeats": 2, "warmup": 1, "n_copies": 1}}
    frames = {}
    for target in ("here", "h100"):
        out = tmp_path / target / "costs.csv"
        assert cli.main(["costs", "--cfg", json.dumps(cfg), "--parent", str(parent), "--target", target,
                         "--out", str(out)]) == 0
        frames[target] = pd.read_csv(out)
        meta = json.loads((out.parent / "costs.json").read_text())
        assert {"device", "dtype", "method"} <= set(meta)
    here, h100 = frames["here"], frames["h100"]
    assert list(here.columns) == costs.COLUMNS == list(h100.columns)
    assert costs.COLUMNS == ["kind", "variant", "scenario", "batch", "input_len", "output_len", "prefill_ms",
                             "decode_ms", "param_bytes", "kv_bytes_per_token", "device", "dtype"]
    attns, ffns = blocks.search_space(ARCH.shape, tl.SPACE)
    assert list(here.variant[:9]) == attns + ffns + ["non_block"] and len(here) == 2 * 9
    assert set(here.kind) == {"attention", "ffn", "non_block"} and list(here.batch.unique()) == [1, 2]
    assert (here.dtype == "float32").all() and (h100.dtype == "bfloat16").all() and (h100.device == "h100_sxm").all()
    kv = dict(zip(here.variant, here.kv_bytes_per_token))
    assert kv == {"attn_kv2": 2 * 2 * 8 * 4, "attn_kv1": 2 * 1 * 8 * 4, "attn_linear": 0, "attn_noop": 0,
                  "ffn_100": 0, "ffn_50": 0, "ffn_linear": 0, "ffn_noop": 0, "non_block": 0}
    noop = here[here.variant.isin(["attn_noop", "ffn_noop"])]
    assert (noop[["prefill_ms", "decode_ms", "param_bytes"]] == 0).all().all()
    assert (here[["prefill_ms", "decode_ms"]] >= 0).all().all() and here.prefill_ms[here.variant == "non_block"].gt(0).all()
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


def test_stacks_hold_n_copies_and_time_positive(parent):
    cfg = costs.stack_config(PARENT, blocks.block_config("attn_kv1", "ffn_noop", ARCH.shape, 8), 3)
    model = costs.build_model(cfg, torch.device("cpu"), torch.float32)
    assert len(model.model.layers) == 3 and all(l.mlp is None for l in model.model.layers)
    assert model.config.num_key_value_heads_of(2) == 1
    w = costs.Workload(model, 2, 6, 4, torch.device("cpu"))
    w.prepare_decode()
    assert w.cache.get_seq_length() == 8  # input + output // 2
    w.decode()
    w.rewind()
    assert w.cache.get_seq_length() == 8


def test_round_robin_visits_every_model_once_per_round():
    orders = costs.round_robin_orders(5, 7, seed=3)
    assert len(orders) == 7 and all(sorted(o) == list(range(5)) for o in orders)
    assert orders == costs.round_robin_orders(5, 7, seed=3)  # seeded: the same schedule every run
    assert len({tuple(o) for o in orders}) > 1  # shuffled: no model always follows the same one


def test_normalize_rounds_divides_out_a_common_slowdown():
    base, slow = [1.0, 2.0, 5.0], [1.0, 1.3, 0.9, 1.0, 2.0]
    times = [[b * f for f in slow] for b in base]
    out = costs.normalize_rounds(times)
    for b, t in zip(base, out):
        assert t == pytest.approx([b] * len(slow))  # median slowdown of these rounds is 1.0
    # a model alone, or no rounds: nothing to compare with, returned as is
    assert costs.normalize_rounds([[1.0, 3.0, 2.0]]) == [[1.0, 3.0, 2.0]]
    assert costs.normalize_rounds([[], []]) == [[], []]
    # one model's own outlier is not a round's slowdown: the others keep their times
    out = costs.normalize_rounds([[1.0, 1.0, 1.0], [2.0, 2.0, 2.0], [1.0, 9.0, 1.0]])
    assert out[0] == [1.0, 1.0, 1.0] and out[2][1] == 9.0


class _CountingTimer(costs.Timer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = []

    def once(self, fn, after=None):
        self.calls.append((fn.__name__, id(fn.__self__.model)))
        return super().once(fn, after)


def test_time_models_times_every_model_the_same_number_of_times_each_round():
    models = [costs.build_model(costs.stack_config(PARENT, blocks.block_config(a, f, ARCH.shape, 8), k),
                                torch.device("cpu"), torch.float32)
              for a, f, k in (("attn_kv2", "ffn_noop", 1), ("attn_noop", "ffn_50", 2), ("attn_noop", "ffn_noop", 0))]
    timer = _CountingTimer(torch.device("cpu"), warmup=1, repeats=4)
    out = costs.time_models(models, 2, 6, 4, timer)
    assert len(out) == 3 and all(len(t) == 2 and t[0] > 0 and t[1] > 0 for t in out)
    ids = [id(m) for m in models]
    pre = [c[1] for c in timer.calls if c[0] == "prefill"]
    dec = [c[1] for c in timer.calls if c[0] == "decode"]
    assert len(pre) == 4 * 3 and len(dec) == (1 + 4) * 3  # decode warm-up goes through the timer too
    for r in range(4):  # each round a permutation of the models
        assert sorted(pre[3 * r:3 * r + 3]) == sorted(ids)
    assert sorted(dec[3:]) == sorted(ids * 4) and sorted(dec[:3]) == sorted(ids)


@pytest.mark.parametrize("together", [True, False])
def test_measured_rows_together_or_in_pairs_give_the_same_table(together):
    scen = [{"name": "tiny", "input_len": 6, "output_len": 4, "batch_sizes": [1, 2]}]
    cfg = {"repeats": 2, "warmup": 0, "n_copies": 1, "statistic": "median", "clock": "wall"}
    extra_model = costs.build_model(costs.stack_config(PARENT, blocks.block_config("attn_kv1", "ffn_50", ARCH.shape, 8), 3),
                                    torch.device("cpu"), torch.float32)
    rows, extra = costs.measured_rows(PARENT, ARCH, tl.SPACE, scen, cfg, torch.device("cpu"), "float32", 8,
                                      log=lambda m: None, also=[extra_model], together=together)
    assert extra["timed_together"] is together
    assert set(extra["also"]) == {("tiny", 1), ("tiny", 2)}
    assert all(len(v) == 1 and len(v[0]) == 2 and min(v[0]) > 0 for v in extra["also"].values())
    attns, ffns = blocks.search_space(ARCH.shape, tl.SPACE)
    assert [r["variant"] for r in rows] == (attns + ffns + ["non_block"]) * 2
    assert list(rows[0]) == costs.COLUMNS and all(r["prefill_ms"] >= 0 and r["decode_ms"] >= 0 for r in rows)
    # without `also`, nothing extra in the sidecar
    _, extra = costs.measured_rows(PARENT, ARCH, tl.SPACE, scen, {**cfg, "repeats": 1}, torch.device("cpu"),
                                   "float32", 8, log=lambda m: None, together=together)
    assert "also" not in extra


def test_stacks_are_held_together_only_when_they_fit(monkeypatch):
    scen = [{"name": "tiny", "input_len": 6, "output_len": 4, "batch_sizes": [1]}]
    need = costs.together_bytes(ARCH, tl.SPACE, scen, 2, 4, 8)
    # every stack's parameters at least (N + 2N copies of each layer), KV caches on top
    layers = sum(cm.param_count(v, ARCH, 8) for _, pair in costs.stack_specs(ARCH, tl.SPACE) for v in pair)
    assert need > 3 * 2 * layers * 4
    assert costs.together_bytes(ARCH, tl.SPACE, scen, 4, 4, 8) > need
    cfg = {"repeats": 1, "warmup": 0, "n_copies": 2, "statistic": "median", "clock": "wall"}
    monkeypatch.setattr(costs, "device_memory_bytes", lambda device: 3.9 * need)
    _, extra = costs.measured_rows(PARENT, ARCH, tl.SPACE, scen, cfg, torch.device("cpu"), "float32", 8, log=lambda m: None)
    assert extra["timed_together"] is False
    monkeypatch.setattr(costs, "device_memory_bytes", lambda device: 4.1 * need)
    _, extra = costs.measured_rows(PARENT, ARCH, tl.SPACE, scen, cfg, torch.device("cpu"), "float32", 8, log=lambda m: None)
    assert extra["timed_together"] is True
