import math

import numpy as np
import pytest
import torch

from puzzle import config as pzc
from puzzle import data, parent, training


def test_cosine_schedule_hand_values():
    assert training.cosine_lr(0, 100, 1.0, 10, 0.1) == pytest.approx(0.1)
    assert training.cosine_lr(9, 100, 1.0, 10, 0.1) == pytest.approx(1.0)
    assert training.cosine_lr(10, 100, 1.0, 10, 0.1) == pytest.approx(1.0)
    assert training.cosine_lr(55, 100, 1.0, 10, 0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert training.cosine_lr(100, 100, 1.0, 10, 0.1) == pytest.approx(0.1)


def test_windows_depend_only_on_seed_and_step():
    tokens = np.arange(1000, dtype=np.uint16)
    a = training.sample_windows(tokens, 4, 9, seed=0, step=7)
    assert torch.equal(a, training.sample_windows(tokens, 4, 9, seed=0, step=7))
    assert not torch.equal(a, training.sample_windows(tokens, 4, 9, seed=0, step=8))
    assert torch.equal(a[:, 1:] - a[:, :-1], torch.ones(4, 8, dtype=torch.int64))


def test_ngram_baselines_match_hand_computation():
    train = np.array([0, 1, 0, 1, 0, 2], dtype=np.int64)
    windows = torch.tensor([[0, 1]])
    out = parent.ngram_baselines(train, windows, vocab=3)
    # unigram add-1: counts [3,2,1]+1 -> p(1) = 3/9
    assert out["unigram"] == pytest.approx(-math.log(3 / 9))
    # bigram: after 0 came 1 twice, 2 once; p(1|0) = (2 + k/3) / (3 + k), best k is the smallest tried
    assert out["bigram"] == pytest.approx(-math.log((2 + 1 / 3) / (3 + 1)))


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    root = tmp_path_factory.mktemp("micro")
    cfg = pzc.validate({
        "data": {"corpus": "bible", "max_chars": 200_000, "tokenizer": {"vocab_size": 300}},
        "parent": {"train": {"num_layers": 1, "hidden_size": 32, "num_heads": 2, "num_kv_heads": 1,
                             "intermediate_size": 64, "seq_len": 32, "batch_size": 4, "steps": 30,
                             "eval_every": 10, "eval_windows": 8, "checkpoint_every": 5, "lr": 0.01}},
    })
    data.run(cfg, root / "data")
    return cfg, root


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def test_parent_learns_and_resume_is_exact(micro, monkeypatch):
    cfg, root = micro
    report = parent.train(cfg, root / "data", root / "straight")
    log = (root / "straight" / "train_log.csv").read_text().splitlines()
    valid = [float(r.split(",")[3]) for r in log[1:] if r.split(",")[3]]
    assert valid[-1] < valid[0] < math.log(300) + 0.5  # held-out loss falls from near-uniform
    assert report["heldout_loss"]["valid"] < math.log(300) - 1  # well below a uniform guess
    assert report["parameters"] == sum(v.numel() for k, v in _weights(root / "straight").items())

    # kill the run at step 17 (after the step-15 checkpoint), then run again: it resumes at 15
    calls = {"n": 0}
    real = training.set_lr

    def dying_set_lr(opt, lr):
        calls["n"] += 1
        if calls["n"] == 18:
            raise KeyboardInterrupt
        real(opt, lr)

    monkeypatch.setattr(parent, "set_lr", dying_set_lr)
    with pytest.raises(KeyboardInterrupt):
        parent.train(cfg, root / "data", root / "resumed")
    assert not (root / "resumed").exists()  # nothing half-written
    monkeypatch.setattr(parent, "set_lr", real)
    resumed = parent.train(cfg, root / "data", root / "resumed")
    assert resumed["resumed_from_step"] == 15
    a, b = _weights(root / "straight"), _weights(root / "resumed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_saved_parent_is_a_standard_hf_checkpoint(micro):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg, root = micro
    path = root / "straight"
    if not path.exists():
        parent.train(cfg, root / "data", path)
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.num_key_value_heads == 1 and len(tok) == 300
    ids = tok("And God said", return_tensors="pt")["input_ids"]
    assert model.generate(ids, max_new_tokens=3, do_sample=False).shape == (1, ids.shape[1] + 3)
