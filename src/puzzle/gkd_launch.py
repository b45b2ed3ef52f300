"""How the GKD job is started and what it asks SLURM for (config `slurm.gkd_nodes`, `slurm.gkd_gpus`).

Torch-free: the Snakefile reads it on the login node. One process per GPU (per node on CPU nodes):

    1 process           python -m puzzle gkd ...
    1 node, G GPUs      torchrun --standalone --nnodes=1 --nproc-per-node=G -m puzzle gkd ...
    N nodes, G GPUs     srun --nodes=N --ntasks-per-node=1 ... torchrun --nnodes=N --nproc-per-node=G
                        --rdzv-backend=c10d --rdzv-endpoint=FIRST_NODE:29500 --rdzv-id=$SLURM_JOB_ID -m puzzle gkd ...

For several nodes the job is submitted as snakemake-executor-plugin-slurm's "mpi" kind: its
jobstep then runs the rule's shell on the first node as is (not inside `srun -n1`), and the rule's
own srun starts one torchrun per node, which starts the G ranks there. The rendezvous endpoint is
MASTER_ADDR when set, else the first host of SLURM_JOB_NODELIST, expanded once by the job's shell
so every node gets the same one; SLURM_JOB_ID names the rendezvous.
"""

from __future__ import annotations

from typing import Any

RDZV_PORT = 29500
FIRST_NODE = '"${MASTER_ADDR:-$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)}"'


def processes(nodes: int, gpus_per_node: int) -> int:
    return nodes * max(gpus_per_node, 1)


def launch(nodes: int, gpus_per_node: int, cpus_per_node: int) -> str:
    """The shell words before `puzzle gkd ...` in the rule (they end in `-m`)."""
    per_node = max(gpus_per_node, 1)
    if processes(nodes, gpus_per_node) == 1:
        return "python -m"
    if nodes == 1:
        return f"torchrun --standalone --nnodes=1 --nproc-per-node={per_node} -m"
    return (
        f"srun --nodes={nodes} --ntasks-per-node=1 --cpus-per-task={cpus_per_node} --kill-on-bad-exit=1"
        f" torchrun --nnodes={nodes} --nproc-per-node={per_node} --rdzv-backend=c10d"
        f" --rdzv-endpoint={FIRST_NODE}:{RDZV_PORT} --rdzv-id=\"$SLURM_JOB_ID\" -m"
    )


def resources(slurm: dict[str, Any]) -> dict[str, Any]:
    """The GKD rule's `resources` (what sbatch gets through the executor plugin)."""
    nodes, gpus, model = slurm["gkd_nodes"], slurm["gkd_gpus"], slurm["gpu_model"]
    place = {"gpu_model": model} if model else {}
    if gpus and slurm["gpu_partition"]:
        place["slurm_partition"] = slurm["gpu_partition"]
    if nodes == 1:
        # nodes=1: sbatch --gpus=N alone may spread the GPUs over several nodes
        return {"gpu": gpus, "nodes": 1, **(place if gpus else {})}
    # One task per node (torchrun starts the ranks); GPUs per node through --gpus-per-node, since the
    # plugin's `gpu` is a job total and its `tasks` would become --ntasks-per-gpu.
    out: dict[str, Any] = {"nodes": nodes, "tasks": nodes, "mpi": "srun"}
    if gpus:
        out["slurm_extra"] = f"--gpus-per-node={model + ':' if model else ''}{gpus}"
        if "slurm_partition" in place:
            out["slurm_partition"] = place["slurm_partition"]
    return out
