"""Stages say what they read: each declares its config keys (config.STAGE_KEYS), the rules pass
exactly those, and a key outside the declaration stops the stage with the key named."""

import argparse
import json
import shlex

import pytest

from puzzle import cli
from puzzle import config as pzc


def _schema_has(path: list[str]) -> bool:
    node = pzc.schema()
    for part in path:
        if part.startswith("{"):
            node = node["additionalProperties"]
        elif part in node.get("properties", {}):
            node = node["properties"][part]
        else:
            return False
    return True


@pytest.mark.parametrize("stage", sorted(pzc.STAGE_KEYS))
def test_every_declared_key_is_a_schema_key_of_a_cli_stage(stage):
    assert stage in cli.STAGES
    for key in pzc.STAGE_KEYS[stage]:
        assert _schema_has(key.split(".")), f"{stage}: {key}"


def test_stage_after_names_known_stages_and_reaches_the_data():
    for stage, after in pzc.STAGE_AFTER.items():
        assert set(after) <= set(pzc.STAGE_AFTER), stage
    assert pzc.upstream_stages("evaluate") == ["activations", "assemble", "bld", "costs", "data", "gkd", "parent",
                                               "score", "scores", "search"]
    assert pzc.upstream_stages("data") == []


def test_a_stage_given_a_key_it_does_not_declare_stops_with_the_key_named(capsys):
    cfg = json.dumps({"gkd": {"steps": 3}, "scoring": {"seq_len": 64}})
    code = cli.main(
        ["gkd", "--cfg", cfg, "--parent", "p", "--child", "c", "--train", "t", "--valid", "v", "--out", "o"]
    )
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("puzzle gkd: config error: --cfg key 'scoring': stage 'gkd' does not read it;")
    # a declared section with an undeclared key inside: the dotted key is named
    ns = argparse.Namespace(stage="activations", cfg=json.dumps({"parent": {"path": None, "train": {"steps": 5}}}))
    with pytest.raises(pzc.ConfigError, match=r"--cfg key 'parent\.train\.steps': stage 'activations'"):
        pzc.from_args(ns)


def test_a_stage_reading_an_undeclared_key_is_told_which():
    ns = argparse.Namespace(stage="activations", cfg=pzc.stage_arg(pzc.validate({}), "activations").strip("'"))
    cfg = pzc.from_args(ns)
    assert cfg["parent"]["train"]["seq_len"] == 256 and cfg["activations"]["batch_size"] == 16
    with pytest.raises(pzc.UndeclaredKey, match=r"stage 'activations' reads config key 'parent\.train\.steps'"):
        cfg["parent"]["train"]["steps"]
    with pytest.raises(pzc.UndeclaredKey, match="'gkd'"):
        cfg["gkd"]
    # a whole config file gives the same view: the declaration holds however the stage is called
    assert sorted(pzc.stage_config(pzc.validate({}), "activations")) == sorted(cfg)


def test_stage_arg_round_trips_through_the_stage_it_is_for():
    whole = pzc.validate({"seed": 4, "scoring": {"seq_len": 64}, "gkd": {"steps": 9}})
    for stage in pzc.STAGE_KEYS:
        arg = shlex.split(pzc.stage_arg(whole, stage, target="local"))[0]
        cfg = pzc.from_args(argparse.Namespace(stage=stage, cfg=arg))
        assert json.loads(json.dumps(cfg)) == json.loads(arg), stage  # nothing added, nothing lost


def test_upstream_digest_changes_only_with_upstream_keys():
    base = pzc.validate({})
    gkd_changed = pzc.validate({"gkd": {"lr": 0.005}})
    eval_changed = pzc.validate({"evaluate": {"repeats": 2}})
    assert pzc.upstream(base, "evaluate") != pzc.upstream(gkd_changed, "evaluate")
    assert pzc.upstream(base, "evaluate") == pzc.upstream(eval_changed, "evaluate")  # its own keys are its cfg
    assert pzc.upstream(base, "gkd") == pzc.upstream(gkd_changed, "gkd")
    # another costs target's settings do not touch a solution planned on the first
    other = pzc.validate({"costs": {"targets": {"local": {"measure": True}, "b": {"device": "h100_sxm"}}}})
    other2 = pzc.deep_merge(other, {"costs": {"targets": {"b": {"memory_gb": 40}}}})
    assert pzc.upstream(other, "search", target="local") == pzc.upstream(other2, "search", target="local")
    assert pzc.upstream(other, "search", target="b") != pzc.upstream(other2, "search", target="b")
