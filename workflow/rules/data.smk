rule data:
    output:
        tokenizer=directory(f"{R}/data/tokenizer"),
        shards=expand(f"{R}/data/{{corpus}}/{{split}}.bin", corpus=CORPORA, split=SPLITS),
        meta=expand(f"{R}/data/{{corpus}}/meta.json", corpus=CORPORA),
    params:
        cfg=pzc.cli_arg(config, "data", "seed", "parent.path"),
        out=lambda w, output: os.path.dirname(output.tokenizer),
    log:
        f"{R}/logs/data.log",
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/puzzle.yaml"
    shell:
        "python -m puzzle data --cfg {params.cfg} --out {params.out} > {log} 2>&1"
