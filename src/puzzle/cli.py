"""`python -m puzzle <stage> ...`: one thin subcommand per pipeline stage.

Each stage module exposes `add_arguments(parser)` and `main(args)`; modules are imported only
when their stage runs, so `puzzle search` on a login node never imports torch.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

# stage name -> (module, one-line help)
STAGES: dict[str, tuple[str, str]] = {
    "validate": ("puzzle.config", "validate a config file against the schema"),
    "data": ("puzzle.data", "corpus -> tokenizer + train/valid/test token shards"),
    "parent": ("puzzle.parent", "train the embedded default parent (tiny Llama) on CPU"),
    "convert": ("puzzle.convert", "Llama-family checkpoint -> Nemotron-NAS checkpoint"),
    "activations": ("puzzle.activations", "dump the parent's per-layer activations for BLD"),
    "bld": ("puzzle.bld", "blockwise local distillation of one layer's variants"),
    "bld-plan": ("puzzle.bld_plan", "which BLD teacher path a config takes and why, groups, FLOPs, GPU-hours"),
    "plan": ("puzzle.plan", "per stage: jobs, GPUs, GPU/host memory, disk, FLOPs and hours; stops an infeasible plan"),
    "score": ("puzzle.scoring", "replace-1-block scores (KL, LM loss, accuracy)"),
    "costs": ("puzzle.costs", "measured per-variant prefill/decode time and memory"),
    "search": ("puzzle.search.cli", "MIP search: choose one attention + FFN variant per layer"),
    "assemble": ("puzzle.assemble", "solution.json + library -> child checkpoint"),
    "gkd": ("puzzle.gkd", "global knowledge distillation of a child from the parent"),
    "evaluate": ("puzzle.evaluate", "quality and throughput of parent and children"),
    "compress": ("puzzle.compress", "Table 18 baselines: Wanda 2:4 pruning or low-rank SVD of the parent"),
    "report": ("puzzle.paper.report", "paper tables and figures (CSV + Markdown, PNG)"),
}


def _available() -> dict[str, tuple[str, str]]:
    return {k: v for k, v in STAGES.items() if importlib.util.find_spec(v[0]) is not None}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="puzzle", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="stage", metavar="<stage>", required=True)
    stages = _available()
    # Build only the chosen stage's parser fully: importing every stage would import torch.
    chosen = argv[0] if argv and argv[0] in stages else None
    for name, (module, help_) in stages.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if name == chosen:
            importlib.import_module(module).add_arguments(p)
    args = parser.parse_args(argv)
    from puzzle.config import ConfigError
    from puzzle.io import ArtifactError

    try:
        importlib.import_module(stages[args.stage][0]).main(args)
    except (ConfigError, ArtifactError) as err:
        print(f"puzzle {args.stage}: {err}", file=sys.stderr)
        return 2
    return 0
