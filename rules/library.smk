# The block library: the parent's activations once per corpus and split, then BLD one job per
# layer (every variant of that layer), so a cluster trains layers in parallel.
BLD_CORPUS = config["bld"]["corpus"] or CORPUS
if BLD_CORPUS not in CORPORA:
    sys.exit(
        f"config error: bld.corpus = {BLD_CORPUS!r}: expected one of {CORPORA} (data.corpus + data.extra_corpora)"
    )
LIBRARY = pzl.output_files(f"{R}/library", len(LAYERS), LIBRARY_ENTRIES)


rule activations:
    input:
        parent=PARENT,
        shard=f"{R}/data/{{corpus}}/{{split}}.bin",
    output:
        directory(f"{R}/activations/{{corpus}}/{{split}}"),
    wildcard_constraints:
        split="train|valid",
    params:
        cfg=pzc.cli_arg(config, "activations", "seed", "threads", "device", "parent.path", "parent.train.seq_len"),
    log:
        f"{R}/logs/activations/{{corpus}}_{{split}}.log",
    threads: config["threads"]
    resources:
        mem_mb=8000,
        runtime=60,
        **GPU,
    conda:
        "../envs/puzzle.yaml"
    shell:
        "python -m puzzle activations --cfg {params.cfg} --parent {input.parent:q} --shard {input.shard:q}"
        " --split {wildcards.split:q} --out {output:q} > {log:q} 2>&1"


rule bld:
    input:
        parent=PARENT,
        train=f"{R}/activations/{BLD_CORPUS}/train",
        valid=f"{R}/activations/{CORPUS}/valid",
    output:
        expand(f"{R}/library/layer_{{{{layer}}}}/{{entry}}.{{ext}}", entry=LIBRARY_ENTRIES, ext=pzl.EXTENSIONS),
    wildcard_constraints:
        layer=r"\d+",
    params:
        cfg=pzc.cli_arg(config, "bld", "search_space", "seed", "threads", "device"),
        out=lambda w, output: os.path.dirname(os.path.dirname(output[0])),
    log:
        f"{R}/logs/bld/layer_{{layer}}.log",
    threads: config["threads"]
    resources:
        mem_mb=8000,
        runtime=120,
        **GPU,
    conda:
        "../envs/puzzle.yaml"
    shell:
        "python -m puzzle bld --cfg {params.cfg} --parent {input.parent:q} --train {input.train:q}"
        " --valid {input.valid:q} --layer {wildcards.layer:q} --out {params.out:q} > {log:q} 2>&1"
