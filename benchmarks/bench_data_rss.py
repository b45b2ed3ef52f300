"""Peak memory and time of the data stage on a generated ~300 MB jsonl, this checkout beside an older one.

    python benchmarks/bench_data_rss.py [--old-src /path/to/older/checkout/src] [--mb 300] [--workers 2]

Writes the jsonl of tests/jsonl_corpus.py and a BPE that learned its 8 documents, then runs `data.run` on it
(data.source: files, that tokenizer) in a fresh process per checkout and prints the stage's seconds, the peak RSS
of the main process (and after its imports alone) and of its largest worker, and the tokens (equal for both: every
document, each + EOS)."""

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

from jsonl_corpus import write_repeated_jsonl  # noqa: E402

_RUN = """
import json, resource, sys, time
from puzzle import config as pzc, data
jsonl, tok, out, workers = sys.argv[1:5]
cfg = {"source": "files", "files": [jsonl], "tokenizer": {"path": tok}}
if "workers" in pzc.schema()["properties"]["data"]["properties"]:  # an older checkout reads in one process
    cfg["workers"] = int(workers)
data.load_tokenizer(tok)
imports = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10
t = time.time()
meta = data.run(pzc.validate({"data": cfg}), out)["files"]
print(json.dumps({"seconds": time.time() - t, "imports_mib": imports,
                  "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10,
                  "worker_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss >> 10,
                  "tokens": sum(m["tokens"] for m in meta["splits"].values())}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old-src", type=Path, help="an older checkout's src folder, measured beside this one")
    ap.add_argument("--mb", type=int, default=300, help="size of the generated jsonl")
    ap.add_argument("--workers", type=int, default=2, help="data.workers of this checkout")
    args = ap.parse_args()
    srcs = {"new": REPO / "src", **({"old": args.old_src} if args.old_src else {})}
    with tempfile.TemporaryDirectory() as tmp:
        jsonl = Path(tmp) / "big.jsonl"
        docs, repeats = write_repeated_jsonl(jsonl, args.mb * 10**6)
        sys.path.insert(0, str(REPO / "src"))
        from puzzle import data

        data.train_tokenizer(docs, 1200, Path(tmp) / "tok")
        print(f"{jsonl.stat().st_size / 1e6:.0f} MB jsonl, {repeats * len(docs):,} documents")
        for name, src in srcs.items():
            env = {**os.environ, "PYTHONPATH": str(src), "OMP_WAIT_POLICY": "PASSIVE"}
            r = subprocess.run([sys.executable, "-c", _RUN, str(jsonl), str(Path(tmp) / "tok"), str(Path(tmp) / name),
                                str(args.workers)], env=env, capture_output=True, text=True)
            if r.returncode:
                print(f"{name}: failed\n{r.stderr[-2000:]}")
                continue
            m = json.loads(r.stdout.splitlines()[-1])
            print(f"{name}: {m['seconds']:.1f} s, peak RSS {m['rss_mib']} MiB ({m['imports_mib']} MiB after imports, "
                  f"largest worker {m['worker_rss_mib']} MiB), {m['tokens']:,} tokens")


if __name__ == "__main__":
    main()
