"""Solution ids: one type parses and writes every name the workflow gives a child."""

import pytest

from puzzle import config as pzc
from puzzle.config import ConfigError
from puzzle.naming import SolutionId, budget_value, solution_ids


@pytest.mark.parametrize(
    "text, fields",
    [
        ("local/chat/throughput_2x", dict(target="local", scenario="chat", kind="throughput", value="2x")),
        (
            "local/chat/throughput_2x@random-s3-scratch",
            dict(
                target="local", scenario="chat", kind="throughput", value="2x", search="random", seed=3, scratch=True
            ),
        ),
        ("unconstrained@scratch", dict(target=None, scenario=None, kind=None, scratch=True)),
        (
            "throughput_2.17x@bld-tokens65536",
            dict(target=None, scenario=None, kind="throughput", value="2.17x", library="tokens65536"),
        ),
        (
            "h100/gen/memory_80GiB@lm_loss",
            dict(target="h100", scenario="gen", kind="memory", value="80GiB", search="lm_loss"),
        ),
        (
            "t/s/latency_0.25s@bld-coupled-scratch",
            dict(target="t", scenario="s", kind="latency", value="0.25s", library="coupled", scratch=True),
        ),
    ],
)
def test_each_part_of_an_id_is_parsed_and_written_back(text, fields):
    sid = SolutionId.parse(text)
    assert sid == SolutionId(**fields) and str(sid) == text


@pytest.mark.parametrize(
    "text, message",
    [
        ("throughput_2x@Fast!", "budget suffix @Fast!"),
        ("speed_2x", "budget 'speed_2x': expected <kind>_<value>"),
        ("a/throughput_2x", "expected target/scenario/budget"),
        ("throughput_2x@random-s03", "expected it written as 'throughput_2x@random-s3'"),
        ("throughput_1500_tok_s", "budget 'throughput_1500_tok_s'"),
    ],
)
def test_what_no_writer_writes_is_refused_in_one_line(text, message):
    with pytest.raises(ConfigError, match=message):
        SolutionId.parse(text)


def test_budget_values_drop_spaces_and_the_tok_s_unit():
    assert [budget_value(v) for v in ("1500 tok/s", 1500, "2.17x", "80 GiB", "250ms", "3000 Tokens/s")] == [
        "1500",
        "1500",
        "2.17x",
        "80GiB",
        "250ms",
        "3000",
    ]
    with pytest.raises(ConfigError, match="budget 'a/b'"):
        budget_value("a/b")


def test_a_sweep_point_in_tok_s_names_the_same_folder_everywhere():
    cfg = pzc.validate({"search": {"sweep": ["1500 tok/s", "2x"], "sweep_resource": "throughput"}})
    assert [s.budget for s in solution_ids(cfg)] == ["throughput_1500", "throughput_2x"]


@pytest.mark.parametrize(
    "overrides", [{}, {"search": {"throughput": None}}, {"search": {"memory": "0.5x", "throughput": None}}]
)
def test_planned_ids_round_trip(overrides):
    for sid in solution_ids(pzc.validate(overrides)):
        assert SolutionId.parse(str(sid)) == sid
