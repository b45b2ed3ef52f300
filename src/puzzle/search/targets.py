"""Search targets: a budget on throughput, memory or latency, absolute or a factor of the parent's.

    throughput   tok/s: 5000, '5000 tok/s'            memory  bytes: 80GiB, 512MiB, 40GB
    latency      ms: 250, '250ms', '0.25s'            any     a factor of the parent's: 2x, 0.5x

A kind of target bounds one resource, a per-option cost summed over layers: throughput and latency
bound time, memory bounds memory.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from puzzle.config import ConfigError
from puzzle.naming import KINDS as TARGET_KINDS

# The resource (a per-option cost summed over layers) that each kind of target bounds.
RESOURCE_OF = {"throughput": "time", "latency": "time", "memory": "memory"}
UNIT_OF = {"throughput": "tok/s", "memory": "bytes", "latency": "ms"}
# the whole-model total (Instance.totals) that each kind of target bounds
TOTAL_OF = {"throughput": "throughput_tok_s", "memory": "memory_bytes", "latency": "latency_ms"}

_SIZE = {
    "": 1,
    "b": 1,
    "kb": 1e3,
    "mb": 1e6,
    "gb": 1e9,
    "tb": 1e12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_NUMBER = r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
_UNIT_RE = {
    "memory": (re.compile(rf"^{_NUMBER}\s*([kmgt]i?b|b)?$", re.I), "bytes or a size like 80GiB / 512MiB / 40GB"),
    "throughput": (re.compile(rf"^{_NUMBER}\s*(tok/s|tokens/s)?$", re.I), "tokens/s like 5000 or '5000 tok/s'"),
    "latency": (re.compile(rf"^{_NUMBER}\s*(ms|s)?$", re.I), "milliseconds like 250, '250ms' or '0.25s'"),
}
_RELATIVE = re.compile(rf"^{_NUMBER}\s*[x\u00d7]$", re.I)


@dataclass(frozen=True)
class Target:
    """One requested budget: absolute (tok/s, bytes, ms) or a factor of the parent's value."""

    kind: str
    value: float
    relative: bool
    text: str

    def resolve(self, parent_totals: dict[str, float]) -> float:
        """Absolute value: throughput in tok/s, memory in bytes, latency in ms."""
        if not self.relative:
            return self.value
        return self.value * parent_totals[TOTAL_OF[self.kind]]

    @property
    def resource(self) -> str:
        return RESOURCE_OF[self.kind]


def parse_target(kind: str, value: Any) -> Target | None:
    """'2.0x' (relative to the parent), '80GiB' / bytes (memory), tok/s (throughput), ms (latency)."""
    if value is None:
        return None
    if kind not in TARGET_KINDS:
        raise ConfigError(f"unknown target kind {kind!r}: expected one of {list(TARGET_KINDS)}")
    pattern, expected = _UNIT_RE[kind]
    text = str(value).strip()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number, relative = float(value), False
    elif m := _RELATIVE.match(text):
        number, relative = float(m.group(1)), True
    elif m := pattern.match(text):
        unit = (m.group(2) or "").lower()
        scale = _SIZE[unit] if kind == "memory" else (1000.0 if unit == "s" else 1.0)
        number, relative = float(m.group(1)) * scale, False
    else:
        raise ConfigError(f"search.{kind} = {text!r}: expected {expected}, or a factor of the parent like 2x")
    if not number > 0 or not math.isfinite(number):
        raise ConfigError(f"search.{kind} = {text!r}: expected a positive value")
    return Target(kind, number, relative, text)


def tighter(kind: str, a: float, b: float) -> bool:
    """Whether target value a asks for more than b."""
    return a > b if kind == "throughput" else a < b


def fmt(kind: str, value: float) -> str:
    """Rounded so that the printed value is itself feasible (throughput down, budgets up)."""
    if kind == "throughput":
        return f"{math.floor(value * 1000) / 1000:.3f} tok/s"
    if kind == "memory":
        return f"{math.ceil(value):d} bytes ({value / 2**30:.3f} GiB)"
    return f"{math.ceil(value * 1000) / 1000:.3f} ms"
