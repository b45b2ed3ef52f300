"""Multi-process GKD runs for the tests: torch.multiprocessing.spawn, one gloo group on the CPU set
up as torchrun would (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). Each rank runs the
same list of jobs in that one group (gkd.train joins an existing group), so the processes start
and import once."""

from __future__ import annotations

import os
import socket
from typing import Any

import torch.distributed as dist
import torch.multiprocessing as mp

from puzzle import gkd

Job = tuple[dict[str, Any], list[str], "int | None"]  # (config, train's paths, step at which every rank is killed)


def _rank(rank: int, world: int, port: int, jobs: list[Job]) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    dist.init_process_group("gloo")
    real = gkd.sample_windows
    for cfg, paths, kill_at in jobs:

        def windows(tokens, batch, length, seed, step, kill_at=kill_at):
            if step == kill_at:
                raise KeyboardInterrupt("killed")
            return real(tokens, batch, length, seed, step)

        gkd.sample_windows = windows
        try:
            gkd.train(cfg, *paths)
        except KeyboardInterrupt:
            pass
        dist.barrier()
    dist.destroy_process_group()


def run(world: int, jobs: list[Job]) -> None:
    """Each job's gkd.train(config, *paths) on `world` processes, one after another."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank, args=(world, port, jobs), nprocs=world)
