# The block library: the parent's activations once per corpus and split, then BLD one job per
# layer (every variant of that layer), so a cluster trains layers in parallel. BLD reads the
# stored train activations, or runs the parent itself on the train shard (bld.teacher; the
# planner's choice is printed in each BLD log), and then the train activations are never made.

BLD_CORPUS = config["bld"]["corpus"] or CORPUS  # one of CORPORA (checked by the config's validation)
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
        cfg=pzc.stage_arg(config, "activations"),
        upstream=pzc.upstream(config, "activations"),
    log:
        f"{R}/logs/activations/{{corpus}}_{{split}}.log",
    threads: config["threads"]
    resources:
        **planned("activations"),
    conda:
        "../envs/puzzle.yaml"
    shell:
        "python -m puzzle activations --cfg {params.cfg} --parent {input.parent:q} --shard {input.shard:q}"
        " --split {wildcards.split:q} --out {output:q} > {log:q} 2>&1"


rule bld:
    input:
        parent=PARENT,
        train=bld_train(config)[1],
        valid=f"{R}/activations/{CORPUS}/valid",
    output:
        expand(f"{R}/library/layer_{{{{layer}}}}/{{entry}}.{{ext}}", entry=LIBRARY_ENTRIES, ext=pzl.EXTENSIONS),
    wildcard_constraints:
        layer=r"\d+",
    params:
        cfg=pzc.stage_arg(config, "bld"),
        upstream=pzc.upstream(config, "bld"),
        train=bld_train(config)[0],
        out=lambda w, output: os.path.dirname(os.path.dirname(output[0])),
    log:
        f"{R}/logs/bld/layer_{{layer}}.log",
    threads: config["threads"]
    resources:
        **planned("bld"),
    conda:
        "../envs/puzzle.yaml"
    shell:
        "python -m puzzle bld --cfg {params.cfg} --parent {input.parent:q} --{params.train:q} {input.train:q}"
        " --valid {input.valid:q} --layer {wildcards.layer:q} --out {params.out:q} > {log:q} 2>&1"
