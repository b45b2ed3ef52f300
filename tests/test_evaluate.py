"""Evaluation: quality metrics by hand, KL of the parent to itself, and the per-run JSONs + summary."""

import gc
import json
import shlex
import weakref

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from fixtures import PARENT_BLOCK, SCENARIO, child_cfg, make_child, parent_and_library, write_shards, write_solution
from puzzle import cli, evaluate
from puzzle import config as pzc
from puzzle.data import read_shard
from puzzle.training import fixed_windows


class Bigram(torch.nn.Module):
    """Logits that depend only on the current token: easy to count by hand."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(table)

    def forward(self, input_ids):
        return type("Out", (), {"logits": self.table[input_ids]})()


def test_token_accuracy_and_loss_match_a_hand_count():
    table = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 3.0, 0.0]])
    windows = torch.tensor([[0, 0, 2, 1, 2], [1, 2, 2, 0, 1]])
    # argmax per token: 0->0, 1->2, 2->1. Hits: (0->0) yes, (0->2) no, (2->1) yes, (1->2) yes; (1->2) yes,
    # (2->2) no, (2->0) no, (0->1) no: 4 of 8.
    q = evaluate.quality(Bigram(table), Bigram(table), windows, batch=1)
    assert q["token_acc"] == 0.5 and q["tokens"] == 8
    logp = torch.log_softmax(table, -1)
    nll = -np.mean([logp[a, b].item() for w in windows.tolist() for a, b in zip(w[:-1], w[1:])])
    assert q["lm_loss"] == pytest.approx(nll, rel=1e-6)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    parent, library = parent_and_library(root)
    child = make_child(root, parent, library, [("attn_linear", "ffn_noop"), PARENT_BLOCK, ("attn_noop", "ffn_50")])
    same = make_child(root, parent, library, [PARENT_BLOCK] * 3, "all_parent")
    return root, parent, child, same, write_shards(root / "data")


def test_kl_of_the_parent_to_itself_is_exactly_zero(tiny):
    root, parent_dir, child_dir, same_dir, data = tiny
    parent = LlamaForCausalLM.from_pretrained(parent_dir).eval()
    windows = fixed_windows(read_shard(data / "test.bin"), 6, 17)
    assert evaluate.quality(parent, parent, windows, 4)["kl"] == 0.0
    # a separate model with the parent's blocks (the Nemotron-NAS form) is exactly 0 too
    same = AutoModelForCausalLM.from_pretrained(same_dir).eval()
    assert evaluate.quality(same, parent, windows, 4)["kl"] == 0.0
    child = AutoModelForCausalLM.from_pretrained(child_dir).eval()
    assert evaluate.quality(child, parent, windows, 4)["kl"] > 0.01


def test_timed_greedy_loop_gives_the_tokens_of_generate(tiny):
    root, parent_dir, child_dir, same_dir, data = tiny
    prompts = fixed_windows(read_shard(data / "test.bin"), 3, 9)
    for path in (parent_dir, child_dir):  # a Llama and a child with linear and no-op subblocks
        model = AutoModelForCausalLM.from_pretrained(path).eval()
        with torch.no_grad():
            ref = model.generate(input_ids=prompts, attention_mask=torch.ones_like(prompts), do_sample=False,
                                 max_new_tokens=7, min_new_tokens=7, pad_token_id=0)
        assert torch.equal(evaluate.greedy_generate(model, prompts, 7), ref[:, prompts.shape[1]:])


def test_cli_writes_per_model_json_and_the_summary(tiny, capsys):
    root, parent_dir, child_dir, same_dir, data = tiny
    solution = write_solution(root / "solution.json", parent_dir, [PARENT_BLOCK] * 3)
    extra = {"name": "long", "batch": 1, "input_len": 4, "output_len": 9}
    c = child_cfg(evaluate={"scenarios": [extra], "lm_eval_tasks": ["toy_task"], "clock": "cpu", "threads": 1})
    out = root / "eval" / "tgt" / "chat" / "2x"
    argv = [
        "evaluate",
        "--cfg",
        shlex.split(pzc.stage_arg(c, "evaluate"))[0],
        "--parent",
        str(parent_dir),
        "--model",
        f"child={child_dir}",
        "--model",
        f"gkd={child_dir}",
        "--test",
        str(data / "test.bin"),
        "--solution",
        str(solution),
        "--out",
        str(out),
    ]
    assert cli.main(argv) == 0
    rows = {m: json.loads((out / f"{m}.json").read_text()) for m in ("parent", "child", "gkd")}
    p, ch = rows["parent"], rows["child"]
    assert ch["timing"] == {"clock": "cpu", "threads": 1}  # timed as asked, and the JSON says how
    assert p["quality"]["kl"] == 0.0 and p["throughput_ratio"] == {"chat_b2": 1.0, "long_b1": 1.0}
    assert set(ch["throughput"]) == {"chat_b2", "long_b1"}
    assert (
        ch["throughput"]["chat_b2"]["batch"] == SCENARIO["batch"] and len(ch["throughput"]["long_b1"]["seconds"]) == 2
    )
    # child and gkd share an architecture: one measurement serves both
    assert rows["gkd"]["throughput"] == ch["throughput"] and ch["throughput"]["chat_b2"]["measured_as"] == "child"
    speed = ch["throughput"]["chat_b2"]["tokens_per_s"] / p["throughput"]["chat_b2"]["tokens_per_s"]
    assert ch["throughput_ratio"]["chat_b2"] == pytest.approx(speed)
    assert ch["retained_pct"]["token_acc"] == pytest.approx(
        100 * ch["quality"]["token_acc"] / p["quality"]["token_acc"]
    )
    assert ch["retained_pct"]["lm_loss"] == pytest.approx(100 * p["quality"]["lm_loss"] / ch["quality"]["lm_loss"])
    assert ch["lm_eval"] == {"skipped": "lm-eval is not installed"} or "toy_task" in json.dumps(ch["lm_eval"])

    summary = root / "eval" / "summary.csv"
    assert cli.main(["evaluate", "--summarize", str(out), "--out", str(summary)]) == 0
    frame = pd.read_csv(summary)
    assert frame["run"].tolist() == ["tgt/chat/2x"] * 3 and frame["model"].tolist() == ["parent", "child", "gkd"]
    assert frame.loc[1, "ratio_chat_b2"] == pytest.approx(ch["throughput_ratio"]["chat_b2"])
    assert frame.loc[1, "retained_token_acc_pct"] == pytest.approx(ch["retained_pct"]["token_acc"])


def test_each_model_is_freed_before_the_next_is_read(tiny, monkeypatch):
    root, parent_dir, child_dir, same_dir, data = tiny
    loaded, held_at_load = [], []
    real = evaluate.load_model

    def load(path, device, dtype):
        gc.collect()
        held_at_load.append(sum(r() is not None for r in loaded[1:]))  # models held besides the parent
        model = real(path, device, dtype)
        loaded.append(weakref.ref(model))
        return model

    monkeypatch.setattr(evaluate, "load_model", load)
    rows = evaluate.evaluate(
        child_cfg(),
        str(parent_dir),
        {"child": str(child_dir), "same": str(same_dir), "gkd": str(child_dir)},
        str(data / "test.bin"),
        None,
        str(root / "eval"),
    )
    assert held_at_load == [0, 0, 0, 0]
    assert set(rows) == {"parent", "child", "same", "gkd"} and rows["parent"]["quality"]["kl"] == 0.0
    assert rows["gkd"]["quality"] == rows["child"]["quality"]  # the same checkpoint read again gives the same
