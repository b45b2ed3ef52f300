"""GKD: the loss terms, lower validation KL after training, and exact resume after a kill."""

import json

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from child_helpers import PARENT_BLOCK, cfg, make_child, parent_and_library, write_shards
from puzzle import cli, gkd
from puzzle.config import ConfigError
from puzzle.data import read_shard
from puzzle.training import fixed_windows

LAYERS = [("attn_linear", "ffn_50"), PARENT_BLOCK, ("attn_kv1", "ffn_noop")]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("gkd")
    parent, library = parent_and_library(root)
    return root, parent, make_child(root, parent, library, LAYERS), write_shards(root / "data")


def run(tiny, out, **gkd_cfg):
    root, parent, child, data = tiny
    c = cfg(gkd=gkd_cfg)
    return gkd.train(c, str(parent), str(child), str(data / "train.bin"), str(data / "valid.bin"), str(out))


def test_gkd_lowers_the_validation_kl_of_the_assembled_child(tiny, tmp_path, capsys):
    root, parent_dir, child_dir, data = tiny
    out = tmp_path / "gkd"
    argv = ["gkd", "--cfg", json.dumps(cfg()), "--parent", str(parent_dir), "--child", str(child_dir),
            "--train", str(data / "train.bin"), "--valid", str(data / "valid.bin"), "--out", str(out)]
    assert cli.main(argv) == 0
    assert "validation KL" in capsys.readouterr().out
    parent = LlamaForCausalLM.from_pretrained(parent_dir).eval()
    windows = fixed_windows(read_shard(data / "valid.bin"), 8, 17)
    before, n = gkd.validation_kl(AutoModelForCausalLM.from_pretrained(child_dir), parent, windows, 4)
    after, _ = gkd.validation_kl(AutoModelForCausalLM.from_pretrained(out), parent, windows, 4)
    assert after < 0.85 * before
    report = json.loads((out / "report.json").read_text())
    assert report["val_kl_before"] == pytest.approx(before / n) and report["val_kl_after"] == pytest.approx(after / n)
    log = pd.read_csv(out / "gkd_log.csv")
    assert log.dropna(subset=["val_kl"])["step"].tolist() == [0, 4, 8, 12]
    assert log["lm"].isna().all() and log["kl"].iloc[1:].notna().all()  # lm is off by default
    assert json.loads((out / "config.json").read_text())["block_configs"] == json.loads(
        (child_dir / "config.json").read_text())["block_configs"]
    assert (out / "assembly.json").read_text() == (child_dir / "assembly.json").read_text()


def test_a_killed_run_resumes_to_exactly_the_uninterrupted_weights(tiny, tmp_path, monkeypatch):
    run(tiny, tmp_path / "straight", steps=10)
    real = gkd.sample_windows

    def killed_at_step_7(tokens, batch, length, seed, step):
        if step == 7:
            raise KeyboardInterrupt("killed")
        return real(tokens, batch, length, seed, step)

    monkeypatch.setattr(gkd, "sample_windows", killed_at_step_7)
    with pytest.raises(KeyboardInterrupt):
        run(tiny, tmp_path / "resumed", steps=10)
    assert (tmp_path / ".resumed.checkpoint" / "state.json").exists() and not (tmp_path / "resumed").exists()
    monkeypatch.setattr(gkd, "sample_windows", real)
    report = run(tiny, tmp_path / "resumed", steps=10)
    assert report["resumed_from_step"] == 4
    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "straight" / "gkd_log.csv"),
                                  pd.read_csv(tmp_path / "resumed" / "gkd_log.csv"))
    assert not (tmp_path / ".resumed.checkpoint").exists()


def test_each_loss_term_is_what_it_says():
    g = torch.Generator().manual_seed(0)
    c_logits, p_logits = torch.randn(2, 5, 11, generator=g), torch.randn(2, 5, 11, generator=g)
    c_hidden = [torch.randn(2, 5, 8, generator=g) for _ in range(3)]
    p_hidden = [torch.randn(2, 5, 8, generator=g) for _ in range(3)]
    targets = torch.randint(0, 11, (2, 5), generator=g)

    def loss(**on):
        terms = {"cosine": False, "kl": False, "lm": False, **on}
        return gkd.gkd_loss(c_logits, c_hidden, p_logits, p_hidden, targets, terms)

    p = torch.softmax(p_logits, -1)
    kl = (p * (p.log() - torch.log_softmax(c_logits, -1))).sum(-1).mean()
    cos = sum((1 - (c * q).sum(-1) / (c.norm(dim=-1) * q.norm(dim=-1))).mean() for c, q in zip(c_hidden, p_hidden))
    lm = F.cross_entropy(c_logits.reshape(-1, 11), targets.reshape(-1))
    assert loss(kl=True)[0].item() == pytest.approx(kl.item(), rel=1e-6)
    assert loss(cosine=True)[0].item() == pytest.approx(cos.item(), rel=1e-6)
    assert loss(lm=True)[0].item() == pytest.approx(lm.item(), rel=1e-6)
    total, parts = loss(cosine=True, kl=True, lm=True)
    assert total.item() == pytest.approx((kl + cos + lm).item(), rel=1e-6) and set(parts) == {"cosine", "kl", "lm"}
    assert loss(cosine=True, kl=True)[0].item() == pytest.approx((kl + cos).item(), rel=1e-6)
    with pytest.raises(ValueError):
        loss()


def test_layer_outputs_are_the_decoder_layers_hidden_states(tiny):
    _, parent_dir, _, _ = tiny
    parent = LlamaForCausalLM.from_pretrained(parent_dir).eval()
    x = torch.randint(0, 96, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits, outs = gkd.forward(parent, x, hidden=True)
        ref = parent(x, output_hidden_states=True)
    assert len(outs) == 3 and torch.equal(logits, ref.logits)
    for i in range(2):  # hidden_states[i + 1] is layer i's output; the last one is after the final norm
        assert torch.equal(outs[i], ref.hidden_states[i + 1])
    assert torch.equal(parent.model.norm(outs[2]), ref.hidden_states[3])


def test_all_terms_off_is_a_one_line_config_error(tiny, tmp_path):
    with pytest.raises(ConfigError, match="gkd.loss: expected at least one of cosine, kl, lm"):
        run(tiny, tmp_path / "none", loss={"cosine": False, "kl": False, "lm": False})
