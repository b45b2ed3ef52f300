# The MIP search (or a baseline): one job per budget, planned from the score and cost tables alone
# (no torch, no GPU). {solution} = target/scenario/budget, budget = <resource>_<value>, optionally with
# the paper's ablations as a suffix that `puzzle search --budget` reads: @<method|metric>[-s<seed>]
# (throughput_2.17x@greedy, throughput_2.17x@lm_loss, throughput_2.17x@random-s1; rules/paper.smk).
SOLUTIONS = pzc.solution_ids(config)

# Tables 8-10 (rules/paper.smk): other block libraries, each with its own scores. A solution whose
# budget ends in @bld-<name> is searched on that library's scores and assembled from its blocks.
try:
    BLD_VARIANTS = pzc.bld_variants(config)
except pzc.ConfigError as err:
    sys.exit(str(err))
BLD_VARIANT_DIR = f"{R}/paper/bld"


def library_variant(solution):
    """(name, whole config) of the block library a solution or budget names; (None, config) for the experiment's."""
    m = re.search(r"@bld-([a-z0-9]+)$", solution)
    if m is None:
        return None, config
    if m.group(1) not in BLD_VARIANTS:
        raise WorkflowError(f"{solution}: no block library {m.group(1)!r}; the config's paper section makes {sorted(BLD_VARIANTS)}")
    return m.group(1), BLD_VARIANTS[m.group(1)]


def library_dir(solution):
    name, _ = library_variant(solution)
    return f"{R}/library" if name is None else f"{BLD_VARIANT_DIR}/{name}/library"


def library_files(solution):
    name, _ = library_variant(solution)
    return LIBRARY if name is None else expand(f"{library_dir(solution)}/layer_{{layer}}", layer=LAYERS)


def random_weights(solution):
    """`--random-weights SEED` for a solution whose budget ends in `scratch` (Table 15), else ""."""
    m = re.search(r"@(?:.*-s(\d+)-)?scratch$", solution)
    return "" if m is None else f"--random-weights {m.group(1) or config['seed']}"


def scores_of(solution):
    name, _ = library_variant(solution)
    return SCORES if name is None else f"{BLD_VARIANT_DIR}/{name}/scores/scores.csv"


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
