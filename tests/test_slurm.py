"""`snakemake --profile slurm` (the root link to profiles/slurm): GPU requests in the plan, and the micro
pipeline through a real SLURM.

The SLURM run (ci/slurm-pipeline.sh) installs and starts a one-node SLURM on localhost, so it needs
root and apt: it runs under CI (CI set, as `.ci/run` is) or with PUZZLE_SLURM_TEST=1, and is skipped
otherwise. Under CI it fails, never skips, when SLURM cannot come up.
"""

import os
import re
import shutil
import signal
import subprocess
import sys

import pytest
import yaml

# Stages that run torch on a GPU; every other rule is a CPU job and must not hold one.
GPU_STAGES = {"activations", "bld", "score", "costs", "evaluate"}
GKD_STAGE = "gkd"
SLURM_TIMEOUT_S = 15 * 60


def _enabled(var: str) -> bool:
    return os.environ.get(var, "").strip().lower() not in ("", "0", "false", "no")


def _planned_resources(stdout: str) -> dict[str, str]:
    """rule name -> its `resources:` line in a dry run (the first job of each rule)."""
    out: dict[str, str] = {}
    for m in re.finditer(r"^(?:local)?rule (\w+):\n(?:    .*\n)*?    resources: (.*)$", stdout, re.M):
        out.setdefault(m.group(1), m.group(2))
    return out


def test_profile_plans_gpus_for_gpu_stages_only(repo, tmp_path, venv_env):
    wd = tmp_path / "wd"
    shutil.copytree(repo / "config", wd / "config", symlinks=False)
    over = tmp_path / "slurm.yaml"
    over.write_text(
        yaml.safe_dump(
            {"slurm": {"gpus_per_job": 1, "gpu_model": "h100", "gpu_partition": "gpu", "gkd_gpus": 2, "gkd_nodes": 2}}
        )
    )
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(repo / "workflow" / "Snakefile"),
            "--directory",
            str(wd),
            "-n",
            "--profile",
            "slurm",
            "--configfile",
            str(repo / ".test/config/config.yaml"),
            str(over),
        ],
        cwd=repo,
        capture_output=True,
        text=True,
        env=venv_env,
    )
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-3000:]
    plan = _planned_resources(r.stdout)
    assert {"data", "parent"} <= set(plan), plan
    for rule, res in plan.items():
        if rule in GPU_STAGES:
            assert "gpu=1," in res + "," and "gpu_model=h100" in res and "slurm_partition=gpu" in res, (rule, res)
        elif rule == GKD_STAGE:  # 2 nodes x 2 GPUs: one task (torchrun) per node, GPUs per node
            for want in (
                "nodes=2",
                "tasks=2",
                "mpi=srun",
                "slurm_extra=--gpus-per-node=h100:2",
                "slurm_partition=gpu",
            ):
                assert want in res, (rule, want, res)
            assert "gpu=" not in res, (rule, res)
        else:
            assert "gpu=" not in res and "gpu_model" not in res, (rule, res)
        assert "cpus_per_task=" in res and "runtime=" in res and "mem_mb=" in res, (rule, res)


@pytest.mark.skipif(
    not (_enabled("CI") or _enabled("PUZZLE_SLURM_TEST")),
    reason="starts a localhost SLURM as root: runs under CI or with PUZZLE_SLURM_TEST=1",
)
def test_micro_pipeline_through_real_slurm(repo, tmp_path, venv_env):
    assert os.geteuid() == 0, "ci/slurm-pipeline.sh installs and starts SLURM: run the tests as root"
    slurm_was_up = subprocess.run(["pgrep", "-x", "slurmctld"], capture_output=True).returncode == 0
    wd = tmp_path / "wd"
    # own session: on a timeout the whole tree (script, snakemake, timeout) is stopped together
    proc = subprocess.Popen(
        ["bash", str(repo / "ci" / "slurm-pipeline.sh"), str(wd)],
        cwd=repo,
        env=venv_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=SLURM_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        out += f"\n[test] killed after {SLURM_TIMEOUT_S} s"
    finally:
        # a killed script cannot stop what it started; leave no daemons for the tests that follow
        if not slurm_was_up:
            subprocess.run(["bash", str(repo / "ci" / "slurm-down.sh")], capture_output=True)
    print(out)
    assert proc.returncode == 0 and "[slurm-pipeline" in out and "PASSED" in out, out[-6000:]
