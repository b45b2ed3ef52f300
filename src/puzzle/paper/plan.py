"""The paper target's plan: for every artifact of `paper.artifacts`, the children it compares, the
further files it reads and the `puzzle report` arguments that name them, and its output files.

Ablation children are ordinary solutions whose id carries an @-suffix (`puzzle.naming`):
`@lm_loss`, `@greedy`, `@random-s1` change the search, `@bld-<name>` searches another block library
(`bld_variants`), `...scratch` assembles random weights. Table 5 trains a smaller model from
scratch (`scratch_config`), Table 6 distills the main child on fractions of the GKD budget
(`gkd_budget`). rules/paper.smk makes one rule per artifact from `Plan.artifacts`, so changing one
ablation's setting reruns that ablation's jobs and table only.
Every path placed into an argument string is shell-quoted here. No pandas, no torch.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from puzzle.config import ConfigError, deep_merge
from puzzle.naming import SolutionId, solution_ids

Q = shlex.quote
COMPRESS_METHODS = ("wanda", "low_rank")  # Table 18: the parent compressed without the search
LIBRARY_TABLES = {"table8": "mode", "table9": "corpus", "table10": "tokens"}  # the bld key each varies


def narrow_corpus_error(cfg: dict[str, Any]) -> str | None:
    """Why Table 9's narrow library cannot be built from this config (None: it can). The workflow
    reports it only when the paper target asks for Table 9, so other targets run regardless."""
    corpus, data = cfg["paper"]["narrow_corpus"], cfg["data"]
    if data["source"] != "embedded":
        return (
            f"config error: paper.artifacts has table9: expected data.source = embedded, not {data['source']!r} "
            "(or drop table9)"
        )
    if corpus == data["corpus"]:
        return f"config error: paper.narrow_corpus = {corpus!r}: expected a corpus other than data.corpus"
    return None


def bld_variants(cfg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The paper's BLD ablations (Tables 8-10) that `cfg["paper"]["artifacts"]` asks for: variant name
    -> the whole config with that variant's `bld` / `scoring` settings. Each variant is its own block
    library, scores and child; the workflow names that child's solution `<budget>@bld-<name>`."""
    paper, bld = cfg["paper"], cfg["bld"]
    overrides: dict[str, dict[str, Any]] = {}
    if "table8" in paper["artifacts"]:  # the other BLD mode: coupled when the experiment is decoupled
        other = "coupled" if bld["mode"] == "decoupled" else "decoupled"
        overrides[other] = {"bld": {"mode": other}}
    if "table9" in paper["artifacts"] and narrow_corpus_error(cfg) is None:  # the paper's Gutenberg run
        corpus = paper["narrow_corpus"]
        overrides["narrow"] = {"bld": {"corpus": corpus}, "scoring": {"corpus": corpus}}
    if "table10" in paper["artifacts"]:
        for tokens in dict.fromkeys(paper["bld_tokens"]):
            if tokens != bld["tokens"]:
                overrides[f"tokens{tokens}"] = {"bld": {"tokens": tokens}}
    return {name: deep_merge(cfg, o) for name, o in overrides.items()}


def scratch_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Table 5: the whole config whose `parent.train` is the smaller homogeneous model trained from
    scratch (`paper.scratch` changes the parent's shape; steps, batch and data stay the parent's)."""
    return deep_merge(cfg, {"parent": {"train": cfg["paper"]["scratch"]}})


def scratch_error(cfg: dict[str, Any]) -> str | None:
    """Why Table 5's from-scratch model cannot be trained from this config (None: it can). Like Table 9,
    reported only when the paper target asks for Table 5."""
    if cfg["parent"]["path"]:
        return (
            f"config error: paper.artifacts has table5: the model trained from scratch uses the embedded parent's "
            f"training (parent.path = null), not parent.path = {cfg['parent']['path']!r} (or drop table5)"
        )
    t = scratch_config(cfg)["parent"]["train"]
    if t["hidden_size"] % t["num_heads"] or t["num_heads"] % t["num_kv_heads"]:
        return (
            f"config error: paper.scratch = {cfg['paper']['scratch']}: expected hidden_size {t['hidden_size']} "
            f"divisible by num_heads {t['num_heads']}, divisible by num_kv_heads {t['num_kv_heads']}"
        )
    return None


def gkd_budget(cfg: dict[str, Any], fraction: float) -> dict[str, int]:
    """Table 6: the `gkd` keys of a budget `fraction` of the experiment's GKD: the same key scaled
    (`gkd.tokens` when set, else `gkd.steps`), at least one step."""
    g = cfg["gkd"]
    if g["tokens"]:
        return {"tokens": max(1, round(fraction * g["tokens"]))}
    return {"steps": max(1, round(fraction * g["steps"]))}


def budget_name(cfg: dict[str, Any], fraction: float) -> str:
    """A Table 6 budget's folder name: its tokens (`tokens` or steps x batch_size x seq_len)."""
    g, b = cfg["gkd"], gkd_budget(cfg, fraction)
    return f"tokens{b['tokens'] if 'tokens' in b else b['steps'] * g['batch_size'] * g['seq_len']}"


@dataclass(frozen=True)
class Artifact:
    """One table or figure: the children (solution ids) it compares, the further files it reads,
    the further `puzzle report` arguments, and its outputs as (path, shown in the HTML report)."""

    children: list[str]
    inputs: list[Any]
    args: str
    files: list[tuple[str, bool]]


class Plan:
    """The paper target of one validated config whose results live in `results` (config.results_dir).

    `library_files(solution)` gives the files of the block library a solution is assembled from
    (the workflow knows the main library's file list); `eval_models` the eval JSONs of each child.
    """

    def __init__(self, cfg: dict[str, Any], results: str, library_files: Callable[[str], list[str]]) -> None:
        self.cfg, self.results, self.library_files = cfg, results, library_files
        self.paper = cfg["paper"]
        self.out = f"{results}/paper"
        self.bld_variants = bld_variants(cfg)
        self.bld_variant_dir = f"{self.out}/bld"
        main = solution_ids(cfg)[0]  # the experiment's own child: the paper's Puzzle child in every table
        self.main_id, self.main = main, str(main)
        self.main_solution = self.solution(self.main)
        self.main_costs = f"{results}/costs/{main.target}/costs.csv"
        self.parent_dir = cfg["parent"]["path"] or f"{results}/parent"
        self.sweep_dir = f"{self.out}/sweep"
        # Fig. 5 / 7: the children evaluated along the throughput sweep (named as the sweep names its points)
        along = solution_ids(
            deep_merge(cfg, {"search": {"sweep": self.paper["evaluate"], "sweep_resource": "throughput"}})
        )
        self.sweep_children = list(dict.fromkeys([self.main, *map(str, along)]))
        # Table 17: GKD loss variants of the main child; the one equal to gkd.loss is the experiment's own GKD
        self.loss_terms = list(cfg["gkd"]["loss"])
        self.gkd_losses = list(dict.fromkeys(self.paper["gkd_losses"]))
        self.loss_dir = {loss: self._loss_dir(loss) for loss in self.gkd_losses}
        self.loss_eval = f"{self.out}/gkd_loss/eval/{self.main}"
        self.compress_dir = f"{self.out}/compress"
        self.compress_eval = f"{self.compress_dir}/eval/{self.main}"
        # Table 5: a smaller homogeneous model trained from scratch, evaluated with the main child
        self.scratch_config = scratch_config(cfg)
        self.scratch_dir = f"{self.out}/scratch/model"
        self.scratch_eval = f"{self.out}/scratch/eval/{self.main}"
        # Table 6: the main child distilled on fractions of the GKD budget; the whole budget is the experiment's GKD
        self.gkd_budgets = {budget_name(cfg, f): f for f in sorted(set(self.paper["gkd_budgets"]), reverse=True)}
        self.budget_dir = {name: self._budget_dir(name, f) for name, f in self.gkd_budgets.items()}
        self.budget_eval = f"{self.out}/gkd_budget/eval/{self.main}"

    def solution(self, sid: str) -> str:
        return f"{self.results}/search/{sid}/solution.json"

    def _loss_dir(self, loss: str) -> str:
        if self.loss_config(loss) == self.cfg["gkd"]["loss"]:
            return f"{self.results}/gkd/{self.main}"
        return f"{self.out}/gkd_loss/{loss}/{self.main}"

    def _budget_dir(self, name: str, fraction: float) -> str:
        if gkd_budget(self.cfg, fraction) == gkd_budget(self.cfg, 1.0):
            return f"{self.results}/gkd/{self.main}"
        return f"{self.out}/gkd_budget/{name}/{self.main}"

    def budget_config(self, name: str) -> dict[str, Any]:
        """The whole config of a Table 6 budget (by folder name): the experiment's, its GKD budget scaled."""
        return deep_merge(self.cfg, {"gkd": gkd_budget(self.cfg, self.gkd_budgets[name])})

    def loss_config(self, loss: str) -> dict[str, bool]:
        """The `gkd.loss` section a loss variant's name ("cosine+kl") spells."""
        return {t: t in loss.split("+") for t in self.loss_terms}

    # ---- block libraries -------------------------------------------------------------------------

    def library_variant(self, solution: str) -> tuple[str | None, dict[str, Any]]:
        """(name, whole config) of the block library a solution or budget names; (None, config) for the
        experiment's."""
        name = SolutionId.parse(solution).library
        if name is None:
            return None, self.cfg
        if name not in self.bld_variants:
            raise ConfigError(
                f"config error: {solution}: no block library {name!r}; "
                f"the config's paper section makes {sorted(self.bld_variants)}"
            )
        return name, self.bld_variants[name]

    def library_dir(self, solution: str) -> str:
        name, _ = self.library_variant(solution)
        return f"{self.results}/library" if name is None else f"{self.bld_variant_dir}/{name}/library"

    def scores_of(self, solution: str, main_scores: str) -> str:
        name, _ = self.library_variant(solution)
        return main_scores if name is None else f"{self.bld_variant_dir}/{name}/scores/scores.csv"

    # ---- artifacts ---------------------------------------------------------------------------------

    def children_of(self, artifact: str) -> list[str]:
        """The children (solution ids) an artifact compares, the experiment's own first."""
        main, m = self.main, self.main_id
        if artifact in LIBRARY_TABLES:
            key = LIBRARY_TABLES[artifact]
            return [
                main,
                *(
                    str(m.but(library=name))
                    for name, c in self.bld_variants.items()
                    if c["bld"][key] != self.cfg["bld"][key]
                ),
            ]
        seeds = self.paper["random_seeds"]
        search = {"table11": "lm_loss", "table12": "noop_only", "table13": "greedy", "table14": "max_params"}
        if artifact in search:
            return [main, str(m.but(search=search[artifact]))]
        if artifact == "table15":  # random from the library; its architecture and the parent's with random weights
            return [
                main,
                *(str(m.but(search="random", seed=s)) for s in seeds),
                str(m.but(search="random", seed=seeds[0], scratch=True)),
                str(m.but(kind=None, value=None, scratch=True)),
            ]
        if artifact == "fig5":
            return self.sweep_children
        if artifact == "fig7":
            return [
                *self.sweep_children,
                *(str(SolutionId.parse(s).but(search="lm_loss")) for s in self.sweep_children),
            ]
        if artifact in ("fig6", "fig8"):
            return []
        return [main]  # tables 1, 2, 5, 6, 16, 17, 18

    def extra_of(self, artifact: str) -> tuple[list[Any], str]:
        """Further inputs and `puzzle report` arguments of an artifact beyond its children."""
        if artifact in LIBRARY_TABLES:
            children = self.children_of(artifact)
            return [self.library_files(s) for s in children], " ".join(
                f"--library {Q(self.library_dir(s))}" for s in children
            )
        if artifact == "table2":
            return [], " ".join(f"--paper-scenario {Q(f'{k}={v}')}" for k, v in self.paper["scenarios"].items())
        if artifact == "table17":
            inputs = [*(f"{self.loss_eval}/{loss}.json" for loss in self.gkd_losses), *self.loss_dir.values()]
            variants = (f"--variant {Q(f'{loss}={self.loss_dir[loss]}')}" for loss in self.gkd_losses)
            return inputs, " ".join([f"--loss-eval {Q(self.loss_eval)}", *variants])
        if artifact == "table5":
            models = ("parent", "child", "scratch")
            inputs = [*(f"{self.scratch_eval}/{m}.json" for m in models), self.scratch_dir]
            return inputs, f"--scratch-eval {Q(self.scratch_eval)} --scratch {Q(self.scratch_dir)}"
        if artifact == "table6":
            evals = [f"{self.budget_eval}/{n}.json" for n in ["parent", *self.budget_dir]]
            inputs = [*evals, *self.budget_dir.values(), self.parent_dir]  # the parent's report.json: its tokens
            budgets = (f"--budget {Q(f'{n}={d}')}" for n, d in self.budget_dir.items())
            args = [f"--budget-eval {Q(self.budget_eval)}", *budgets, f"--parent {Q(self.parent_dir)}"]
            return inputs, " ".join(args)
        if artifact == "table18":
            inputs = [
                *(f"{self.compress_eval}/{m}.json" for m in COMPRESS_METHODS),
                *(f"{self.compress_dir}/{m}" for m in COMPRESS_METHODS),
            ]
            return inputs, " ".join(
                f"--compressed {Q(f'{m}={self.compress_dir}/{m}')} {Q(f'{self.compress_eval}/{m}.json')}"
                for m in COMPRESS_METHODS
            )
        main = f"--costs {Q(self.main_costs)} --solution {Q(self.main_solution)}"
        if artifact == "fig5":
            return [self.sweep_dir], f"--sweep {Q(self.sweep_dir)}"
        if artifact == "fig6":
            return [self.main_costs, self.main_solution], main
        if artifact == "fig8":
            return [self.sweep_dir, self.main_costs, self.main_solution], f"--sweep {Q(self.sweep_dir)} {main}"
        return [], ""

    def files_of(self, artifact: str) -> list[tuple[str, bool]]:
        """(path, shown in the report) of an artifact's outputs: a figure's PNG, a table's CSV (+ Markdown)."""
        if artifact.startswith("fig"):
            return [(f"{self.out}/{artifact}.png", True)]
        return [(f"{self.out}/{artifact}.csv", True), (f"{self.out}/{artifact}.md", False)]

    def artifacts(self) -> dict[str, Artifact]:
        """Every artifact of `paper.artifacts`, in the config's order."""
        out = {}
        for name in self.paper["artifacts"]:
            children = self.children_of(name)
            inputs, extra = self.extra_of(name)
            child_args = [f"--child {Q(self.solution(s))} {Q(f'{self.results}/eval/{s}')}" for s in children]
            out[name] = Artifact(
                children, inputs, " ".join([*child_args, *([extra] if extra else [])]), self.files_of(name)
            )
        return out

    def files(self) -> list[str]:
        """Every artifact's output files (what `snakemake paper` asks for)."""
        return [path for a in self.artifacts().values() for path, _ in a.files]
