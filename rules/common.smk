# Functions the rules share: which block library a solution comes from (rules/search.smk names
# solutions; rules/child.smk and rules/paper.smk read them), and the paper target's files. Globals
# (LIBRARY, SCORES, LAYERS, PAPER, PAPER_FILES) are looked up when a rule calls them, after every
# rules file is read.

# Tables 8-10 (rules/paper.smk): other block libraries, each with its own scores. A solution whose
# budget ends in @bld-<name> is searched on that library's scores and assembled from its blocks.
BLD_VARIANTS = pzc.bld_variants(config)
BLD_VARIANT_DIR = f"{R}/paper/bld"


def library_variant(solution):
    """(name, whole config) of the block library a solution or budget names; (None, config) for the experiment's."""
    name = SolutionId.parse(solution).library
    if name is None:
        return None, config
    if name not in BLD_VARIANTS:
        raise WorkflowError(f"{solution}: no block library {name!r}; the config's paper section makes {sorted(BLD_VARIANTS)}")
    return name, BLD_VARIANTS[name]


def library_dir(solution):
    name, _ = library_variant(solution)
    return f"{R}/library" if name is None else f"{BLD_VARIANT_DIR}/{name}/library"


def library_files(solution):
    name, _ = library_variant(solution)
    return LIBRARY if name is None else expand(f"{library_dir(solution)}/layer_{{layer}}", layer=LAYERS)


def random_weights(solution):
    """`--random-weights SEED` for a solution whose budget ends in `scratch` (Table 15), else ""."""
    sid = SolutionId.parse(solution)
    if not sid.scratch:
        return ""
    return f"--random-weights {config['seed'] if sid.seed is None else sid.seed}"


def scores_of(solution):
    name, _ = library_variant(solution)
    return SCORES if name is None else f"{BLD_VARIANT_DIR}/{name}/scores/scores.csv"


def paper_files(wildcards):
    """Every artifact's files; a Table 9 this config cannot build stops the paper target (only it)."""
    problem = pzc.narrow_corpus_error(config) if "table9" in PAPER["artifacts"] else None
    if problem:
        raise WorkflowError(problem)
    return PAPER_FILES
