# Analogues of the paper's tables and figures: `snakemake paper`, then `snakemake paper --report report.html`.
# Ablation children are ordinary solutions whose budget carries an @-suffix (rules/search.smk:
# `throughput_2.17x@greedy`), so rules/child.smk assembles, distills and evaluates them unchanged.
# Each artifact is one rule whose inputs and arguments hold exactly what it reads, so changing one
# ablation's setting (config `paper`) reruns that ablation's jobs and its table only.
# The plan (children, inputs, arguments and outputs of every artifact) is puzzle.paper.plan's.
PAPER = config["paper"]
PAPER_OUT = PAPER_PLAN.out
MAIN = PAPER_PLAN.main  # the experiment's own child: the paper's Puzzle child in every table
MAIN_SCENARIO = PAPER_PLAN.main_id.scenario
MAIN_SOLUTION = PAPER_PLAN.main_solution
MAIN_COSTS = PAPER_PLAN.main_costs
SWEEP_DIR = PAPER_PLAN.sweep_dir
LOSS_DIR = PAPER_PLAN.loss_dir  # Table 17: GKD loss variant -> its GKD folder
GKD_LOSSES = PAPER_PLAN.gkd_losses
LOSS_EVAL = PAPER_PLAN.loss_eval
MAIN_GKD = f"{R}/gkd/{MAIN}"
SCRATCH_DIR = PAPER_PLAN.scratch_dir  # Table 5
SCRATCH_EVAL = PAPER_PLAN.scratch_eval
BUDGET_DIR = PAPER_PLAN.budget_dir  # Table 6: GKD budget name -> its GKD folder
BUDGET_EVAL = PAPER_PLAN.budget_eval
COMPRESS_METHODS = list(paper_plan.COMPRESS_METHODS)  # Table 18
COMPRESS_DIR = PAPER_PLAN.compress_dir
COMPRESS_EVAL = PAPER_PLAN.compress_eval
ARTIFACTS = PAPER_PLAN.artifacts()
PAPER_FILES = PAPER_PLAN.files()


report: "../workflow/report/workflow.rst"


rule paper:
    input:
        paper_files,


for _artifact, _plan in ARTIFACTS.items():

    rule:
        name:
            f"paper_{_artifact}"
        input:
            [f"{R}/search/{s}/solution.json" for s in _plan.children],
            expand(f"{R}/eval/{{solution}}/{{model}}.json", solution=_plan.children, model=EVAL_MODELS),
            _plan.inputs,
        output:
            [
                report(path, caption=f"../workflow/report/{_artifact}.rst", category="Figures" if _artifact.startswith("fig") else "Tables")
                if shown
                else path
                for path, shown in _plan.files
            ],
        params:
            artifact=_artifact,
            upstream=pzc.upstream(config, "report"),
            args=_plan.args,
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
        cfg=pzc.stage_arg(config, "search"),
        upstream=pzc.upstream(config, "search", target=PAPER_PLAN.main_id.target),
        sweep=" ".join(Q(str(v)) for v in PAPER["sweep"]),
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
        cfg=lambda w: pzc.stage_arg(pzc.deep_merge(config, {"gkd": {"loss": PAPER_PLAN.loss_config(w.loss)}}), "gkd"),
        upstream=lambda w: upstream_of(w.solution, "gkd"),
        launch=GKD_LAUNCH,
    log:
        f"{R}/logs/paper/gkd_loss/{{loss}}/{{solution}}.log",


# Table 17: every loss variant in one evaluate job (same test windows, one shared timing).
use rule evaluate as paper_gkd_loss_eval with:
    input:
        parent=PARENT,
        variants=list(LOSS_DIR.values()),
        test=f"{R}/data/{CORPUS}/test.bin",
        solution=MAIN_SOLUTION,
    output:
        expand(f"{LOSS_EVAL}/{{loss}}.json", loss=["parent", *GKD_LOSSES]),
    params:
        cfg=pzc.stage_arg(config, "evaluate"),
        upstream=upstream_of(MAIN, "evaluate"),
        models=" ".join(f"--model {Q(f'{loss}={LOSS_DIR[loss]}')}" for loss in GKD_LOSSES),
        out=lambda w, output: os.path.dirname(output[0]),
    log:
        f"{R}/logs/paper/gkd_loss_eval.log",


# Table 5: a smaller homogeneous model trained from scratch with the parent's training (paper.scratch),
# timed and scored in one evaluate job with the parent and the main child after GKD.
use rule parent as paper_scratch with:
    output:
        directory(SCRATCH_DIR),
    params:
        cfg=pzc.stage_arg(PAPER_PLAN.scratch_config, "parent"),
        upstream=pzc.upstream(PAPER_PLAN.scratch_config, "parent"),
        data=lambda w, input: os.path.dirname(input.tokenizer),
    log:
        f"{R}/logs/paper/scratch.log",


use rule evaluate as paper_scratch_eval with:
    input:
        parent=PARENT,
        variants=[MAIN_GKD, SCRATCH_DIR],
        test=f"{R}/data/{CORPUS}/test.bin",
        solution=MAIN_SOLUTION,
    output:
        expand(f"{SCRATCH_EVAL}/{{model}}.json", model=["parent", "child", "scratch"]),
    params:
        cfg=pzc.stage_arg(config, "evaluate"),
        upstream=upstream_of(MAIN, "evaluate"),
        models=f"--model {Q(f'child={MAIN_GKD}')} --model {Q(f'scratch={SCRATCH_DIR}')}",
        out=lambda w, output: os.path.dirname(output[0]),
    log:
        f"{R}/logs/paper/scratch_eval.log",


# Table 6: the main child distilled on a fraction of the GKD budget (paper.gkd_budgets), everything
# else as rule gkd; every budget evaluated in one job.
use rule gkd as paper_gkd_budget with:
    output:
        directory(f"{PAPER_OUT}/gkd_budget/{{budget}}/{{solution}}"),
    wildcard_constraints:
        budget=r"tokens\d+",
        solution=SOLUTION_ID,
    params:
        cfg=lambda w: pzc.stage_arg(PAPER_PLAN.budget_config(w.budget), "gkd"),
        upstream=lambda w: upstream_of(w.solution, "gkd"),
        launch=GKD_LAUNCH,
    log:
        f"{R}/logs/paper/gkd_budget/{{budget}}/{{solution}}.log",


use rule evaluate as paper_gkd_budget_eval with:
    input:
        parent=PARENT,
        variants=list(BUDGET_DIR.values()),
        test=f"{R}/data/{CORPUS}/test.bin",
        solution=MAIN_SOLUTION,
    output:
        expand(f"{BUDGET_EVAL}/{{budget}}.json", budget=["parent", *BUDGET_DIR]),
    params:
        cfg=pzc.stage_arg(config, "evaluate"),
        upstream=upstream_of(MAIN, "evaluate"),
        models=" ".join(f"--model {Q(f'{name}={path}')}" for name, path in BUDGET_DIR.items()),
        out=lambda w, output: os.path.dirname(output[0]),
    log:
        f"{R}/logs/paper/gkd_budget_eval.log",


# Tables 8-10: another block library (rules/search.smk BLD_VARIANTS): BLD and scoring as rules bld
# and score, with that library's settings. A layer's library is one folder: the entries differ by
# variant (coupled BLD has one per attention x FFN pair).
use rule bld as paper_bld with:
    input:
        parent=PARENT,
        train=lambda w: bld_train(BLD_VARIANTS[w.variant])[1],
        valid=f"{R}/activations/{CORPUS}/valid",
    output:
        directory(f"{BLD_VARIANT_DIR}/{{variant}}/library/layer_{{layer}}"),
    wildcard_constraints:
        variant=r"[a-z0-9]+",
        layer=r"\d+",
    params:
        cfg=lambda w: pzc.stage_arg(BLD_VARIANTS[w.variant], "bld"),
        upstream=lambda w: pzc.upstream(BLD_VARIANTS[w.variant], "bld"),
        train=lambda w: bld_train(BLD_VARIANTS[w.variant])[0],
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
        cfg=lambda w: pzc.stage_arg(BLD_VARIANTS[w.variant], "score"),
        upstream=lambda w: pzc.upstream(BLD_VARIANTS[w.variant], "score"),
        data=lambda w, input: os.path.dirname(os.path.dirname(input.shard)),
        library=lambda w, input: os.path.dirname(input.library),
    log:
        f"{R}/logs/paper/score/{{variant}}/layer_{{layer}}.log",


use rule scores as paper_scores with:
    input:
        lambda w: expand(f"{BLD_VARIANT_DIR}/{w.variant}/scores/layer_{{layer}}.csv", layer=LAYERS),
    output:
        f"{BLD_VARIANT_DIR}/{{variant}}/scores/scores.csv",
    wildcard_constraints:
        variant=r"[a-z0-9]+",
    params:
        upstream=lambda w: pzc.upstream(BLD_VARIANTS[w.variant], "scores"),
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
        cfg=pzc.stage_arg(config, "compress"),
        upstream=pzc.upstream(config, "compress"),
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


use rule evaluate as paper_compress_eval with:
    input:
        parent=PARENT,
        variants=expand(f"{COMPRESS_DIR}/{{method}}", method=COMPRESS_METHODS),
        test=f"{R}/data/{CORPUS}/test.bin",
        solution=MAIN_SOLUTION,
    output:
        expand(f"{COMPRESS_EVAL}/{{model}}.json", model=["parent", *COMPRESS_METHODS]),
    params:
        cfg=pzc.stage_arg(config, "evaluate"),
        upstream=pzc.upstream(config, "compress_eval"),
        models=" ".join(f"--model {Q(f'{m}={COMPRESS_DIR}/{m}')}" for m in COMPRESS_METHODS),
        out=lambda w, output: os.path.dirname(output[0]),
    log:
        f"{R}/logs/paper/compress_eval.log",
