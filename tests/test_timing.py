"""The one timing harness: rounds in a shuffled order, round normalization, bootstrap intervals that
cover what synthetic timings with a known noise hide, and the same harness under evaluate."""

import time

import numpy as np
import pytest
import torch

from puzzle import blocks, costs, evaluate, timing
from puzzle import cost_model as cm

PARENT = {"model_type": "llama", "hidden_size": 32, "num_attention_heads": 4, "num_key_value_heads": 2,
          "intermediate_size": 64, "num_hidden_layers": 3, "vocab_size": 96, "tie_word_embeddings": True}
ARCH = cm.Arch.from_config(PARENT)


def test_cpu_clock_times_a_cpu_by_its_process_time_and_a_gpu_by_the_wall_clock():
    from types import SimpleNamespace

    assert timing.Timer(torch.device("cpu"), 0, 1, clock="cpu").clock is time.process_time
    assert timing.Timer(SimpleNamespace(type="cuda"), 0, 1, clock="cpu").clock is time.perf_counter
    assert timing.Timer(torch.device("cpu"), 0, 1, clock="wall").clock is time.perf_counter
    with pytest.raises(ValueError, match="clock = 'gpu'"):
        timing.Timer(torch.device("cpu"), 0, 1, clock="gpu")


def test_threads_are_set_while_timing_and_restored_after_an_error():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError), timing.threads(1):
        assert torch.get_num_threads() == 1
        raise RuntimeError("a timing failed")
    assert torch.get_num_threads() == before
    with timing.threads(None):
        assert torch.get_num_threads() == before


def test_round_robin_visits_every_model_once_per_round():
    orders = timing.round_robin_orders(5, 7, seed=3)
    assert len(orders) == 7 and all(sorted(o) == list(range(5)) for o in orders)
    assert orders == timing.round_robin_orders(5, 7, seed=3)  # seeded: the same schedule every run
    assert len({tuple(o) for o in orders}) > 1  # shuffled: no model always follows the same one


def test_normalize_rounds_divides_out_a_common_slowdown():
    base, slow = [1.0, 2.0, 5.0], [1.0, 1.3, 0.9, 1.0, 2.0]
    times = [[b * f for f in slow] for b in base]
    out = timing.normalize_rounds(times)
    for b, t in zip(base, out):
        assert t == pytest.approx([b] * len(slow))  # median slowdown of these rounds is 1.0
    # a model alone, or no rounds: nothing to compare with, returned as is
    assert timing.normalize_rounds([[1.0, 3.0, 2.0]]) == [[1.0, 3.0, 2.0]]
    assert timing.normalize_rounds([[], []]) == [[], []]
    # one model's own outlier is not a round's slowdown: the others keep their times
    out = timing.normalize_rounds([[1.0, 1.0, 1.0], [2.0, 2.0, 2.0], [1.0, 9.0, 1.0]])
    assert out[0] == [1.0, 1.0, 1.0] and out[2][1] == 9.0
    assert timing.summarize([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]], "min") == [2.0, 4.0]  # min of normalized rounds


def _rounds(rng, true, rounds, noise, drift=0.0):
    """times[model][round]: true time x (1 + independent noise) x a common per-round slowdown."""
    slow = 1 + drift * rng.random(rounds)
    return [list(t * slow * (1 + noise * rng.standard_normal(rounds))) for t in true]


def test_bootstrap_interval_covers_a_known_difference_about_as_often_as_its_level():
    # 200 seeded trials of 30 rounds, 5% noise on 1.0 and 1.1: the 90% interval of the difference of
    # medians holds the true 0.1 in 80-97% of them (the binomial spread of 200 trials around 90%)
    hits = 0
    for trial in range(200):
        rng = np.random.default_rng(trial)
        times = _rounds(rng, [1.0, 1.1], 30, 0.05)
        s = timing.resampled(times, "median", 400, seed=trial)
        lo, hi = timing.interval(s[1] - s[0], 0.9)
        hits += lo <= 0.1 <= hi
    assert 0.80 * 200 <= hits <= 0.97 * 200


def test_interval_narrows_with_rounds_and_ignores_a_common_drift():
    def width(rounds, drift, normalized=True):
        """Width of the 90% interval of T2 - T0 relative to the difference, mean of 5 seeded trials."""
        out = []
        for seed in range(5):
            times = _rounds(np.random.default_rng(seed), [1.0, 1.2, 1.5, 1.7, 2.0, 2.4], rounds, 0.05, drift)
            if normalized:
                s = timing.resampled(times, "median", 1000, seed=1)
                t0, t2 = s[0], s[2]
            else:  # one model at a time is not normalized; the same seed draws the same rounds
                t0, t2 = (timing.resampled([times[k]], "median", 1000, seed=1)[0] for k in (0, 2))
            lo, hi = timing.interval(t2 - t0, 0.9)
            out.append((hi - lo) / np.median(t2 - t0))
        return float(np.mean(out))

    # 4x the rounds: about half the width (1 / sqrt(4))
    assert 0.35 < width(120, 0.0) / width(30, 0.0) < 0.65
    # rounds up to 2x slower (another job): the round's slowdown is divided out, the relative width
    # stays; without the normalization it is about three times wider
    assert width(30, 1.0) < 1.3 * width(30, 0.0)
    assert width(30, 1.0, normalized=False) > 2 * width(30, 1.0)


class _CountingTimer(timing.Timer):
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
    pre_t, dec_t = timing.time_models(models, 2, 6, 4, timer)
    assert [len(t) for t in pre_t + dec_t] == [4] * 6 and min(map(min, pre_t + dec_t)) > 0
    ids = [id(m) for m in models]
    pre = [c[1] for c in timer.calls if c[0] == "prefill"]
    dec = [c[1] for c in timer.calls if c[0] == "decode"]
    assert len(pre) == len(dec) == (1 + 4) * 3  # warm-up goes through the timer too
    for r in range(5):  # the warm-up, then each round a permutation of the models
        assert sorted(pre[3 * r:3 * r + 3]) == sorted(ids) and sorted(dec[3 * r:3 * r + 3]) == sorted(ids)
    # more rounds later (remeasuring) without another warm-up
    timer.calls.clear()
    timing.time_models(models, 2, 6, 4, timer, seed=5, rounds=2, warmup=False)
    assert len(timer.calls) == 2 * 2 * 3


def test_stacks_hold_n_copies_and_the_decode_cache_keeps_its_length():
    cfg = costs.stack_config(PARENT, blocks.block_config("attn_kv1", "ffn_noop", ARCH.shape, 8), 3)
    model = costs.build_model(cfg, torch.device("cpu"), torch.float32)
    assert len(model.model.layers) == 3 and all(layer.mlp is None for layer in model.model.layers)
    assert model.config.num_key_value_heads_of(2) == 1
    w = timing.Workload(model, 2, 6, 4, torch.device("cpu"))
    w.prepare_decode()
    assert w.cache.get_seq_length() == 8  # input + output // 2
    w.decode()
    w.rewind()
    assert w.cache.get_seq_length() == 8


def test_evaluate_throughput_is_timed_by_the_same_rounds(monkeypatch):
    seen = {}
    real = timing.time_calls

    def spy(calls, timer, rounds=None, seed=0, after=None, warmup=True):
        seen["n"], seen["repeats"], seen["warmup"] = len(calls), timer.repeats, timer.warmup
        seen["threads"], seen["clock"] = torch.get_num_threads(), timer.clock
        return real(calls, timer, rounds, seed, after, warmup)

    monkeypatch.setattr(timing, "time_calls", spy)
    parent = costs.build_model(
        costs.stack_config(PARENT, blocks.block_config("attn_kv2", "ffn_100", ARCH.shape, 8), 2),
        torch.device("cpu"),
        torch.float32,
    )
    child = costs.build_model(
        costs.stack_config(PARENT, blocks.block_config("attn_noop", "ffn_50", ARCH.shape, 8), 2),
        torch.device("cpu"),
        torch.float32,
    )
    tokens = np.arange(200) % 96
    out = evaluate.throughput(
        {"parent": parent, "child": child, "same": parent},
        [{"name": "s", "batch": 2, "input_len": 4, "output_len": 3}],
        tokens,
        repeats=3,
        warmup=1,
    )
    before = torch.get_num_threads()
    assert seen.pop("threads") == before and seen.pop("clock") is time.perf_counter
    assert seen == {"n": 2, "repeats": 3, "warmup": 1}  # equal architectures share one measurement
    assert out["same"]["s_b2"]["measured_as"] == "parent" and len(out["child"]["s_b2"]["seconds"]) == 3
    assert out["child"]["s_b2"]["tokens_per_s"] > 0 and "speedup_interval" not in out["child"]["s_b2"]
    ref = evaluate.throughput(
        {"parent": parent, "child": child, "same": parent},
        [{"name": "s", "batch": 2, "input_len": 4, "output_len": 3}],
        tokens,
        repeats=3,
        warmup=1,
        reference="parent",
        clock="cpu",
        threads=1 if before != 1 else 2,
    )
    # timed on the threads and clock asked for, and the caller's threads are back afterwards
    assert seen["threads"] == (1 if before != 1 else 2) and seen["clock"] is time.process_time
    assert torch.get_num_threads() == before
    lo, hi = ref["child"]["s_b2"]["speedup_interval"]
    ratio = ref["child"]["s_b2"]["tokens_per_s"] / ref["parent"]["s_b2"]["tokens_per_s"]
    assert 0 < lo <= hi and ratio > 0 and ref["same"]["s_b2"]["speedup_interval"] == [1.0, 1.0]


def test_measured_speedup_interval_is_paired_over_rounds_and_too_wide_one_is_named(capsys):
    # rounds where the whole machine slows down: the common slowdown cancels in the paired ratio
    raw = {"parent": [2.0, 4.0, 2.0, 6.0], "child": [1.0, 2.0, 1.0, 3.0]}
    boot = dict(zip(raw, timing.resampled(list(raw.values()), "median", resamples=200, seed=0)))
    lo, hi = timing.interval(boot["parent"] / boot["child"], 0.9)
    assert lo == pytest.approx(2.0) and hi == pytest.approx(2.0)
    speed = {"s_b2": {"tokens_per_s": 25.0, "speedup_interval": [2.0, 3.0]}}
    parent = {"s_b2": {"tokens_per_s": 10.0}}
    evaluate.warn_unmeasurable("child", speed, parent, 0.5)  # 1.0 wide at 2.5x: within half of it
    assert capsys.readouterr().err == ""
    evaluate.warn_unmeasurable("child", speed, parent, 0.1)
    assert capsys.readouterr().err == (
        "evaluate: warning: child s_b2: measured speed-up 2.50x in [2.00, 3.00], wider than evaluate.max_spread = "
        "0.1 of it: this machine was too busy to measure it (rerun on a quieter one, or raise evaluate.repeats)\n"
    )


def test_two_llamas_of_different_shapes_are_timed_apart():
    from transformers import LlamaConfig, LlamaForCausalLM

    def llama(layers):
        shape = {"hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2, "num_key_value_heads": 1}
        return LlamaForCausalLM(LlamaConfig(vocab_size=96, num_hidden_layers=layers, **shape))

    assert evaluate.architecture(llama(2)) != evaluate.architecture(llama(1))
    assert evaluate.architecture(llama(2)) == evaluate.architecture(llama(2))
