import json
import shlex
import subprocess
import sys

import pytest
import yaml

from puzzle import config as pzc


def test_defaults_fill_every_section():
    cfg = pzc.validate({})
    assert cfg["experiment"] == "default"
    assert cfg["parent"]["train"]["steps"] == 2000
    assert cfg["search_space"]["ffn"]["ratios"] == [0.87, 0.75, 0.5, 0.25, 0.2, 0.1]
    assert cfg["data"]["tokenizer"] == {"path": None, "vocab_size": 4096, "train_chars": 100_000_000}
    assert cfg["data"]["workers"] is None


def test_shipped_configs_validate(repo):
    cfg = pzc.load(repo / "config" / "config.yaml")
    assert cfg["parent"]["train"]["num_kv_heads"] == 4  # the embedded default parent is multi-head
    micro = pzc.load(repo / "config" / "config.yaml", yaml.safe_load((repo / ".test/config/config.yaml").read_text()))
    assert micro["experiment"] == "micro" and micro["parent"]["train"]["num_layers"] == 2


@pytest.mark.parametrize(
    "cfg, message",
    [
        ({"seed": "zero"}, 'config error: seed = "zero": expected integer'),
        ({"parent": {"train": {"steps": -5}}}, "config error: parent.train.steps = -5: expected a number >= 1"),
        ({"parent": {"train": {"lr": 0}}}, "config error: parent.train.lr = 0: expected a number > 0"),
        (
            {"data": {"corpus": "news"}},
            "config error: data.corpus = \"news\": expected one of ['mixed', 'python', 'bible']",
        ),
        (
            {"data": {"tokenizer": {"vocab": 5}}},
            "config error: unknown key 'data.tokenizer.vocab': expected one of ['path', 'train_chars', 'vocab_size']",
        ),
        (
            {"parent": {"path": "/no/such/checkpoint"}},
            'config error: parent.path = "/no/such/checkpoint": expected a path that exists',
        ),
        (
            {"parent": {"train": {"num_heads": 4, "num_kv_heads": 3}}},
            "config error: parent.train.num_kv_heads = 3: expected a divisor of parent.train.num_heads = 4",
        ),
        (
            {"data": {"source": "files"}},
            "config error: data.files = []: expected at least one file when data.source = files",
        ),
    ],
)
def test_bad_values_fail_in_one_line_naming_key_value_and_expectation(cfg, message):
    with pytest.raises(pzc.ConfigError) as err:
        pzc.validate(cfg)
    assert str(err.value) == message
    assert "\n" not in str(err.value)


def test_stage_arg_carries_the_declared_keys_and_round_trips():
    cfg = pzc.validate({"seed": 3})
    raw = json.loads(shlex.split(pzc.stage_arg(cfg, "data"))[0])
    assert raw == {"seed": 3, "parent": {"path": None}, "data": cfg["data"]}
    assert pzc.validate(raw)["seed"] == 3
    # a placeholder takes one key: the costs job of one target carries that target only
    raw = json.loads(shlex.split(pzc.stage_arg(cfg, "costs", target="local"))[0])
    assert raw["costs"]["targets"] == {"local": cfg["costs"]["targets"]["local"]}


def test_cli_validate_reports_bad_config(tmp_path, venv_env):
    bad = tmp_path / "bad.yaml"
    bad.write_text("parent:\n  train:\n    batch_size: 0\n")
    r = subprocess.run(
        [sys.executable, "-m", "puzzle", "validate", "--config", str(bad)],
        capture_output=True,
        text=True,
        env=venv_env,
    )
    assert r.returncode == 2
    assert r.stderr.strip() == "puzzle validate: config error: parent.train.batch_size = 0: expected a number >= 1"
