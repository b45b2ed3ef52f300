# Children of the search's solutions: assembled from the library, distilled from the parent (GKD),
# and evaluated against it. {solution} is a solution's folder under search/: target/scenario/budget.
CHILDREN = config["assemble"]["solutions"]
if CHILDREN is None:
    CHILDREN = SOLUTIONS  # every solution rules/search.smk plans
EVAL_MODELS = ["parent", "child", "gkd"]
CHILD_EVALS = expand(f"{R}/eval/{{solution}}/{{model}}.json", solution=CHILDREN, model=EVAL_MODELS)
EVAL_SUMMARY = [f"{R}/eval/summary.csv"] if CHILDREN else []
SOLUTION_ID = r"[^/]+/[^/]+/[^/]+"  # the {solution} wildcard: exactly target/scenario/budget


rule assemble:
    input:
        solution=f"{R}/search/{{solution}}/solution.json",
        scores=lambda w: scores_of(w.solution),
        costs=lambda w: f"{R}/costs/{w.solution.split('/')[0]}/costs.csv",
        library=lambda w: library_files(w.solution),
        parent=PARENT,
    output:
        directory(f"{R}/child/{{solution}}"),
    wildcard_constraints:
        solution=SOLUTION_ID,
    params:
        cfg=lambda w: pzc.stage_arg(library_variant(w.solution)[1], "assemble"),
        upstream=lambda w: upstream_of(w.solution, "assemble"),
        library=lambda w: library_dir(w.solution),
        random=lambda w: random_weights(w.solution),
    log:
        f"{R}/logs/assemble/{{solution}}.log",
    resources:
        **planned("assemble"),
    conda:
        "../envs/puzzle.yaml"
    shell:
        "python -m puzzle assemble --cfg {params.cfg} --solution {input.solution:q} --scores {input.scores:q}"
        " --costs {input.costs:q} --library {params.library:q}"
        " --parent {input.parent:q} {params.random} --out {output:q} > {log:q} 2>&1"


# One process per GPU: python, torchrun on one node, or srun + torchrun over slurm.gkd_nodes nodes.
# Inserted unquoted: it is shell words (and the rendezvous host is expanded by the job's shell).
GKD_LAUNCH = gkd_launch.launch(config["slurm"]["gkd_nodes"], config["slurm"]["gkd_gpus"], config["threads"])


rule gkd:
    input:
        parent=PARENT,
        child=f"{R}/child/{{solution}}",
        train=f"{R}/data/{CORPUS}/train.bin",
        valid=f"{R}/data/{CORPUS}/valid.bin",
    output:
        directory(f"{R}/gkd/{{solution}}"),
    wildcard_constraints:
        solution=SOLUTION_ID,
    params:
        cfg=pzc.stage_arg(config, "gkd"),
        upstream=lambda w: upstream_of(w.solution, "gkd"),
        launch=GKD_LAUNCH,
    log:
        f"{R}/logs/gkd/{{solution}}.log",
    threads: config["threads"]
    resources:
        **planned("gkd"),
    conda:
        "../envs/puzzle.yaml"
    shell:
        "{params.launch} puzzle gkd --cfg {params.cfg} --parent {input.parent:q} --child {input.child:q}"
        " --train {input.train:q} --valid {input.valid:q} --out {output:q} > {log:q} 2>&1"


# Parent, child before GKD and child after GKD in one job: timings interleave, so ratios are fair.
rule evaluate:
    input:
        parent=PARENT,
        child=f"{R}/child/{{solution}}",
        gkd=f"{R}/gkd/{{solution}}",
        test=f"{R}/data/{CORPUS}/test.bin",
        solution=f"{R}/search/{{solution}}/solution.json",
    output:
        expand(f"{R}/eval/{{{{solution}}}}/{{model}}.json", model=EVAL_MODELS),
    wildcard_constraints:
        solution=SOLUTION_ID,
    params:
        cfg=pzc.stage_arg(config, "evaluate"),
        upstream=lambda w: upstream_of(w.solution, "evaluate"),
        models=lambda w, input: f"--model {Q(f'child={input.child}')} --model {Q(f'gkd={input.gkd}')}",
        out=lambda w, output: os.path.dirname(output[0]),
    log:
        f"{R}/logs/evaluate/{{solution}}.log",
    threads: config["threads"]
    resources:
        **planned("evaluate"),
    conda:
        "../envs/puzzle.yaml"
    shell:
        "python -m puzzle evaluate --cfg {params.cfg} --parent {input.parent:q} {params.models}"
        " --test {input.test:q} --solution {input.solution:q} --out {params.out:q} > {log:q} 2>&1"


rule eval_summary:
    input:
        expand(f"{R}/eval/{{solution}}/gkd.json", solution=CHILDREN),
    output:
        f"{R}/eval/summary.csv",
    params:
        runs=lambda w, input: [os.path.dirname(f) for f in input],
        upstream=pzc.upstream(config, "summary"),
    log:
        f"{R}/logs/evaluate/summary.log",
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/puzzle.yaml"
    shell:
        "python -m puzzle evaluate --summarize {params.runs:q} --out {output:q} > {log:q} 2>&1"
