# Replace-1-block scoring: one job per layer (the parent runs once, then every block of that layer
# from the cached layer input), or per part of a layer's blocks (scoring.parts, planned by
# src/puzzle/score_plan.py), concatenated into scores/scores.csv for the search.
SCORE_CORPUS = config["scoring"]["corpus"] or CORPUS  # one of CORPORA (checked by the config's validation)
SCORES = f"{R}/scores/scores.csv"
SCORE_PARTS = PLAN.score_parts  # layer -> jobs (scoring.parts; auto fills plan.SCORE_PART_MINUTES each)


rule score:
    input:
        parent=PARENT,
        shard=f"{R}/data/{SCORE_CORPUS}/valid.bin",
        library=lambda w: [str(pzl.entry_path(f"{R}/library", int(w.layer), e)) for e in LIBRARY_ENTRIES],
    output:
        f"{R}/scores/layer_{{layer}}.csv",
    wildcard_constraints:
        layer=r"\d+",
    params:
        cfg=pzc.stage_arg(config, "score"),
        upstream=pzc.upstream(config, "score"),
        data=lambda w, input: os.path.dirname(os.path.dirname(input.shard)),
        library=f"{R}/library",
        part="",
    log:
        f"{R}/logs/score/layer_{{layer}}.log",
    threads: config["threads"]
    resources:
        **planned("score"),
    conda:
        "../envs/puzzle.yaml"
    shell:
        "python -m puzzle score --cfg {params.cfg} --parent {input.parent:q} --data {params.data:q}"
        " --library {params.library:q} --layer {wildcards.layer:q} {params.part} --out {output:q} > {log:q} 2>&1"


use rule score as score_part with:
    output:
        f"{R}/scores/layer_{{layer}}.part{{k}}of{{n}}.csv",
    wildcard_constraints:
        layer=r"\d+",
        k=r"\d+",
        n=r"\d+",
    params:
        part=lambda w: f"--part {w.k}/{w.n}",
    log:
        f"{R}/logs/score/layer_{{layer}}.part{{k}}of{{n}}.log",


rule scores:
    input:
        pzs.layer_files(f"{R}/scores", SCORE_PARTS),
    output:
        SCORES,
    params:
        upstream=pzc.upstream(config, "scores"),
    log:
        f"{R}/logs/score/scores.log",
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/puzzle.yaml"
    shell:
        "python -m puzzle score --merge {input:q} --out {output:q} > {log:q} 2>&1"
