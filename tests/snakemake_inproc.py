"""Run several `snakemake` command lines in one Python process (python tests/snakemake_inproc.py
JSON): the first pays for importing snakemake, torch and the package, the rest take about a second
each. Prints {name: {"exit": code or message, "out": stdout + stderr}} as JSON."""

import contextlib
import io
import json
import sys

import snakemake.cli

results = {}
for name, argv in json.loads(sys.argv[1]).items():
    buf = io.StringIO()
    code = 0
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        try:
            snakemake.cli.main(argv)
        except SystemExit as e:  # the Snakefile's config errors exit with their one line
            code = e.code
        except Exception as e:  # noqa: BLE001 - reported to the test, which names the case
            code = f"{type(e).__name__}: {e}"
    results[name] = {"exit": code, "out": buf.getvalue()}
print(json.dumps(results))
