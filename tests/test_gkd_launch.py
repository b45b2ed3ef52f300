"""The GKD job's launch line and SLURM resources (gkd_launch.py), and a dry run of the 2-node line
through stand-ins for srun, scontrol and torchrun that record what would start where."""

import json
import os
import subprocess

import pytest

from puzzle import gkd_launch

SLURM = {"gkd_nodes": 1, "gkd_gpus": 1, "gpu_model": None, "gpu_partition": None}

# srun: runs the command once per node (--nodes=N) with that node's SLURM_NODEID and host name
FAKE_SRUN = r"""#!/usr/bin/env bash
nodes=1
while [[ $1 == --* ]]; do [[ $1 == --nodes=* ]] && nodes=${1#--nodes=}; shift; done
for ((i = 0; i < nodes; i++)); do SLURM_NODEID=$i SLURMD_NODENAME=node-$i "$@" || exit 1; done
"""
FAKE_SCONTROL = r"""#!/usr/bin/env bash
[[ $1 == show && $2 == hostnames && $3 == "node-[0-1]" ]] && printf 'node-0\nnode-1\n'
"""
# torchrun: records its arguments and host, one JSON line per call
FAKE_TORCHRUN = r"""#!/usr/bin/env python3
import json, os, sys
with open(os.environ["RECORD"], "a") as f:
    f.write(json.dumps({"host": os.environ["SLURMD_NODENAME"], "argv": sys.argv[1:]}) + "\n")
"""


def test_one_process_one_node_and_several_nodes_launch_lines():
    assert gkd_launch.launch(1, 1, 8) == "python -m" and gkd_launch.launch(1, 0, 8) == "python -m"
    assert gkd_launch.launch(1, 8, 64) == "torchrun --standalone --nnodes=1 --nproc-per-node=8 -m"
    assert gkd_launch.launch(2, 8, 64).startswith("srun --nodes=2 --ntasks-per-node=1 --cpus-per-task=64 ")
    assert gkd_launch.processes(2, 8) == 16 and gkd_launch.processes(3, 0) == 3  # CPU nodes: one process each


def test_resources_ask_for_the_nodes_gpus_and_tasks_the_launch_uses():
    assert gkd_launch.resources(SLURM) == {"gpu": 1, "nodes": 1}
    assert gkd_launch.resources({**SLURM, "gkd_gpus": 0, "gpu_model": "h100", "gpu_partition": "gpu"}) == {
        "gpu": 0, "nodes": 1}
    one = gkd_launch.resources({**SLURM, "gkd_gpus": 8, "gpu_model": "h100", "gpu_partition": "gpu"})
    assert one == {"gpu": 8, "nodes": 1, "gpu_model": "h100", "slurm_partition": "gpu"}
    two = gkd_launch.resources({**SLURM, "gkd_nodes": 2, "gkd_gpus": 8, "gpu_model": "h100", "gpu_partition": "gpu"})
    # sbatch --nodes=2 --ntasks=2 --gpus-per-node=h100:8 -p gpu: one torchrun per node, 8 ranks each
    assert two == {"nodes": 2, "tasks": 2, "mpi": "srun", "slurm_extra": "--gpus-per-node=h100:8",
                   "slurm_partition": "gpu"}
    assert gkd_launch.resources({**SLURM, "gkd_nodes": 3, "gkd_gpus": 0}) == {"nodes": 3, "tasks": 3, "mpi": "srun"}


@pytest.mark.parametrize("master_addr", [None, "node-1"])
def test_two_node_line_starts_eight_ranks_on_one_rendezvous(tmp_path, master_addr):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in {"srun": FAKE_SRUN, "scontrol": FAKE_SCONTROL, "torchrun": FAKE_TORCHRUN}.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    record = tmp_path / "calls.jsonl"
    env = {k: v for k, v in os.environ.items() if k != "MASTER_ADDR"}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", SLURM_JOB_NODELIST="node-[0-1]", SLURM_JOB_ID="4242",
               RECORD=str(record), **({"MASTER_ADDR": master_addr} if master_addr else {}))
    line = gkd_launch.launch(2, 4, 16) + " puzzle gkd --cfg '{\"a\": 1}' --out 'x y'"
    subprocess.run(["bash", "-euo", "pipefail", "-c", line], env=env, check=True)  # as Snakemake's shell runs it
    calls = [json.loads(s) for s in record.read_text().splitlines()]
    assert [c["host"] for c in calls] == ["node-0", "node-1"]  # one torchrun per node
    endpoint = f"--rdzv-endpoint={master_addr or 'node-0'}:{gkd_launch.RDZV_PORT}"
    for c in calls:
        args = c["argv"]
        assert {"--nnodes=2", "--nproc-per-node=4", "--rdzv-backend=c10d", endpoint, "--rdzv-id=4242"} <= set(args)
        assert args[args.index("-m"):] == ["-m", "puzzle", "gkd", "--cfg", '{"a": 1}', "--out", "x y"]
    assert sum(int(a.split("=")[1]) for c in calls for a in c["argv"] if a.startswith("--nproc-per-node=")) == 8
