"""The search refuses tables it cannot trust, before any solve: one test per way a table goes bad
(a row deleted, a file cut short, an implausible KL, a NaN, a missing non-block cost row)."""

import json

import pytest

from puzzle.cli import main as cli
from puzzle.config import ConfigError
from puzzle.search.synthetic import synthetic_tables
from puzzle.search.tables import check_complete, load_costs, load_scores

SCORES = r"scores: file '.*scores\.csv':"  # every error names the file it read
ATTN, FFN = ("attn_kv8", "attn_kv2", "attn_noop"), ("ffn_100", "ffn_50", "ffn_noop")


@pytest.fixture
def tables(tmp_path):
    scores, costs = synthetic_tables(4, seed=3, attention=ATTN, ffn=FFN, batches=(1, 8))
    scores.to_csv(tmp_path / "scores.csv", index=False)
    costs.to_csv(tmp_path / "costs.csv", index=False)
    return tmp_path


def search(d, *extra):
    return cli(
        [
            "search",
            "--scores",
            str(d / "scores.csv"),
            "--costs",
            str(d / "costs.csv"),
            "--throughput",
            "1.5x",
            "--out",
            str(d / "solution.json"),
            *extra,
        ]
    )


def rewrite(path, edit):
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(edit(lines)))


def test_intact_tables_are_searched(tables):
    assert len(load_scores(tables / "scores.csv")) == 4 * 9 and search(tables) == 0


def test_a_deleted_score_row_stops_the_search(tables, capsys):
    rewrite(tables / "scores.csv", lambda lines: lines[:12] + lines[13:])  # layer 1 loses one composition
    with pytest.raises(ConfigError, match=rf"^{SCORES} layer 1 lacks 1 of the 9 compositions .*every layer x variant"):
        load_scores(tables / "scores.csv")
    assert search(tables) == 2 and "layer 1 lacks 1 of the 9" in capsys.readouterr().err
    assert not (tables / "solution.json").exists()


@pytest.mark.parametrize("fraction", [0.6, 0.8, 0.97])
def test_a_scores_file_cut_short_stops_the_search(tables, fraction):
    data = (tables / "scores.csv").read_bytes()
    (tables / "scores.csv").write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ConfigError, match=rf"^{SCORES} (column \w+ is missing|layer \d+ lacks)"):
        load_scores(tables / "scores.csv")


def test_a_file_cut_at_a_layer_boundary_is_short_of_the_parents_layers(tables):
    scores = load_scores(tables / "scores.csv")
    with pytest.raises(ConfigError, match=r"^scores: 3 layers but the parent has num_hidden_layers = 4"):
        check_complete(scores[scores["layer"] < 3], 4)
    check_complete(scores, 4)


def test_a_negative_kl_stops_the_search(tables):
    rewrite(
        tables / "scores.csv",
        lambda lines: lines[:5] + [lines[5].replace(lines[5].split(",")[3], "-100", 1)] + lines[6:],
    )
    with pytest.raises(
        ConfigError, match=rf"^{SCORES} kl < 0 in row 4 \(layer=0, .*kl=-100.0.*expected KL\(parent \|\| model\) >= 0"
    ):
        load_scores(tables / "scores.csv")


@pytest.mark.parametrize("value", ["nan", "inf", ""])
def test_a_nan_or_infinite_score_stops_the_search(tables, value):
    def edit(lines):
        cells = lines[7].rstrip("\n").split(",")
        cells[4] = value  # lm_loss
        return lines[:7] + [",".join(cells) + "\n"] + lines[8:]

    rewrite(tables / "scores.csv", edit)
    with pytest.raises(ConfigError, match=rf"^{SCORES} column lm_loss is missing or not finite in row 6 \(layer=0"):
        load_scores(tables / "scores.csv")


def test_a_missing_non_block_row_stops_the_search(tables):
    rewrite(tables / "costs.csv", lambda lines: [x for x in lines if not (x.startswith("non_block") and ",8," in x)])
    expected = r"^costs: file '.*costs\.csv': 0 non_block rows for scenario 'synthetic' batch 8: expected one"
    with pytest.raises(ConfigError, match=expected):
        load_costs(tables / "costs.csv")


def test_a_metric_nobody_measured_may_be_empty_throughout(tables):
    scores = load_scores(tables / "scores.csv")
    scores.assign(token_acc=float("nan")).to_csv(tables / "scores.csv", index=False)
    assert load_scores(tables / "scores.csv")["token_acc"].isna().all()


def test_every_table_error_names_the_file_it_read(tables):
    path = tables / "scores.csv"
    rewrite(path, lambda lines: lines[:3] + [lines[3].replace(lines[3].split(",")[3], "abc", 1)] + lines[4:])
    with pytest.raises(ConfigError) as e:
        load_scores(path)
    assert str(e.value) == f"scores: file {str(path)!r}: column kl = 'abc' in row 2: expected a number"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match=rf"^scores: file '{path}' is not a text CSV table"):
        load_scores(path)
    path.write_text("")
    with pytest.raises(ConfigError, match=rf"^scores: file '{path}' is not a readable CSV table"):
        load_scores(path)
    path.write_text("layer,attention\n0,attn_kv8\n")
    with pytest.raises(ConfigError, match=rf"^scores: file '{path}': missing columns \['ffn', 'kl'"):
        load_scores(path)
    costs = tables / "costs.csv"
    rewrite(costs, lambda lines: lines[:2] + [lines[1]] + lines[2:])
    with pytest.raises(ConfigError, match=rf"^costs: file '{costs}': duplicate row"):
        load_costs(costs)
    (tables / "gone.csv").unlink(missing_ok=True)
    with pytest.raises(ConfigError, match=rf"^costs: file '{tables / 'gone.csv'}' does not exist$"):
        load_costs(tables / "gone.csv")


def test_a_short_table_names_the_file_given_to_the_search(tables, capsys):
    rewrite(tables / "scores.csv", lambda lines: [x for x in lines if not x.startswith("3,")])  # layer 3 gone
    parent = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 8, "num_key_value_heads": 8,
              "num_hidden_layers": 4, "vocab_size": 512}
    (tables / "config.json").write_text(json.dumps(parent))
    assert search(tables, "--parent-config", str(tables / "config.json")) == 2
    err = capsys.readouterr().err
    assert f"scores: file '{tables / 'scores.csv'}': 3 layers but the parent has num_hidden_layers = 4" in err
