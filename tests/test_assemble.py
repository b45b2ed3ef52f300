"""Assembly: solution.json + library -> a Nemotron-NAS child holding exactly the library's tensors."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from fixtures import PARENT_BLOCK, make_child, parent_and_library, write_solution
from puzzle import assemble, cli
from puzzle.io import load_safetensors
from puzzle.library import write_entry_json


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("assemble")
    return root, *parent_and_library(root)


def test_all_parent_child_gives_the_parents_logits_exactly(tiny):
    root, parent_dir, library = tiny
    child_dir = make_child(root, parent_dir, library, [PARENT_BLOCK] * 3, "all_parent")
    parent = LlamaForCausalLM.from_pretrained(parent_dir).eval()
    child = AutoModelForCausalLM.from_pretrained(child_dir).eval()
    x = torch.randint(0, 96, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(child(x).logits, parent(x).logits)
    assert (child_dir / "tokenizer.json").read_text() == (parent_dir / "tokenizer.json").read_text()
    assert (child_dir / "modeling_decilm.py").exists()  # loadable with trust_remote_code alone


def test_noop_ffn_layer_has_exactly_that_structure_and_the_library_tensors(tiny):
    root, parent_dir, library = tiny
    layers = [PARENT_BLOCK, ("attn_kv1", "ffn_noop"), ("attn_linear", "ffn_50")]
    child_dir = make_child(root, parent_dir, library, layers, "noop_ffn")
    config = json.loads((child_dir / "config.json").read_text())
    assert config["block_configs"][1]["ffn"]["no_op"] is True
    assert config["block_configs"][1]["attention"]["n_heads_in_group"] == 4  # 4 heads over 1 KV head
    model = AutoModelForCausalLM.from_pretrained(child_dir)
    assert model.model.layers[1].mlp is None and model.model.layers[1].post_attention_layernorm is None

    saved = load_file(str(child_dir / "model.safetensors"))
    parent = load_file(str(parent_dir / "model.safetensors"))
    for i, (a, f) in enumerate(layers):
        expected = {**load_safetensors(library / f"layer_{i}" / f"{a}.safetensors"),
                    **load_safetensors(library / f"layer_{i}" / f"{f}.safetensors")}
        got = {k.removeprefix(f"model.layers.{i}."): v for k, v in saved.items() if k.startswith(f"model.layers.{i}.")}
        assert got.keys() == expected.keys()
        assert all(torch.equal(got[k], expected[k]) for k in got)
    assert not any(
        k.startswith("model.layers.1.mlp") or k == "model.layers.1.post_attention_layernorm.weight" for k in saved
    )
    for k in ("model.embed_tokens.weight", "model.norm.weight"):
        assert torch.equal(saved[k], parent[k])

    record = json.loads((child_dir / "assembly.json").read_text())
    files = record["layers"][1]["files"]
    assert [f["path"] for f in files] == [
        str(library / "layer_1" / "attn_kv1.safetensors"),
        str(library / "layer_1" / "ffn_noop.safetensors"),
    ]
    assert files[0]["sha256"] == assemble.sha256(library / "layer_1" / "attn_kv1.safetensors")


def test_coupled_library_gives_the_same_child_as_its_decoupled_parts(tiny, tmp_path):
    root, parent_dir, library = tiny
    layers = [("attn_linear", "ffn_50"), ("attn_noop", "ffn_linear"), PARENT_BLOCK]
    coupled = tmp_path / "coupled"
    for i, (a, f) in enumerate(layers):
        d = coupled / f"layer_{i}"
        d.mkdir(parents=True)
        pair = {
            **load_file(str(library / f"layer_{i}" / f"{a}.safetensors")),
            **load_file(str(library / f"layer_{i}" / f"{f}.safetensors")),
        }
        save_file(pair, str(d / f"{a}+{f}.safetensors"))
        write_entry_json(d / f"{a}+{f}.safetensors", {})
    solution = write_solution(tmp_path / "solution.json", parent_dir, layers)
    assemble.assemble(solution, coupled, parent_dir, tmp_path / "from_coupled", "coupled")
    assemble.assemble(solution, library, parent_dir, tmp_path / "from_decoupled", "decoupled")
    a = load_file(str(tmp_path / "from_coupled" / "model.safetensors"))
    b = load_file(str(tmp_path / "from_decoupled" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_random_weights_keep_the_architecture_and_nothing_of_the_parent(tiny, tmp_path):
    root, parent_dir, library = tiny
    layers = [PARENT_BLOCK, ("attn_kv1", "ffn_noop"), ("attn_linear", "ffn_50")]
    solution = write_solution(tmp_path / "solution.json", parent_dir, layers)
    outs = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        record = assemble.assemble(
            solution, tmp_path / "no_library", parent_dir, tmp_path / name, "decoupled", random_weights=seed
        )
        outs[name] = load_file(str(tmp_path / name / "model.safetensors"))
    assert record["library"] is None and record["random_weights_seed"] == 2
    from_library = load_file(str(make_child(root, parent_dir, library, layers, "random_ref") / "model.safetensors"))
    assert outs["a"].keys() == from_library.keys()  # the same architecture, tensor for tensor
    assert all(outs["a"][k].shape == from_library[k].shape for k in outs["a"])
    assert all(torch.equal(outs["a"][k], outs["b"][k]) for k in outs["a"])  # seeded
    parent = load_file(str(parent_dir / "model.safetensors"))
    for k in (
        "model.embed_tokens.weight",
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.2.mlp.up_proj.weight",
    ):
        assert not torch.equal(outs["a"][k], outs["c"][k]) and not torch.equal(
            outs["a"][k], parent.get(k, from_library[k])
        )


def test_cli_and_clear_errors(tiny, tmp_path, capsys):
    root, parent_dir, library = tiny
    solution = write_solution(tmp_path / "solution.json", parent_dir, [("attn_noop", "ffn_noop")] * 3)
    argv = ["assemble", "--solution", str(solution), "--library", str(library), "--parent", str(parent_dir)]
    assert cli.main([*argv, "--out", str(tmp_path / "child")]) == 0
    assert "attn_noop+ffn_noop" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match=r"layer 0: library file .*attn_noop\+ffn_noop.safetensors is missing"):
        cli.main([*argv, "--out", str(tmp_path / "coupled"), "--cfg", '{"bld": {"mode": "coupled"}}'])
    assert not (tmp_path / "coupled").exists()
