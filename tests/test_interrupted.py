"""Real kills (issue 17 item 3): Snakemake and its running job get SIGKILL together, once during BLD
and once during GKD. The same command typed again finishes the run: the dead run's locks go
(puzzle.runlock), the interrupted job is redone (workflow/profiles/default: rerun-incomplete) from
its checkpoint, and what it writes is byte-identical to the same job run without a kill."""

import os
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd

SOLUTION = "h100-analytic/tiny/throughput_1.3x"
BLD_STATE = "results/micro/library/.bld_checkpoint/*/group_*/latest.json"
GKD_STATE = "results/micro/gkd/h100-analytic/tiny/.throughput_1.3x.checkpoint/state.json"
# BLD and GKD long enough to be killed between checkpoints (micro: 8 steps each)
LONGER = "bld:\n  tokens: 16384\n  checkpoint_every: 4\ngkd:\n  steps: 64\n  checkpoint_every: 8\n"


def kill_when(cmd, env, log, pattern, root):
    """Run `cmd` in its own process group until a file matching `pattern` under `root` appears,
    then SIGKILL the group: Snakemake and the job it runs (they share the group)."""
    with open(log, "w") as out:
        run = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 1200
        while not list(root.glob(pattern)):
            assert run.poll() is None, f"snakemake exited before {pattern}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no {pattern} after 20 minutes"
            time.sleep(0.1)
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    assert list((root / ".snakemake" / "locks").glob("*.lock"))  # left behind, as after any SIGKILL
    return time.time()


def test_a_killed_run_is_finished_by_the_command_typed_first(repo, tmp_path, venv_env):
    wd = tmp_path / "wd"
    shutil.copytree(repo / "config", wd / "config")
    (tmp_path / "longer.yaml").write_text(LONGER)
    micro = str(repo / ".test" / "config" / "config.yaml")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(repo / "workflow" / "Snakefile"), "--directory", str(wd),
           "--cores", "2", "--configfile", micro, str(tmp_path / "longer.yaml")]
    res = wd / "results/micro"

    # killed during BLD (its checkpoint exists), then during GKD by the same command
    kill_when(cmd, venv_env, tmp_path / "run1.log", BLD_STATE, wd)
    killed = kill_when(cmd, venv_env, tmp_path / "run2.log", GKD_STATE, wd)
    second = (tmp_path / "run2.log").read_text()
    assert "puzzle: removed the locks of the Snakemake run" in second and "rule bld:" in second
    gkd = res / "gkd" / SOLUTION
    assert not gkd.exists()

    r = subprocess.run(cmd, capture_output=True, text=True, env=venv_env)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "puzzle: removed the locks of the Snakemake run" in out
    assert "rule gkd:" in out and "rule evaluate:" in out and "rule eval_summary:" in out
    assert "rule bld:" not in out and "rule assemble:" not in out  # finished before the kill: kept
    assert "resuming GKD from step" in (res / "logs/gkd" / f"{SOLUTION}.log").read_text()
    summary = res / "eval/summary.csv"
    assert summary.stat().st_mtime > killed
    assert set(pd.read_csv(summary)["model"]) == {"parent", "child", "gkd"}
    r = subprocess.run([*cmd, "-n"], capture_output=True, text=True, env=venv_env)
    assert "Nothing to be done" in r.stdout + r.stderr

    # the same jobs again from scratch (their checkpoints went when they finished): the same bytes
    layer0 = sorted((res / "library/layer_0").glob("*.safetensors"))
    library = {p: p.read_bytes() for p in layer0}
    model = (gkd / "model.safetensors").read_bytes()
    assert not list(res.glob("library/.bld_checkpoint")) and not list(res.glob("gkd/*/*/.*.checkpoint"))
    for rule, target in (("bld", layer0[0]), ("gkd", gkd)):
        r = subprocess.run([*cmd, "--forcerun", rule, "--", str(target.relative_to(wd))], capture_output=True,
                           text=True, env=venv_env)
        assert r.returncode == 0 and f"rule {rule}:" in r.stdout + r.stderr, (r.stdout + r.stderr)[-3000:]
    assert "resuming" not in (res / "logs/gkd" / f"{SOLUTION}.log").read_text()
    assert {p: p.read_bytes() for p in layer0} == library
    assert (gkd / "model.safetensors").read_bytes() == model
