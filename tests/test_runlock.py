"""Stale Snakemake locks (puzzle.runlock): the locks of a dead run on this host go, every other lock stays."""

import json
import os
import socket
import subprocess
import sys

import pytest

from puzzle import runlock


@pytest.fixture
def smk(tmp_path):
    """A .snakemake folder as a run leaves it: its locks, then (onstart) its owner record."""
    d = tmp_path / ".snakemake"
    (d / "locks").mkdir(parents=True)
    (d / "locks" / "0.input.lock").write_text("results/a\n")
    (d / "locks" / "0.output.lock").write_text("results/b\n")
    return d


def own(d, **fields):
    (d / runlock.OWNER).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "start": None,
                                               **fields}))


def dead_pid():
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)


def locks(d):
    return sorted(p.name for p in (d / "locks").iterdir())


def test_the_locks_of_a_dead_run_go(smk):
    pid = dead_pid()
    own(smk, pid=pid)
    msg = runlock.clear_stale(smk)
    assert msg.startswith(f"puzzle: removed the locks of the Snakemake run {pid} on {socket.gethostname()}, which is")
    assert locks(smk) == []
    assert runlock.clear_stale(smk) is None  # nothing left to remove


def test_a_reused_pid_is_not_its_first_owner(smk):
    runlock.record_owner(smk)  # this process, with its start time
    rec = json.loads((smk / runlock.OWNER).read_text())
    assert rec["pid"] == os.getpid() and rec["host"] == socket.gethostname()
    assert runlock.clear_stale(smk) is None and len(locks(smk)) == 2  # alive: kept
    if rec["start"] is None:
        pytest.skip("no /proc: start times unknown")
    own(smk, start=rec["start"] + 1)  # same pid, another process
    assert runlock.clear_stale(smk) is not None and locks(smk) == []


@pytest.mark.parametrize("case", ["alive", "other host", "no owner", "locks newer", "bad record"])
def test_every_other_lock_stays(smk, case):
    if case == "alive":
        own(smk)
    elif case == "other host":
        own(smk, pid=dead_pid(), host=socket.gethostname() + "-other")
    elif case == "locks newer":  # a run that holds the locks and has not recorded itself yet
        own(smk, pid=dead_pid())
        later = (smk / runlock.OWNER).stat().st_mtime_ns + 10**9
        os.utime(smk / "locks" / "0.input.lock", ns=(later, later))
    elif case == "bad record":
        (smk / runlock.OWNER).write_text("{")
    assert runlock.clear_stale(smk) is None
    assert locks(smk) == ["0.input.lock", "0.output.lock"]


def test_no_locks_nothing_to_do(tmp_path):
    assert runlock.clear_stale(tmp_path / ".snakemake") is None
