"""Multi-process GKD runs for the tests: torch.multiprocessing.spawn, one gloo group on the CPU set
up as torchrun would (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). Each rank runs the
same list of jobs in that one group (gkd.train joins an existing group), so the processes start
and import once."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import torch
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


def _shards(rank: int, world: int, port: int, path: str, out: str) -> None:
    """GKD's child loading on one rank (built on meta, FSDP2-sharded, sharding.materialize in float32); writes
    out/rank_<r>.json: the peak RSS growth of the load, the model's float32 bytes, and whether every local shard
    equals its slice of the stored tensor (read after the measurement)."""
    from safetensors.torch import load_file
    from torch.distributed.tensor import DTensor

    from puzzle import checkpoint, sharding
    from rss_worker import reset_peak, status

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    group = sharding.join(torch.device("cpu"))
    model = checkpoint.empty(path, torch.float32)
    sharding.shard(model, model, group, torch.float32)
    base = reset_peak()
    sharding.materialize(model, path, group.device, torch.float32)
    rss = status("VmHWM") - base
    stored = load_file(f"{path}/model.safetensors")
    stored["lm_head.weight"] = stored["model.embed_tokens.weight"]  # tied: one tensor in the file
    equal, placements = [], set()
    for name, p in model.named_parameters(remove_duplicate=False):
        local = p.to_local() if isinstance(p, DTensor) else p
        placements.add(repr(p.placements) if isinstance(p, DTensor) else "replica")
        equal.append(torch.equal(local, torch.chunk(stored[name].float(), world)[rank]))
    fresh = checkpoint.empty(path, torch.float32).model.rotary_emb.inv_freq
    result = {"rss_bytes": rss, "model_bytes": 4 * sum(t.numel() for k, t in stored.items() if k != "lm_head.weight"),
              "params": len(equal), "all_equal": all(equal), "placements": sorted(placements),
              "tied": model.lm_head.weight is model.model.embed_tokens.weight,
              "rope": torch.equal(model.model.rotary_emb.inv_freq, fresh)}
    Path(out, f"rank_{rank}.json").write_text(json.dumps(result))
    sharding.leave(group)


def shards(world: int, path: str | Path, out: str | Path) -> list[dict[str, Any]]:
    """_shards on `world` gloo processes; each rank's result."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_shards, args=(world, port, str(path), str(out)), nprocs=world)
    return [json.loads(Path(out, f"rank_{r}.json").read_text()) for r in range(world)]
