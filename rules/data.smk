rule data:
    output:
        tokenizer=directory(f"{R}/data/tokenizer"),
        shards=expand(f"{R}/data/{{corpus}}/{{split}}.bin", corpus=CORPORA, split=SPLITS),
        meta=expand(f"{R}/data/{{corpus}}/meta.json", corpus=CORPORA),
    params:
        cfg=pzc.stage_arg(config, "data"),
        out=lambda w, output: os.path.dirname(output.tokenizer),
        corpus="",
    log:
        f"{R}/logs/data.log",
    resources:
        **planned("data"),
    conda:
        "../envs/puzzle.yaml"
    shell:
        "python -m puzzle data --cfg {params.cfg}{params.corpus} --out {params.out:q} > {log:q} 2>&1"


# An embedded corpus beyond data.corpus + data.extra_corpora (the paper's narrow BLD data, Table 9),
# tokenized with the experiment's tokenizer; a separate job, so asking for it reruns nothing else.
use rule data as data_corpus with:
    input:
        tokenizer=f"{R}/data/tokenizer",
    output:
        shards=expand(f"{R}/data/{{{{corpus}}}}/{{split}}.bin", split=SPLITS),
        meta=f"{R}/data/{{corpus}}/meta.json",
    wildcard_constraints:
        corpus="|".join(c for c in pzc.embedded_corpora() if c not in CORPORA) or "(?!)",  # none left: matches nothing
    params:
        cfg=pzc.stage_arg(config, "data"),
        out=lambda w, input: os.path.dirname(input.tokenizer),
        corpus=lambda w: f" --corpus {Q(w.corpus)}",
    log:
        f"{R}/logs/data_{{corpus}}.log",
