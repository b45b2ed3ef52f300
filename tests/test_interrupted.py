"""A real kill: Snakemake and its running GKD job get SIGKILL together (issue 17 item 3). The same
command typed again finishes the run: the dead run's locks go (puzzle.runlock), the interrupted job
is redone (workflow/profiles/default: rerun-incomplete), GKD resumes from its checkpoint, and its
model is byte-identical to the same job run without a kill."""

import os
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd

SOLUTION = "h100-analytic/tiny/throughput_1.3x"


def test_a_killed_run_is_finished_by_the_command_typed_first(repo, tmp_path, venv_env):
    wd = tmp_path / "wd"
    shutil.copytree(repo / "config", wd / "config")
    longer = tmp_path / "longer.yaml"  # GKD long enough to be killed between checkpoints
    longer.write_text("gkd:\n  steps: 64\n  checkpoint_every: 8\n")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(repo / "workflow" / "Snakefile"), "--directory", str(wd),
           "--cores", "2", "--configfile", str(repo / ".test" / "config" / "config.yaml"), str(longer)]
    gkd = wd / "results/micro/gkd" / SOLUTION
    state = gkd.parent / f".{gkd.name}.checkpoint" / "state.json"
    run = subprocess.Popen(cmd, env=venv_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    try:
        deadline = time.monotonic() + 1200
        while not state.exists():
            assert run.poll() is None, f"snakemake exited ({run.returncode}) before GKD saved a checkpoint"
            assert time.monotonic() < deadline, "no GKD checkpoint after 20 minutes"
            time.sleep(0.1)
    finally:
        os.killpg(run.pid, signal.SIGKILL)  # Snakemake and its jobs: they share its process group
        run.wait()
    killed = time.time()
    assert not gkd.exists() and list((wd / ".snakemake" / "locks").glob("*.lock"))

    r = subprocess.run(cmd, capture_output=True, text=True, env=venv_env)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "puzzle: removed the locks of the Snakemake run" in out
    assert "rule gkd:" in out and "rule evaluate:" in out and "rule eval_summary:" in out
    assert "rule bld:" not in out and "rule assemble:" not in out  # finished before the kill: kept
    assert "resuming GKD from step" in (wd / "results/micro/logs/gkd" / f"{SOLUTION}.log").read_text()
    summary = wd / "results/micro/eval/summary.csv"
    assert summary.stat().st_mtime > killed
    assert set(pd.read_csv(summary)["model"]) == {"parent", "child", "gkd"}
    resumed = (gkd / "model.safetensors").read_bytes()

    # the same GKD job again, from scratch (its checkpoint went when it finished): the same weights
    assert not state.parent.exists()
    r = subprocess.run([*cmd, "--forcerun", "gkd", "--", str(gkd.relative_to(wd))], capture_output=True, text=True,
                       env=venv_env)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "resuming" not in (wd / "results/micro/logs/gkd" / f"{SOLUTION}.log").read_text()
    assert (gkd / "model.safetensors").read_bytes() == resumed
