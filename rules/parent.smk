# The embedded default trains its own tiny parent; real configs point parent.path at a checkpoint.
rule parent:
    input:
        tokenizer=f"{R}/data/tokenizer",
        shards=expand(f"{R}/data/{CORPUS}/{{split}}.bin", split=SPLITS),
    output:
        directory(f"{R}/parent"),
    params:
        cfg=pzc.stage_arg(config, "parent"),
        upstream=pzc.upstream(config, "parent"),
        data=lambda w, input: os.path.dirname(input.tokenizer),
    log:
        f"{R}/logs/parent.log",
    threads: config["threads"]
    resources:
        **planned("parent"),
    conda:
        "../envs/puzzle.yaml"
    shell:
        "python -m puzzle parent --cfg {params.cfg} --data {params.data:q} --out {output:q} > {log:q} 2>&1"
