# Analogues of the paper's tables and figures: `snakemake paper`, then `snakemake paper --report report.html`.
# Ablation children are ordinary solutions whose budget carries an @-suffix (rules/search.smk:
# `throughput_2.17x@greedy`), so rules/child.smk assembles, distills and evaluates them unchanged.
# Each artifact is one rule whose inputs and arguments hold exactly what it reads, so changing one
# ablation's setting (config `paper`) reruns that ablation's jobs and its table only.
import shlex

Q = shlex.quote  # every path placed into a shell argument string below

PAPER = config["paper"]
PAPER_OUT = f"{R}/paper"
MAIN = SOLUTIONS[0]  # the experiment's own child: the paper's Puzzle child in every table
MAIN_TARGET, MAIN_SCENARIO, _ = MAIN.split("/")
MAIN_SOLUTION = f"{R}/search/{MAIN}/solution.json"
MAIN_COSTS = f"{R}/costs/{MAIN_TARGET}/costs.csv"
# Fig. 5 / 7: the children evaluated along the throughput sweep (named as search.sweep names its points)
SWEEP_CHILDREN = list(
    dict.fromkeys([MAIN, *map(str, solution_ids(pzc.deep_merge(config, {"search": {"sweep": PAPER["evaluate"], "sweep_resource": "throughput"}})))])
)
SWEEP_DIR = f"{PAPER_OUT}/sweep"

# Table 17: GKD loss variants of the main child; the one equal to gkd.loss is the experiment's own GKD.
LOSS_TERMS = list(config["gkd"]["loss"])
GKD_LOSSES = list(dict.fromkeys(PAPER["gkd_losses"]))

LOSS_DIR = {
    loss: f"{R}/gkd/{MAIN}"
    if {t: t in loss.split("+") for t in LOSS_TERMS} == config["gkd"]["loss"]
    else f"{PAPER_OUT}/gkd_loss/{loss}/{MAIN}"
    for loss in GKD_LOSSES
}

LOSS_EVAL = f"{PAPER_OUT}/gkd_loss/eval/{MAIN}"

# Table 18: the parent compressed without the search (no training), evaluated beside it in one job
COMPRESS_METHODS = ["wanda", "low_rank"]
COMPRESS_DIR = f"{PAPER_OUT}/compress"
COMPRESS_EVAL = f"{COMPRESS_DIR}/eval/{MAIN}"

# Tables 8-10: the main child from each other block library (rules/search.smk: @bld-<name>)
LIBRARY_CHILDREN = {
    table: [f"{MAIN}@bld-{name}" for name, c in BLD_VARIANTS.items() if c["bld"][key] != config["bld"][key]]
    for table, key in (("table8", "mode"), ("table9", "corpus"), ("table10", "tokens"))
}

# artifact -> the children (solution ids) it compares
CHILDREN_OF = {
    "table1": [MAIN],
    "table2": [MAIN],
    **{table: [MAIN, *children] for table, children in LIBRARY_CHILDREN.items()},
    "table11": [MAIN, f"{MAIN}@lm_loss"],
    "table12": [MAIN, f"{MAIN}@noop_only"],
    "table13": [MAIN, f"{MAIN}@greedy"],
    "table14": [MAIN, f"{MAIN}@max_params"],
    # random from the library; its architecture and the parent's with random weights (all after GKD)
    "table15": [
        MAIN,
        *(f"{MAIN}@random-s{s}" for s in PAPER["random_seeds"]),
        f"{MAIN}@random-s{PAPER['random_seeds'][0]}-scratch",
        f"{MAIN_TARGET}/{MAIN_SCENARIO}/unconstrained@scratch",
    ],
    "table16": [MAIN],
    "table17": [MAIN],
    "table18": [MAIN],
    "fig5": SWEEP_CHILDREN,
    "fig6": [],
    "fig7": [*SWEEP_CHILDREN, *(f"{s}@lm_loss" for s in SWEEP_CHILDREN)],
    "fig8": [],
}
# artifact -> (further inputs, further arguments of `puzzle report`)
EXTRA_OF = {
    **{
        table: (
            [library_files(s) for s in [MAIN, *children]],
            " ".join(f"--library {Q(library_dir(s))}" for s in [MAIN, *children]),
        )
        for table, children in LIBRARY_CHILDREN.items()
    },
    "table2": ([], " ".join(f"--paper-scenario {shlex.quote(f'{k}={v}')}" for k, v in PAPER["scenarios"].items())),
    "table17": (
        [*expand(f"{LOSS_EVAL}/{{loss}}.json", loss=GKD_LOSSES), *LOSS_DIR.values()],
        " ".join([f"--loss-eval {Q(LOSS_EVAL)}", *(f"--variant {Q(f'{loss}={LOSS_DIR[loss]}')}" for loss in GKD_LOSSES)]),
    ),
    "table18": (
        [*expand(f"{COMPRESS_EVAL}/{{method}}.json", method=COMPRESS_METHODS), *expand(f"{COMPRESS_DIR}/{{method}}", method=COMPRESS_METHODS)],
        " ".join(f"--compressed {Q(f'{m}={COMPRESS_DIR}/{m}')} {Q(f'{COMPRESS_EVAL}/{m}.json')}" for m in COMPRESS_METHODS),
    ),
    "fig5": ([SWEEP_DIR], f"--sweep {Q(SWEEP_DIR)}"),
    "fig6": ([MAIN_COSTS, MAIN_SOLUTION], f"--costs {Q(MAIN_COSTS)} --solution {Q(MAIN_SOLUTION)}"),
    "fig8": ([SWEEP_DIR, MAIN_COSTS, MAIN_SOLUTION], f"--sweep {Q(SWEEP_DIR)} --costs {Q(MAIN_COSTS)} --solution {Q(MAIN_SOLUTION)}"),
}

# artifact -> (path, shown in the report) of its outputs: a figure's PNG, a table's CSV (+ Markdown)
FILES_OF = {
    a: [(f"{PAPER_OUT}/{a}.png", True)]
    if a.startswith("fig")
    else [(f"{PAPER_OUT}/{a}.csv", True), (f"{PAPER_OUT}/{a}.md", False)]
    for a in PAPER["artifacts"]
}
PAPER_FILES = [path for files in FILES_OF.values() for path, _ in files]


report: "../workflow/report/workflow.rst"


rule paper:
    input:
        paper_files,


for _artifact in PAPER["artifacts"]:
    _children = CHILDREN_OF[_artifact]
    _inputs, _args = EXTRA_OF.get(_artifact, ([], ""))

    rule:
        name:
            f"paper_{_artifact}"
        input:
            [f"{R}/search/{s}/solution.json" for s in _children],
            expand(f"{R}/eval/{{solution}}/{{model}}.json", solution=_children, model=EVAL_MODELS),
            _inputs,
        output:
            [
                report(path, caption=f"../workflow/report/{_artifact}.rst", category="Figures" if _artifact.startswith("fig") else "Tables")
                if shown
                else path
                for path, shown in FILES_OF[_artifact]
            ],
        params:
            artifact=_artifact,
            args=" ".join([*(f"--child {Q(f'{R}/search/{s}/solution.json')} {Q(f'{R}/eval/{s}')}" for s in _children), *([_args] if _args else [])]),
            out=lambda w, output: os.path.splitext(output[0])[0],
        log:
            f"{R}/logs/paper/{_artifact}.log",
        resources:
            mem_mb=2000,
            runtime=10,
        conda:
            "../envs/puzzle.yaml"
        shell:
            "python -m puzzle report {params.artifact} {params.args} --out {params.out:q} > {log:q} 2>&1"


# Fig. 5 / 8: one search over the throughput sweep (infeasible targets are recorded, not fatal).
rule paper_sweep:
    input:
        scores=SCORES,
        costs=MAIN_COSTS,
        parent=PARENT,
    output:
        directory(SWEEP_DIR),
    params:
        cfg=pzc.cli_arg(config, "search", "search_space.ffn.multiple_of"),
        sweep=" ".join(shlex.quote(str(v)) for v in PAPER["sweep"]),
        scenario=MAIN_SCENARIO,
    log:
        f"{R}/logs/paper/sweep.log",
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../envs/puzzle.yaml"
    shell:
        "python -m puzzle search --cfg {params.cfg} --scores {input.scores:q} --costs {input.costs:q}"
        " --parent-config {input.parent:q} --scenario {params.scenario:q} --sweep {params.sweep} --sweep-resource throughput"
        " --out-dir {output:q} > {log:q} 2>&1"


# Table 17: the main child distilled with another loss (everything else as rule gkd).
use rule gkd as paper_gkd_loss with:
    output:
        directory(f"{PAPER_OUT}/gkd_loss/{{loss}}/{{solution}}"),
    wildcard_constraints:
        loss=r"[a-z+]+",
        solution=SOLUTION_ID,
    params:
        cfg=lambda w: pzc.cli_arg(
            pzc.deep_merge(config, {"gkd": {"loss": {t: t in w.loss.split("+") for t in LOSS_TERMS}}}), "gkd", "seed", "threads", "device"
        ),
        launch=GKD_LAUNCH,
    log:
        f"{R}/logs/paper/gkd_loss/{{loss}}/{{solution}}.log",


# Table 17: every loss variant in one evaluate job (same test windows, one shared timing).
rule paper_gkd_loss_eval:
    input:
        parent=PARENT,
        variants=list(LOSS_DIR.values()),
        test=f"{R}/data/{CORPUS}/test.bin",
        solution=MAIN_SOLUTION,
    output:
        expand(f"{LOSS_EVAL}/{{loss}}.json", loss=["parent", *GKD_LOSSES]),
    params:
        cfg=pzc.cli_arg(config, "evaluate", "threads", "device"),
        models=" ".join(f"--model {Q(f'{loss}={LOSS_DIR[loss]}')}" for loss in GKD_LOSSES),
        out=lambda w, output: os.path.dirname(output[0]),
    log:
        f"{R}/logs/paper/gkd_loss_eval.log",
    threads: config["threads"]
    resources:
        mem_mb=16000,
        runtime=120,
        **GPU,
    conda:
        "../envs/puzzle.yaml"
    shell:
        "python -m puzzle evaluate --cfg {params.cfg} --parent {input.parent:q} {params.models} --test {input.test:q}"
        " --solution {input.solution:q} --out {params.out:q} > {log:q} 2>&1"


# Tables 8-10: another block library (rules/search.smk BLD_VARIANTS): BLD and scoring as rules bld
# and score, with that library's settings. A layer's library is one folder: the entries differ by
# variant (coupled BLD has one per attention x FFN pair).
use rule bld as paper_bld with:
    input:
        parent=PARENT,
        train=lambda w: f"{R}/activations/{BLD_VARIANTS[w.variant]['bld']['corpus'] or CORPUS}/train",
        valid=f"{R}/activations/{CORPUS}/valid",
    output:
        directory(f"{BLD_VARIANT_DIR}/{{variant}}/library/layer_{{layer}}"),
    wildcard_constraints:
        variant=r"[a-z0-9]+",
        layer=r"\d+",
    params:
        cfg=lambda w: pzc.cli_arg(BLD_VARIANTS[w.variant], "bld", "search_space", "seed", "threads", "device"),
        out=lambda w, output: os.path.dirname(output[0]),
    log:
        f"{R}/logs/paper/bld/{{variant}}/layer_{{layer}}.log",


use rule score as paper_score with:
    input:
        parent=PARENT,
        shard=lambda w: f"{R}/data/{BLD_VARIANTS[w.variant]['scoring']['corpus'] or CORPUS}/valid.bin",
        library=f"{BLD_VARIANT_DIR}/{{variant}}/library/layer_{{layer}}",
    output:
        f"{BLD_VARIANT_DIR}/{{variant}}/scores/layer_{{layer}}.csv",
    wildcard_constraints:
        variant=r"[a-z0-9]+",
        layer=r"\d+",
    params:
        cfg=lambda w: pzc.cli_arg(
            BLD_VARIANTS[w.variant], "scoring", "search_space", "bld.mode", "seed", "threads", "device", "data.source", "data.corpus"
        ),
        data=lambda w, input: os.path.dirname(os.path.dirname(input.shard)),
        library=lambda w, input: os.path.dirname(input.library),
    log:
        f"{R}/logs/paper/score/{{variant}}/layer_{{layer}}.log",


use rule scores as paper_scores with:
    input:
        lambda w: expand(f"{BLD_VARIANT_DIR}/{w.variant}/scores/layer_{{layer}}.csv", layer=SCORE_LAYERS),
    output:
        f"{BLD_VARIANT_DIR}/{{variant}}/scores/scores.csv",
    wildcard_constraints:
        variant=r"[a-z0-9]+",
    log:
        f"{R}/logs/paper/score/{{variant}}/scores.log",


# Table 18: Wanda 2:4 (calibrated on the train shard) or a rank-r SVD of every block matrix.
rule paper_compress:
    input:
        parent=PARENT,
        train=f"{R}/data/{CORPUS}/train.bin",
    output:
        directory(f"{COMPRESS_DIR}/{{method}}"),
    wildcard_constraints:
        method="|".join(COMPRESS_METHODS),
    params:
        cfg=pzc.cli_arg(config, "seed", "threads", "device"),
        method_args=lambda w, input: (
            f"--train {Q(input.train)} --seq-len {config['evaluate']['seq_len']}"
            if w.method == "wanda"
            else f"--keep {PAPER['low_rank_keep']}"
        ),
    log:
        f"{R}/logs/paper/compress/{{method}}.log",
    threads: config["threads"]
    resources:
        mem_mb=8000,
        runtime=30,
        **GPU,
    conda:
        "../envs/puzzle.yaml"
    shell:
        "python -m puzzle compress --cfg {params.cfg} --method {wildcards.method:q} --parent {input.parent:q}"
        " {params.method_args} --out {output:q} > {log:q} 2>&1"


use rule paper_gkd_loss_eval as paper_compress_eval with:
    input:
        parent=PARENT,
        variants=expand(f"{COMPRESS_DIR}/{{method}}", method=COMPRESS_METHODS),
        test=f"{R}/data/{CORPUS}/test.bin",
        solution=MAIN_SOLUTION,
    output:
        expand(f"{COMPRESS_EVAL}/{{model}}.json", model=["parent", *COMPRESS_METHODS]),
    params:
        cfg=pzc.cli_arg(config, "evaluate", "threads", "device"),
        models=" ".join(f"--model {Q(f'{m}={COMPRESS_DIR}/{m}')}" for m in COMPRESS_METHODS),
        out=lambda w, output: os.path.dirname(output[0]),
    log:
        f"{R}/logs/paper/compress_eval.log",
