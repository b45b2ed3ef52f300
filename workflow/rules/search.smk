# The MIP search (or a baseline): one job per budget, planned from the score and cost tables alone
# (no torch, no GPU). {solution} = target/scenario/budget, budget = <resource>_<value>.
SOLUTIONS = pzc.solution_ids(config)


rule search:
    input:
        scores=SCORES,
        costs=f"{R}/costs/{{target}}/costs.csv",
        parent=PARENT,
    output:
        f"{R}/search/{{target}}/{{scenario}}/{{budget}}/solution.json",
    wildcard_constraints:
        budget=r"(throughput|memory|latency)_[^/]+|unconstrained",
    params:
        cfg=pzc.cli_arg(config, "search", "search_space.ffn.multiple_of"),
        budget=lambda w: "" if w.budget == "unconstrained" else f"--budget {w.budget}",
    log:
        f"{R}/logs/search/{{target}}/{{scenario}}/{{budget}}.log",
    resources:
        mem_mb=2000,
        runtime=15,
    conda:
        "../envs/puzzle.yaml"
    shell:
        "python -m puzzle search --cfg {params.cfg} --scores {input.scores} --costs {input.costs}"
        " --parent-config {input.parent} --scenario {wildcards.scenario} {params.budget} --out {output} > {log} 2>&1"
