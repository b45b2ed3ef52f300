# Functions the rules share: which block library a solution comes from (rules/search.smk names
# solutions; rules/child.smk and rules/paper.smk read them), and the paper target's files. Globals
# (LIBRARY, SCORES, LAYERS, PAPER, PAPER_FILES) are looked up when a rule calls them, after every
# rules file is read.

# The parent's shape, its layers and the library entries of one layer (rules/library.smk plans
# them, rules/scoring.smk reads them).
PARENT_SHAPE = pzl.parent_shape(pzc.parent_config(config))
LAYERS = list(range(PARENT_SHAPE.num_hidden_layers))
LIBRARY_ENTRIES = pzl.entries(config, PARENT_SHAPE)

# Tables 8-10 (rules/paper.smk): other block libraries, each with its own scores. A solution whose
# budget ends in @bld-<name> is searched on that library's scores and assembled from its blocks.
PAPER_PLAN = paper_plan.Plan(config, R, lambda solution: library_files(solution))
BLD_VARIANTS = PAPER_PLAN.bld_variants
BLD_VARIANT_DIR = PAPER_PLAN.bld_variant_dir
library_variant = PAPER_PLAN.library_variant
library_dir = PAPER_PLAN.library_dir


def library_files(solution):
    name, _ = library_variant(solution)
    return LIBRARY if name is None else expand(f"{library_dir(solution)}/layer_{{layer}}", layer=LAYERS)


def random_weights(solution):
    """`--random-weights SEED` for a solution whose budget ends in `scratch` (Table 15), else ""."""
    sid = SolutionId.parse(solution)
    if not sid.scratch:
        return ""
    return f"--random-weights {config['seed'] if sid.seed is None else sid.seed}"


def upstream_of(solution, stage):
    """`params: upstream` of a job of a solution: the keys of the stages before `stage`, from the config
    of the solution's block library and for the solution's costs target."""
    return pzc.upstream(library_variant(solution)[1], stage, target=solution.split("/")[0])


def scores_of(solution):
    return PAPER_PLAN.scores_of(solution, SCORES)


def paper_files(wildcards):
    """Every artifact's files; a Table 5 or 9 this config cannot build stops the paper target (only it),
    naming every such table at once."""
    checks = {"table5": paper_plan.scratch_error, "table9": paper_plan.narrow_corpus_error}
    problems = [check(config) for artifact, check in checks.items() if artifact in PAPER["artifacts"]]
    if any(problems):
        raise WorkflowError("\n".join(p for p in problems if p))
    return PAPER_FILES


def planned(stage):
    """A rule's resources from the planner (src/puzzle/plan.py, built once in the Snakefile): mem_mb,
    runtime and its GPUs (SLURM requests through the executor plugin; a local run ignores the GPUs)."""
    return PLAN.resources(stage, config["slurm"])


def bld_train(cfg):
    """(flag, path) of a BLD job's training input: the stored train activations, or the train shard online."""
    corpus = cfg["bld"]["corpus"] or CORPUS
    if pzb.teacher_path(cfg, pzc.parent_config(cfg)).path == "stored":
        return "train", f"{R}/activations/{corpus}/train"
    return "shard", f"{R}/data/{corpus}/train.bin"
