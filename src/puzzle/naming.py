"""Solution ids: how the workflow names a searched child, `target/scenario/budget`.

    budget = unconstrained | <kind>_<value>            kind: throughput, memory or latency
             [@bld-<library> | @<search>[-s<seed>]]     another block library, or a search method or metric
             [-scratch]                                 random weights (`@scratch` alone after a bare budget)

e.g. `local/gen_32_128/throughput_2.17x`, `.../throughput_2.17x@random-s1-scratch`,
`.../unconstrained@scratch`. A suffix names one of the paper's ablations: Tables 8-10 search another
block library, Tables 11-15 and Fig. 7 another method or metric (with its seed), Table 15 assembles
random weights. Whether `search` names a known method or metric is the search's to check.

Every writer and reader of these names goes through `SolutionId` (the Snakefile, the search's
`--budget` and sweep folders, the paper tables). No torch, no pandas: the Snakefile plans with it.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from puzzle.config import ConfigError

KINDS = ("throughput", "memory", "latency")
UNCONSTRAINED = "unconstrained"
_VALUE = re.compile(r"[0-9A-Za-z.+\-\u00d7]+")  # 2.17x, 1500, 80GiB, 250ms, 1e3, 1.5×
_LIBRARY = re.compile(r"[a-z0-9]+")
_SEARCH = re.compile(r"[a-z_]+")
_PART = re.compile(r"[^/@]+")  # a target or scenario name: one folder
_SUFFIX = re.compile(r"(?:bld-(?P<library>[a-z0-9]+)|(?P<search>[a-z_]+?)(?:-s(?P<seed>\d+))?)")
_SUFFIX_FORM = "@<method or metric>[-s<seed>][-scratch], @bld-<library>[-scratch] or @scratch"


def budget_value(value: Any) -> str:
    """A configured budget as its folder names it: spaces and the tok/s unit dropped, the only
    unit with a slash ("1500 tok/s" -> "1500", "2.17x" -> "2.17x", "80 GiB" -> "80GiB")."""
    text = re.sub(r"(tok|tokens)/s$", "", str(value).replace(" ", ""), flags=re.I)
    if not _VALUE.fullmatch(text):
        raise ConfigError(
            f"config error: budget {value!r}: expected a number with an optional unit or x (e.g. 2x, 1500, 80GiB)"
        )
    return text


@dataclass(frozen=True)
class SolutionId:
    """One searched child. `kind`/`value` = its budget (None/None: unconstrained); `target` and
    `scenario` are None for a bare budget (a folder name under search/<target>/<scenario>/)."""

    target: str | None
    scenario: str | None
    kind: str | None
    value: str | None = None
    search: str | None = None  # a search method (greedy, random, ...) or metric (lm_loss)
    seed: int | None = None
    library: str | None = None  # bld-<library>: another block library (Tables 8-10)
    scratch: bool = False  # random weights (Table 15)

    def __post_init__(self) -> None:
        problems = []
        if (self.target is None) != (self.scenario is None):
            problems.append("target and scenario are both set or both None")
        for name in ("target", "scenario"):
            part = getattr(self, name)
            if part is not None and not _PART.fullmatch(part):
                problems.append(f"{name} {part!r} is one folder name without '@'")
        if self.kind is None and self.value is not None or self.kind is not None and self.kind not in KINDS:
            problems.append(f"kind {self.kind!r} is one of {list(KINDS)} (or None, unconstrained, without a value)")
        if self.kind is not None and not (self.value and _VALUE.fullmatch(self.value)):
            problems.append(f"value {self.value!r} is a number with an optional unit or x")
        if self.library is not None and (self.search is not None or not _LIBRARY.fullmatch(self.library)):
            problems.append(f"library {self.library!r} is [a-z0-9]+ and comes without a search method")
        if self.search is not None and (not _SEARCH.fullmatch(self.search) or self.search in ("bld", "scratch")):
            problems.append(f"search {self.search!r} is [a-z_]+ (not bld or scratch)")
        if self.seed is not None and (self.search is None or self.seed < 0):
            problems.append(f"seed {self.seed!r} is >= 0 and comes with a search method")
        if problems:
            raise ConfigError(f"config error: solution id: expected {'; '.join(problems)}")

    @classmethod
    def parse(cls, text: str) -> SolutionId:
        """`target/scenario/budget`, or a bare budget."""
        parts = text.split("/")
        if len(parts) not in (1, 3):
            raise ConfigError(f"config error: solution {text!r}: expected target/scenario/budget or a budget")
        target, scenario = (parts[0], parts[1]) if len(parts) == 3 else (None, None)
        budget, at, suffix = parts[-1].partition("@")
        if budget == UNCONSTRAINED:
            kind, value = None, None
        else:
            kind, _, value = budget.partition("_")
            if kind not in KINDS or not _VALUE.fullmatch(value):
                raise ConfigError(
                    f"config error: budget {budget!r}: expected <kind>_<value> with kind one of {list(KINDS)}, "
                    f"or {UNCONSTRAINED}"
                )
        fields: dict[str, Any] = {}
        if at:
            rest, scratch = re.subn(r"(^|-)scratch$", "", suffix)
            m = _SUFFIX.fullmatch(rest) if rest else None
            if (rest or not scratch) and m is None:
                raise ConfigError(f"config error: budget suffix @{suffix}: expected {_SUFFIX_FORM}")
            if m is not None:
                seed = m.group("seed")
                fields = {
                    "library": m.group("library"),
                    "search": m.group("search"),
                    "seed": None if seed is None else int(seed),
                }
            fields["scratch"] = bool(scratch)
        out = cls(target, scenario, kind, value, **fields)
        if str(out) != text:  # e.g. a seed written -s03: accepted names are the ones we write
            raise ConfigError(f"config error: solution {text!r}: expected it written as {str(out)!r}")
        return out

    @property
    def budget(self) -> str:
        """The last folder of the id: `<kind>_<value>` or unconstrained, with its @-suffix."""
        suffix = f"bld-{self.library}" if self.library else (self.search or "")
        if self.seed is not None:
            suffix += f"-s{self.seed}"
        if self.scratch:
            suffix = f"{suffix}-scratch" if suffix else "scratch"
        head = UNCONSTRAINED if self.kind is None else f"{self.kind}_{self.value}"
        return f"{head}@{suffix}" if suffix else head

    def __str__(self) -> str:
        return self.budget if self.target is None else f"{self.target}/{self.scenario}/{self.budget}"

    def but(self, **changes: Any) -> SolutionId:
        """A copy with some fields changed (an ablation of this child: `.but(search="greedy")`)."""
        return dataclasses.replace(self, **changes)


def solution_ids(cfg: dict[str, Any]) -> list[SolutionId]:
    """The solutions the workflow plans: one per sweep point, or the single configured target
    (`unconstrained` when none is set), at `search.target` and its scenario."""
    s = cfg["search"]
    # checked here, not in validate(): stages get partial configs in which costs.targets is incomplete
    if s["target"] not in cfg["costs"]["targets"]:
        raise ConfigError(
            f"config error: search.target = {s['target']!r}: "
            f"expected one of costs.targets {sorted(cfg['costs']['targets'])}"
        )
    scenario = s["scenario"] or cfg["costs"]["scenarios"][0]["name"]
    if s["sweep"]:
        budgets = [(s["sweep_resource"], v) for v in s["sweep"]]
    else:
        budgets = [(k, s[k]) for k in KINDS if s[k] is not None][:1] or [(None, None)]
    return [SolutionId(s["target"], scenario, k, None if v is None else budget_value(v)) for k, v in budgets]
