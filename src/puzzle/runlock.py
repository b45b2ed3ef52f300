"""Stale Snakemake locks: a run killed with SIGKILL (or an out-of-memory kill, a lost login node)
leaves `.snakemake/locks/*.lock` behind, and the next run of the same command stops with
"Directory cannot be locked" until someone runs `--unlock`.

The Snakefile records who holds the locks once it has them (`record_owner`, from `onstart`) and,
before the next run locks, removes them when that owner is known dead (`clear_stale`): same host,
and its process is gone (or the pid now belongs to a later process). Locks of a live run, of a run
on another host (a shared filesystem), or without an owner record are left alone.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from puzzle.io import write_json

OWNER = "puzzle-lock-owner.json"


def _start_ticks(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot, Linux /proc), telling a reused pid from its
    first owner; None where /proc is not there or the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # field 22; the command name (field 2) is in parentheses and may hold spaces
    return int(stat.rsplit(")", 1)[1].split()[19])


def _alive(pid: int, start: int | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    return start is None or _start_ticks(pid) in (None, start)


def record_owner(snakemake_dir: str | os.PathLike = ".snakemake") -> None:
    """Note this process (the Snakemake run that holds the locks) as their owner."""
    pid = os.getpid()
    write_json(Path(snakemake_dir) / OWNER, {"host": socket.gethostname(), "pid": pid, "start": _start_ticks(pid)})


def clear_stale(snakemake_dir: str | os.PathLike = ".snakemake") -> str | None:
    """Remove the locks of a dead run; returns a line saying so, or None when nothing was removed."""
    locks = sorted((Path(snakemake_dir) / "locks").glob("*.lock"))
    owner_path = Path(snakemake_dir) / OWNER
    if not locks or not owner_path.exists():
        return None
    # locks newer than the record belong to a run that has not recorded itself yet
    if max(p.stat().st_mtime_ns for p in locks) > owner_path.stat().st_mtime_ns:
        return None
    try:
        owner = json.loads(owner_path.read_text())
        host, pid, start = owner["host"], int(owner["pid"]), owner["start"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if host != socket.gethostname() or _alive(pid, start):
        return None
    for p in locks:
        p.unlink(missing_ok=True)
    return (f"puzzle: removed the locks of the Snakemake run {pid} on {host}, which is no longer running "
            "(killed?); its unfinished jobs are redone (rerun-incomplete)")
