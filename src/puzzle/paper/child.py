"""One searched child as the paper's tables and figures read it: its solution.json and the eval JSONs
of the parent, the child before GKD and after (`puzzle evaluate`). No pandas, no torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from puzzle.config import ConfigError
from puzzle.io import read_json
from puzzle.naming import SolutionId


@dataclass
class Child:
    """One searched child: its solution.json and the eval JSONs of parent, child (pre-GKD) and gkd."""

    solution: dict[str, Any]
    evals: dict[str, dict[str, Any]]
    budget: str = ""  # the solution's folder name (rules/search.smk), e.g. throughput_2x@random-s0-scratch

    @property
    def id(self) -> SolutionId | None:
        """The solution id its folder name spells (rules/search.smk); None for a folder the workflow
        did not name (a solution.json searched by hand has no ablation suffix)."""
        try:
            return SolutionId.parse(self.budget)
        except ConfigError:
            return None

    @property
    def random_weights(self) -> bool:
        """Assembled with random weights (Table 15: `...scratch` budgets)."""
        return self.id is not None and self.id.scratch

    @property
    def key(self) -> str:
        """The PAPER row this child stands for: its method, or its metric when the MIP scored with another."""
        s = self.solution
        if self.random_weights:  # the unconstrained search's child is the parent's architecture
            return "parent_randomized" if self.id.kind is None else "fully_random"
        return s["metric"] if s["method"] == "mip" and s["metric"] != "kl" else s["method"]

    @property
    def label(self) -> str:
        s = self.solution
        seed = f" seed {s['solver']['seed']}" if "seed" in s["solver"] else ""
        if self.random_weights:
            return f"{self.key.replace('_', ' ')}: {s['method']}{seed} architecture, random weights"
        return f"{s['method']}{seed} ({s['metric']})"

    @property
    def scenario_key(self) -> str:
        """The key of the solution's own scenario in the eval JSONs (evaluate.scenario_key)."""
        s = self.solution["scenario"]
        return f"{s['name']}_b{s['batch']}"

    def predicted_speedup(self) -> float:
        s = self.solution
        return s["costs"]["throughput_tok_s"] / s["parent"]["costs"]["throughput_tok_s"]

    def measured_speedup(self, model: str = "gkd") -> float:
        return self.evals[model]["throughput_ratio"][self.scenario_key]


def load_child(solution: str | Path, eval_dir: str | Path) -> Child:
    evals = {m: read_json(Path(eval_dir) / f"{m}.json") for m in ("parent", "child", "gkd")}
    return Child(read_json(solution), evals, Path(solution).parent.name)
