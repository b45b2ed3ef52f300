"""The paper target's plan (puzzle.paper.plan): each artifact's children, inputs and arguments, the
BLD ablations of Tables 8-10, and every solution id the workflow plans round-tripping through SolutionId."""

import shlex
from pathlib import Path

import pytest
import yaml

from puzzle import config as pzc
from puzzle.naming import SolutionId, solution_ids
from puzzle.paper.plan import Plan, bld_variants, gkd_budget, narrow_corpus_error, scratch_error

REPO = Path(__file__).resolve().parents[1]


def plan(cfg):
    return Plan(cfg, "res/x", lambda s: [f"lib-of:{s}"])


def default(overrides=None):
    """The embedded default experiment (config/config.yaml) with overrides."""
    return pzc.load(REPO / "config/config.yaml", overrides)


def test_each_ablation_child_is_the_main_child_with_its_suffix():
    p = plan(default({"paper": {"random_seeds": [1, 2]}}))
    main = "local/gen_32_128/throughput_2.17x"
    a = p.artifacts()
    assert p.main == main and a["table1"].children == [main]
    assert a["table13"].children == [main, f"{main}@greedy"]
    assert a["table15"].children == [
        main,
        f"{main}@random-s1",
        f"{main}@random-s2",
        f"{main}@random-s1-scratch",
        "local/gen_32_128/unconstrained@scratch",
    ]
    assert a["table8"].children == [main, f"{main}@bld-coupled"]
    assert a["table8"].inputs == [[f"lib-of:{main}"], [f"lib-of:{main}@bld-coupled"]]
    assert a["table8"].args.endswith("--library res/x/library --library res/x/paper/bld/coupled/library")
    assert a["fig6"].children == [] and a["fig6"].files == [("res/x/paper/fig6.png", True)]
    assert a["table2"].files == [("res/x/paper/table2.csv", True), ("res/x/paper/table2.md", False)]


def test_argument_strings_quote_every_path():
    p = Plan(default({"results_dir": "my results"}), "my results/x", lambda s: [])
    words = shlex.split(p.artifacts()["fig8"].args)
    assert words == [
        "--sweep",
        "my results/x/paper/sweep",
        "--costs",
        "my results/x/costs/local/costs.csv",
        "--solution",
        "my results/x/search/local/gen_32_128/throughput_2.17x/solution.json",
    ]
    child = shlex.split(p.artifacts()["table1"].args)
    assert child == [
        "--child",
        "my results/x/search/local/gen_32_128/throughput_2.17x/solution.json",
        "my results/x/eval/local/gen_32_128/throughput_2.17x",
    ]


def test_the_loss_variant_equal_to_gkd_loss_is_the_experiments_own_gkd():
    p = plan(default({"paper": {"gkd_losses": ["cosine+kl", "kl"]}}))
    assert p.loss_dir == {
        "cosine+kl": "res/x/gkd/local/gen_32_128/throughput_2.17x",
        "kl": "res/x/paper/gkd_loss/kl/local/gen_32_128/throughput_2.17x",
    }
    assert p.loss_config("kl") == {"cosine": False, "kl": True, "lm": False}


def planned_ids(cfg):
    """Every solution id the workflow plans for a config: its own and each paper artifact's children."""
    p = plan(cfg)
    return [str(s) for s in solution_ids(cfg)] + [c for a in p.artifacts().values() for c in a.children]


@pytest.mark.parametrize("layers", [[], [".test/config/config.yaml"]], ids=["default", "micro"])
def test_every_planned_solution_id_round_trips_through_the_one_type(layers, repo, monkeypatch):
    monkeypatch.chdir(repo)
    raw = yaml.safe_load((REPO / "config/config.yaml").read_text())
    for layer in layers:
        raw = pzc.deep_merge(raw, yaml.safe_load((REPO / layer).read_text()))
    ids = planned_ids(pzc.validate(raw))
    assert len(set(ids)) > 10
    for text in ids:
        assert str(SolutionId.parse(text)) == text


def test_bld_variants_are_the_paper_tables_8_to_10_libraries():
    cfg = pzc.validate({})
    variants = bld_variants(cfg)
    assert sorted(variants) == ["coupled", "narrow", "tokens131072", "tokens65536"]
    assert variants["coupled"]["bld"]["mode"] == "coupled" and variants["coupled"]["scoring"] == cfg["scoring"]
    assert variants["narrow"]["bld"]["corpus"] == variants["narrow"]["scoring"]["corpus"] == "bible"
    assert variants["tokens65536"]["bld"] == {**cfg["bld"], "tokens": 65536}
    # a coupled experiment's Table 8 library is the decoupled one; a budget equal to bld.tokens is the experiment's
    other = pzc.validate({"bld": {"mode": "coupled", "tokens": 65536}, "paper": {"artifacts": ["table8", "table10"]}})
    assert sorted(bld_variants(other)) == ["decoupled", "tokens131072"]
    assert bld_variants(pzc.validate({"paper": {"artifacts": ["table1"]}})) == {}


@pytest.mark.parametrize(
    "cfg, message",
    [
        ({"data": {"corpus": "bible"}}, "paper.narrow_corpus = 'bible': expected a corpus other than data.corpus"),
        ({"data": {"source": "files", "files": ["pyproject.toml"]}}, "expected data.source = embedded"),
    ],
)
def test_a_narrow_corpus_that_cannot_be_built_is_named_and_left_out(cfg, message, repo, monkeypatch):
    monkeypatch.chdir(repo)
    cfg = pzc.validate(cfg)
    assert message in narrow_corpus_error(cfg) and "narrow" not in bld_variants(cfg)
    assert narrow_corpus_error(pzc.validate({})) is None


def test_table6_budgets_scale_the_gkd_key_that_is_set_and_the_whole_budget_is_the_experiments_gkd():
    p = plan(default({"paper": {"gkd_budgets": [0.5, 1, 0.25]}}))  # gkd: 100 steps of 8 x 256
    main = "local/gen_32_128/throughput_2.17x"
    assert p.budget_dir == {
        "tokens204800": f"res/x/gkd/{main}",
        "tokens102400": f"res/x/paper/gkd_budget/tokens102400/{main}",
        "tokens51200": f"res/x/paper/gkd_budget/tokens51200/{main}",
    }
    assert p.budget_config("tokens51200")["gkd"]["steps"] == 25
    words = shlex.split(p.artifacts()["table6"].args)
    assert words[words.index("--parent") + 1] == "res/x/parent" and words.count("--budget") == 3
    # a budget in tokens: the tokens scale (steps follow from them in the GKD stage)
    q = plan(default({"gkd": {"tokens": 1000}, "paper": {"gkd_budgets": [0.5, 1]}}))
    assert list(q.budget_dir) == ["tokens1000", "tokens500"] and q.budget_config("tokens500")["gkd"]["tokens"] == 500
    assert gkd_budget(q.cfg, 1e-9) == {"tokens": 1}


def test_table5_trains_the_parents_training_with_the_scratch_shape_or_names_why_it_cannot(tmp_path):
    cfg = default({"paper": {"scratch": {"num_layers": 2, "num_kv_heads": 2}}})
    p = plan(cfg)
    train = p.scratch_config["parent"]["train"]
    assert {k: v for k, v in train.items() if cfg["parent"]["train"][k] != v} == {"num_layers": 2, "num_kv_heads": 2}
    assert p.artifacts()["table5"].inputs[-1] == p.scratch_dir == "res/x/paper/scratch/model"
    assert scratch_error(cfg) is None
    bad = default({"paper": {"scratch": {"num_kv_heads": 3}}})
    assert scratch_error(bad) == (
        "config error: paper.scratch = {'num_kv_heads': 3}: expected hidden_size 128 divisible by num_heads 4, "
        "divisible by num_kv_heads 3"
    )
    (tmp_path / "config.json").write_text((REPO / "tests/data/Llama-3.1-8B.config.json").read_text())
    real = pzc.validate({"parent": {"path": str(tmp_path)}})
    assert scratch_error(real).startswith("config error: paper.artifacts has table5: the model trained from scratch")
