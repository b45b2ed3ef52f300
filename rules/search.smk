# The MIP search (or a baseline): one job per budget, planned from the score and cost tables alone
# (no torch, no GPU). {solution} = target/scenario/budget, budget = <resource>_<value>, optionally with
# the paper's ablations as a suffix that `puzzle search --budget` reads: @<method|metric>[-s<seed>]
# (throughput_2.17x@greedy, throughput_2.17x@lm_loss, throughput_2.17x@random-s1; rules/paper.smk).
SOLUTIONS = [str(s) for s in solution_ids(config)]

rule search:
    input:
        scores=lambda w: scores_of(w.budget),
        costs=f"{R}/costs/{{target}}/costs.csv",
        parent=PARENT,
    output:
        f"{R}/search/{{target}}/{{scenario}}/{{budget}}/solution.json",
    wildcard_constraints:
        budget=r"((throughput|memory|latency)_|unconstrained@?)[^/]*",
    params:
        cfg=pzc.stage_arg(config, "search"),
        upstream=lambda w: pzc.upstream(library_variant(w.budget)[1], "search", target=w.target),
    log:
        f"{R}/logs/search/{{target}}/{{scenario}}/{{budget}}.log",
    resources:
        **planned("search"),
    conda:
        "../envs/puzzle.yaml"
    shell:
        "python -m puzzle search --cfg {params.cfg} --scores {input.scores:q} --costs {input.costs:q}"
        " --parent-config {input.parent:q} --scenario {wildcards.scenario:q} --budget {wildcards.budget:q} --out {output:q} > {log:q} 2>&1"
