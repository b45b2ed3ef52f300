"""One timing harness for predicted and measured speed: the costs stage times its stacks with it,
the evaluate stage its whole models, so that both see the machine the same way.

A shared machine's speed wanders by tens of percent over seconds to minutes. So models are never
timed one after the other: after warm-up, each round times every model once, in a shuffled
(seeded) order (`time_calls`), each round's common slowdown is divided out (`normalize_rounds`),
and the statistic over rounds is kept per model (`summarize`). A bootstrap over whole rounds
(`resampled`) gives any quantity derived from the per-model statistics an interval (`interval`).
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from puzzle import config as config_mod

if TYPE_CHECKING:  # torch is imported where a model is timed
    import torch
    from transformers.modeling_outputs import CausalLMOutputWithPast

STATISTICS = {"median": np.median, "min": np.min}


class Timer:
    """Times one call, synchronizing a GPU around it; `warmup` untimed runs and `repeats` rounds per
    measurement, `statistic` (median or min) over the rounds."""

    def __init__(
        self, device: torch.device, warmup: int, repeats: int, statistic: str = "median", clock: str = "wall"
    ) -> None:
        self.device, self.warmup, self.repeats = device, warmup, repeats
        if statistic not in STATISTICS:
            raise config_mod.ConfigError(
                f"config error: statistic = {statistic!r}: expected one of {sorted(STATISTICS)}"
            )
        self.statistic = statistic  # what `summarize` keeps over the rounds
        if clock not in ("wall", "cpu"):
            raise config_mod.ConfigError(f"config error: clock = {clock!r}: expected wall or cpu")
        # a GPU's work is not the process's CPU time: it is timed by the wall clock whatever is asked
        self.clock = time.process_time if clock == "cpu" and device.type != "cuda" else time.perf_counter

    def sync(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def once(self, fn: Callable[[], Any], after: Callable[[], Any] | None = None) -> float:
        self.sync()
        t = self.clock()
        fn()
        self.sync()
        dt = self.clock() - t
        if after is not None:
            after()
        return dt


@contextmanager
def threads(n: int | None) -> Iterator[None]:
    """torch's CPU threads set to `n` (None: left as they are) while timing, restored after."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def round_robin_orders(n_models: int, rounds: int, seed: int = 0) -> list[list[int]]:
    """The order in which each round visits the models: every round a permutation of all of them
    (shuffled, seeded, so no model is always timed right after the same neighbour)."""
    rng = random.Random(seed)
    orders = []
    for _ in range(rounds):
        order = list(range(n_models))
        rng.shuffle(order)
        orders.append(order)
    return orders


def time_calls(
    calls: list[Callable[[], Any]],
    timer: Timer,
    rounds: int | None = None,
    seed: int = 0,
    after: list[Callable[[], Any] | None] | None = None,
    warmup: bool = True,
) -> list[list[float]]:
    """Raw seconds of each call in each round (times[call][round]): warm-up runs of every call
    (through the timer, so `after` runs too), then `rounds` (default timer.repeats) rounds that each
    time every call once in a shuffled order."""
    after = after or [None] * len(calls)
    if warmup:
        for fn, aft in zip(calls, after):
            for _ in range(timer.warmup):
                timer.once(fn, aft)
    times: list[list[float]] = [[] for _ in calls]
    for order in round_robin_orders(len(calls), timer.repeats if rounds is None else rounds, seed):
        for k in order:
            times[k].append(timer.once(calls[k], after[k]))
    return times


def _middle_mean(values: list[float]) -> float:
    """Mean of the middle half of the values (a quarter dropped at each end; the median when that
    leaves at most two): robust to one model's outlier like a median, but not equal to one model's
    own value, which would pin that model at its median in every such round and make a bootstrap
    over rounds see no spread."""
    v = sorted(values)
    cut = -(-len(v) // 4)
    middle = v[cut : len(v) - cut]
    return sum(middle) / len(middle) if len(middle) > 2 else statistics.median(v)


def normalize_rounds(times: list[list[float]]) -> list[list[float]]:
    """Times of several models over the same rounds (times[model][round]) with each round's common
    slowdown divided out: round r's factor is the mean of the middle half of the models' time / that
    model's median time, so a round in which the machine ran 30% slow (another job, a frequency
    change) has a factor of about 1.3 and its times count as if it had not. One model alone is
    returned as it is (nothing to compare it with)."""
    if len(times) < 2 or not times[0]:
        return [list(t) for t in times]
    med = [statistics.median(t) for t in times]
    factors = [
        _middle_mean([t[r] / m for t, m in zip(times, med) if m > 0]) if any(m > 0 for m in med) else 1.0
        for r in range(len(times[0]))
    ]
    return [[x / f if f > 0 else x for x, f in zip(t, factors)] for t in times]


def summarize(times: list[list[float]], statistic: str = "median") -> list[float]:
    """The statistic over the normalized rounds of each model."""
    return [float(STATISTICS[statistic](t)) for t in normalize_rounds(times)]


@dataclass
class Workload:
    """Prefill and decode calls of one model for one (batch, input_len, output_len)."""

    model: torch.nn.Module
    batch: int
    input_len: int
    output_len: int
    device: torch.device

    def __post_init__(self) -> None:
        import torch

        from puzzle import cost_model as cm

        vocab = self.model.config.vocab_size
        g = torch.Generator().manual_seed(0)
        self.kv_len = cm.decode_kv_len(self.input_len, self.output_len)
        self.prompt = torch.randint(0, vocab, (self.batch, self.input_len), generator=g).to(self.device)
        self.context = torch.randint(0, vocab, (self.batch, self.kv_len), generator=g).to(self.device)
        self.step = torch.randint(0, vocab, (self.batch, 1), generator=g).to(self.device)
        self.cache = None

    def prefill(self) -> CausalLMOutputWithPast:
        import torch
        from transformers.cache_utils import DynamicCache

        with torch.no_grad():
            return self.model(input_ids=self.prompt, cache=DynamicCache(), use_cache=True, logits_to_keep=1)

    def prepare_decode(self) -> None:
        import torch
        from transformers.cache_utils import DynamicCache

        self.cache = DynamicCache()
        with torch.no_grad():
            self.model(input_ids=self.context, cache=self.cache, use_cache=True, logits_to_keep=1)

    def decode(self) -> CausalLMOutputWithPast:
        import torch

        with torch.no_grad():
            return self.model(input_ids=self.step, cache=self.cache, use_cache=True, logits_to_keep=1)

    def rewind(self) -> None:
        """Drop the token the last decode step appended: every step sees kv_len cached tokens."""
        if self.cache is not None and self.cache.get_seq_length() > self.kv_len:
            self.cache.crop(-1)


def time_models(
    models: list[torch.nn.Module],
    batch: int,
    input_len: int,
    output_len: int,
    timer: Timer,
    seed: int = 0,
    rounds: int | None = None,
    warmup: bool = True,
) -> tuple[list[list[float]], list[list[float]]]:
    """Raw (prefill, decode) seconds of each model in each round, prefill rounds first, then decode
    rounds at a KV cache of input_len + output_len // 2 tokens (time_calls for each phase)."""
    loads = [Workload(m, batch, input_len, output_len, timer.device) for m in models]
    pre = time_calls([w.prefill for w in loads], timer, rounds, seed, warmup=warmup)
    for w in loads:
        w.prepare_decode()
    dec = time_calls(
        [w.decode for w in loads], timer, rounds, seed + 1, after=[w.rewind for w in loads], warmup=warmup
    )
    for w in loads:
        w.cache = None
    return pre, dec


def resampled(times: list[list[float]], statistic: str = "median", resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """Per-model statistics (models, resamples) over bootstrap resamples of whole rounds: every
    resample draws rounds with replacement from the normalized times, the same rounds for every
    model (they were timed together, so a round's leftover drift stays paired)."""
    arr = np.asarray(normalize_rounds(times), dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, arr.shape[1], size=(resamples, arr.shape[1]))
    return STATISTICS[statistic](arr[:, idx], axis=-1)


def interval(values: np.ndarray, level: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi): the central `level` of resampled values (last axis)."""
    tail = 100 * (1 - level) / 2
    return np.percentile(values, tail, axis=-1), np.percentile(values, 100 - tail, axis=-1)
