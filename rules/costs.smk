# Per-subblock prefill/decode time and memory, one job per deployment target: measured targets
# time every variant on the device the job runs on (a GPU job on a cluster); analytic targets are
# a roofline estimate from the device's figures, computed anywhere in seconds.
import re

COST_TARGETS = list(config["costs"]["targets"])
COSTS = expand(f"{R}/costs/{{target}}/costs.csv", target=COST_TARGETS)
_MEASURED = [t for t, spec in config["costs"]["targets"].items() if spec.get("measure")]
_ANALYTIC = [t for t in COST_TARGETS if t not in _MEASURED]


# wildcard patterns of each rule's targets ("(?!)" matches nothing when a rule has none)
_MEASURED_RE = "|".join(re.escape(t) for t in _MEASURED) or "(?!)"
_ANALYTIC_RE = "|".join(re.escape(t) for t in _ANALYTIC) or "(?!)"


rule costs:
    input:
        parent=PARENT,
    output:
        csv=f"{R}/costs/{{target}}/costs.csv",
        meta=f"{R}/costs/{{target}}/costs.json",
    wildcard_constraints:
        target=_MEASURED_RE,
    params:
        cfg=lambda w: pzc.stage_arg(config, "costs", target=w.target),
        upstream=pzc.upstream(config, "costs"),
    log:
        f"{R}/logs/costs/{{target}}.log",
    # every local core: no other job runs beside a timing (torch still uses config `threads`)
    threads: max(config["threads"], LOCAL_CORES or 1)
    resources:
        **planned("costs"),
    conda:
        "../envs/puzzle.yaml"
    shell:
        "python -m puzzle costs --cfg {params.cfg} --parent {input.parent:q} --target {wildcards.target:q}"
        " --out {output.csv:q} > {log:q} 2>&1"


# the same call where no timing runs: one core, a small job, no GPU
use rule costs as costs_analytic with:
    wildcard_constraints:
        target=_ANALYTIC_RE,
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
