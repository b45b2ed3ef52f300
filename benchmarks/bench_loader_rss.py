"""Peak host memory of every model loader, as a multiple of the loaded model's bytes, each in a fresh process.

    python benchmarks/bench_loader_rss.py [--old-src /path/to/older/checkout/src]

Saves the random ~168M-parameter bf16 Llama of tests/rss_worker.py once, then runs tests/rss_worker.py for every
loader entry point with this checkout's `src` (and, given --old-src, that one's beside it; an entry an older
checkout lacks prints as failed)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from rss_worker import entries, save_random_llama  # noqa: E402


def measure(src: Path, parent: Path, out: Path) -> dict[str, str]:
    """{entry: "ratio x of MiB"} of every loader with `src` on the path (one worker, a forked child per entry)."""
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_WAIT_POLICY": "PASSIVE"}
    names = list(entries(str(parent), ""))
    run = subprocess.run([sys.executable, str(REPO / "tests" / "rss_worker.py"), str(parent), str(out), *names],
                         env=env, capture_output=True, text=True)
    cells = {}
    for line in run.stdout.splitlines():
        r = json.loads(line)
        cells[r["entry"]] = (
            r.get("error") or f"{r['rss_bytes'] / r['model_bytes']:.3f}x of {r['model_bytes'] / 2**20:.0f} MiB"
        )
    return cells


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old-src", type=Path, help="an older checkout's src folder, measured beside this one")
    args = ap.parse_args()
    srcs = {"new": REPO / "src", **({"old": args.old_src} if args.old_src else {})}
    with tempfile.TemporaryDirectory() as tmp:
        parent = save_random_llama(Path(tmp) / "parent")
        table = {k: measure(src, parent, Path(tmp) / f"out_{k}") for k, src in srcs.items()}
    print(f"{'entry':26s} " + " ".join(f"{k:>20s}" for k in srcs))
    for entry in entries("", ""):
        print(f"{entry:26s} " + " ".join(f"{table[k].get(entry, 'missing'):>20s}" for k in srcs))


if __name__ == "__main__":
    main()
