# Replace-1-block scoring: one job per layer (the parent runs once, then every block of that layer
# from the cached layer input), concatenated into scores/scores.csv for the search.
SCORE_CORPUS = config["scoring"]["corpus"] or CORPUS  # one of CORPORA (checked by the config's validation)
SCORES = f"{R}/scores/scores.csv"


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
    log:
        f"{R}/logs/score/layer_{{layer}}.log",
    threads: config["threads"]
    resources:
        mem_mb=8000,
        runtime=60,
        **GPU,
    conda:
        "../envs/puzzle.yaml"
    shell:
        "python -m puzzle score --cfg {params.cfg} --parent {input.parent:q} --data {params.data:q}"
        " --library {params.library:q} --layer {wildcards.layer:q} --out {output:q} > {log:q} 2>&1"


rule scores:
    input:
        expand(f"{R}/scores/layer_{{layer}}.csv", layer=LAYERS),
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
