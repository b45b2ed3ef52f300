"""Nothing bad gets in: every bad config value of the reliability probe stops before any job with
one line naming key, value and expectation, from both entry points (`puzzle validate` and the
Snakefile), and values that reach a shell command (paths, names, budgets) are either refused or
quoted so that nothing in them runs (RELIABILITY.md section 1)."""

import json
import shlex
import subprocess
import sys

import pytest
import yaml

from conftest import REPO
from puzzle import cli
from puzzle import config as pzc

LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
         "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 512,
         "max_position_embeddings": 4096}

NO_SPACE = {"attention": {"kv_heads": [], "linear": False, "no_op": False},
            "ffn": {"ratios": [], "linear": False, "no_op": False}}

# case -> (config override, the one line both entry points print)
BAD = {
    "throughput_fast": ({"search": {"throughput": "fast"}}, "config error: search.throughput = 'fast': expected"),
    "memory_negative": ({"search": {"memory": "-1GiB"}}, "config error: search.memory = '-1GiB': expected"),
    "memory_injection": (
        {"search": {"memory": "1GiB; rm -rf x"}},
        "config error: search.memory = '1GiB; rm -rf x': expected",
    ),
    "sweep_fast": ({"paper": {"sweep": ["1.5x", "fast"]}}, "config error: paper.sweep.1 = 'fast': expected"),
    "gkd_loss_off": (
        {"gkd": {"loss": {"cosine": False, "kl": False, "lm": False}}},
        'config error: gkd.loss = {"cosine": false, "kl": false, "lm": false}: expected at least one term true',
    ),
    "duplicate_scenarios": (
        {
            "costs": {
                "scenarios": [
                    {"name": "a", "input_len": 8, "output_len": 8},
                    {"name": "a", "input_len": 16, "output_len": 8},
                ]
            }
        },
        'config error: costs.scenarios.name = "a": expected a name used once in costs.scenarios',
    ),
    "empty_space": ({"search_space": NO_SPACE}, "config error: search_space = "),
    "seq_len_1e8": (
        {"scoring": {"seq_len": 100000000}},
        "config error: scoring.seq_len = 100000000: expected at most the parent's max_position_embeddings = 2048",
    ),
    "kv_heads_3_of_4": (
        {"parent": {"train": {"num_heads": 4, "num_kv_heads": 3}}},
        "config error: parent.train.num_kv_heads = 3: expected a divisor of parent.train.num_heads = 4",
    ),
    "space_kv_heads_3": (
        {"search_space": {"attention": {"kv_heads": [3]}}},
        "config error: search_space.attention.kv_heads.0 = 3: expected a divisor of the parent's 4 KV heads",
    ),
    "target_h200": (
        {"search": {"target": "h200"}},
        'config error: search.target = "h200": expected one of costs.targets',
    ),
    "scenario_missing": (
        {"search": {"scenario": "nope"}},
        'config error: search.scenario = "nope": expected null or one of',
    ),
    "bld_corpus": (
        {"bld": {"corpus": "python"}},
        "config error: bld.corpus = \"python\": expected one of ['mixed'] (data.corpus + data.extra_corpora)",
    ),
    "scoring_corpus": (
        {"scoring": {"corpus": "bible"}},
        "config error: scoring.corpus = \"bible\": expected one of ['mixed'] (data.corpus + data.extra_corpora)",
    ),
    "steps_negative": (
        {"parent": {"train": {"steps": -5}}},
        "config error: parent.train.steps = -5: expected a number >= 1",
    ),
    # names reach file names and shell commands: refused by the schema's patterns
    "scenario_payload": (
        {
            "costs": {"scenarios": [{"name": "tiny;rm -rf x;touch pwned_sc;#", "input_len": 8, "output_len": 8}]},
            "search": {"scenario": "tiny;rm -rf x;touch pwned_sc;#"},
        },
        'scenario = "tiny;rm -rf x;touch pwned_sc;#": expected a string matching',
    ),
    "throughput_payload": (
        {"search": {"throughput": "1.3x;touch$IFS.pwned_tp;#"}},
        "config error: search.throughput = '1.3x;touch$IFS.pwned_tp;#': expected",
    ),
    "throughput_subshell": (
        {"search": {"throughput": "$(touch pwned_ts)"}},
        "config error: search.throughput = '$(touch pwned_ts)'",
    ),
    "results_dir_braces": (
        {"results_dir": "out${IFS}x"},
        'config error: results_dir = "out${IFS}x": expected a non-empty path without { or }',
    ),
}

# accepted values that reach shell commands: they must arrive there quoted, as one argument
PAYLOADS = {
    "results_dir_metachars": "out;touch pwned_rd;#",
    "results_dir_space": "my results",
    "parent_path_metachars": "parent;touch pwned_pp;#",
    "parent_path_subshell": "parent$(touch pwned_pp2)",
}


def _write(path, obj):
    path.write_text(yaml.safe_dump(obj))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every case as `snakemake -n -p`, in one process (tests/snakemake_inproc.py)."""
    repo = REPO
    root = tmp_path_factory.mktemp("bad_inputs")
    files, argv = {}, {}
    for name, (over, _) in BAD.items():
        files[name] = _write(root / f"{name}.yaml", over)
    (root / "syntax.yaml").write_text("search:\n  throughput: [1.5x\nparent: {}\n")
    files["yaml_syntax"] = root / "syntax.yaml"
    text = root / "train.txt"
    text.write_text("hello world\n")
    for name, value in PAYLOADS.items():
        if name.startswith("parent_path"):
            parent = root / value
            parent.mkdir()
            (parent / "config.json").write_text(json.dumps(LLAMA))
            over = {"parent": {"path": str(parent)}, "data": {"source": "files", "files": [str(text)]}}
        else:
            over = {"results_dir": str(root / value)}
        files[name] = _write(root / f"{name}.yaml", over)
    for name, f in files.items():
        wd = root / "wd" / name
        (wd / "config").mkdir(parents=True)
        (wd / "config" / "config.yaml").write_text((repo / "config" / "config.yaml").read_text())
        argv[name] = [
            "-s",
            str(repo / "workflow" / "Snakefile"),
            "--directory",
            str(wd),
            "-n",
            "-p",
            "--configfile",
            str(f),
        ]
    r = subprocess.run(
        [sys.executable, str(repo / "tests" / "snakemake_inproc.py"), json.dumps(argv)],
        capture_output=True,
        text=True,
        cwd=root,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return root, files, json.loads(r.stdout)


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_value_stops_both_entry_points_before_any_job_with_one_line(case, runs, capsys):
    root, files, results = runs
    line = BAD[case][1]
    got = results[case]
    assert isinstance(got["exit"], str) and got["exit"].startswith("config error: ") and line in got["exit"], (
        case,
        got,
    )
    assert "\n" not in got["exit"] and "Building DAG" not in got["out"]
    # validate gets what the Snakefile gets: the default experiment with the bad value on top
    whole = _write(
        root / f"{case}.whole.yaml",
        pzc.deep_merge(yaml.safe_load((REPO / "config" / "config.yaml").read_text()), BAD[case][0]),
    )
    assert cli.main(["validate", "--config", str(whole)]) == 2
    assert capsys.readouterr().err.strip() == f"puzzle validate: {got['exit']}"  # the same checks, the same line


def test_a_yaml_syntax_error_names_file_and_line(runs, capsys):
    root, files, results = runs
    assert cli.main(["validate", "--config", str(files["yaml_syntax"])]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith(f"puzzle validate: config error: {files['yaml_syntax']}:3:7: not valid YAML (")
        and "\n" not in err
    )
    # Snakemake parses --configfile itself before the Snakefile runs: its own one-line error, no job
    got = results["yaml_syntax"]
    assert got["exit"] == 1 and "not valid JSON or YAML" in got["out"] and "Building DAG" not in got["out"]


def _shell_commands(out):
    return [
        line.removeprefix("Shell command: ")
        for line in out.splitlines()
        if line.startswith("Shell command: ") and line != "Shell command: None"
    ]


@pytest.mark.parametrize("case", sorted(PAYLOADS))
def test_a_path_with_shell_metacharacters_reaches_every_command_as_one_quoted_argument(case, runs):
    root, files, results = runs
    got = results[case]
    assert got["exit"] == 0, got["out"][-3000:]
    commands = _shell_commands(got["out"])
    assert len(commands) >= 10
    payload = PAYLOADS[case]
    seen = 0
    for cmd in commands:
        words = shlex.split(cmd)  # how sh splits it: quoted text stays one word and is never run
        assert "touch" not in words and not any(w.startswith("$(") for w in words), cmd
        for w in words:
            if payload.split(";")[0].split("$")[0] in w and str(root) in w:
                assert payload in w, (w, cmd)  # the whole value inside one word
                seen += 1
    assert seen >= len(commands) // 2
    assert not list(root.rglob("pwned*"))


def test_a_real_run_with_a_spaced_metacharacter_results_dir_writes_there_and_runs_nothing(repo, tmp_path, venv_env):
    results = tmp_path / "my results;touch pwned_real;#"
    cfg = yaml.safe_load((repo / ".test" / "config" / "config.yaml").read_text())
    cfg["results_dir"] = str(results)
    cfg["data"]["max_chars"] = 20000
    wd = tmp_path / "wd"
    (wd / "config").mkdir(parents=True)
    (wd / "config" / "config.yaml").write_text((repo / "config" / "config.yaml").read_text())
    f = _write(tmp_path / "c.yaml", cfg)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(repo / "workflow" / "Snakefile"),
            "--directory",
            str(wd),
            "--cores",
            "1",
            str(results / "micro" / "data" / "mixed" / "meta.json"),
            "--configfile",
            str(f),
        ],
        capture_output=True,
        text=True,
        env=venv_env,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    meta = json.loads((results / "micro" / "data" / "mixed" / "meta.json").read_text())
    assert meta["splits"]["train"]["tokens"] > 0
    assert not list(tmp_path.rglob("pwned*")) and not list(wd.rglob("pwned*"))
