"""puzzle.checkpoint: every loader reads a checkpoint within 1.3x its bytes of host memory, the weights exactly as
stored, and a model split over two devices computes exactly what it computes on one."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from fixtures import TINY, random_model
from puzzle import checkpoint, convert
from puzzle.io import ArtifactError
from puzzle.nemotron_nas import DeciLMForCausalLM

sys.path.insert(0, str(Path(__file__).parent))
from rss_worker import entries, save_random_llama  # noqa: E402

WORKER = Path(__file__).parent / "rss_worker.py"


@pytest.fixture(scope="module")
def big_parent(tmp_path_factory):
    return save_random_llama(tmp_path_factory.mktemp("rss") / "parent")


def test_every_loader_peaks_within_1_3x_the_model_bytes(big_parent, tmp_path, venv_env):
    names = list(entries("", ""))
    run = subprocess.run([sys.executable, str(WORKER), str(big_parent), str(tmp_path / "out"), *names],
                         env={**venv_env, "OMP_WAIT_POLICY": "PASSIVE"}, capture_output=True, text=True, timeout=600)
    got = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert [g["entry"] for g in got] == names, run.stderr[-3000:]
    assert not [g for g in got if "error" in g], run.stderr[-3000:]
    stored_bytes = (big_parent / "model.safetensors").stat().st_size
    for g in got:
        # bld_teacher reads layers 0..5 of 12 (and the embedding); float32 doubles the bytes
        assert g["model_bytes"] >= 0.45 * stored_bytes, g
        assert g["rss_bytes"] <= 1.3 * g["model_bytes"], g


@pytest.fixture
def tiny_llama(tmp_path):
    parent = random_model(LlamaForCausalLM, LlamaConfig(**TINY, tie_word_embeddings=False))
    parent.save_pretrained(tmp_path / "fp32", max_shard_size="100KB")  # sharded: index json + several files
    copy.deepcopy(parent).to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    return tmp_path, parent


def stored(folder):
    out = {}
    for f in checkpoint.weight_files(folder):
        out.update(load_file(str(f)))
    return out


def test_weights_and_dtype_are_the_stored_ones(tiny_llama):
    root, _ = tiny_llama
    assert len(checkpoint.weight_files(root / "fp32")) > 1
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        model = checkpoint.load(root / name)
        assert type(model) is LlamaForCausalLM and not model.training
        want = stored(root / name)
        got = model.state_dict()
        assert set(got) == set(want)
        assert all(got[k].dtype == dtype and torch.equal(got[k], want[k]) for k in want)
        assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])


def test_logits_equal_from_pretrained_and_cast_on_read(tiny_llama):
    root, _ = tiny_llama
    ref = LlamaForCausalLM.from_pretrained(root / "fp32").eval()
    ids = torch.randint(0, 256, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = ref(ids).logits
        assert torch.equal(checkpoint.load(root / "fp32")(ids).logits, want)  # RoPE's inv_freq recomputed, not meta
        assert torch.equal(checkpoint.load(root / "bf16", dtype=torch.float32)(ids).logits,
                           LlamaForCausalLM.from_pretrained(root / "bf16", dtype=torch.float32)(ids).logits)
        decilm = checkpoint.load(root / "fp32", decilm=True)
        assert type(decilm) is DeciLMForCausalLM
        assert torch.equal(decilm(ids).logits, want)


def test_tied_embeddings_and_qwen2_conversion(tmp_path):
    cfg = Qwen2Config(**TINY, tie_word_embeddings=True)
    parent = random_model(Qwen2ForCausalLM, cfg)
    parent.save_pretrained(tmp_path / "qwen")
    child = checkpoint.load(tmp_path / "qwen", decilm=True)
    assert child.lm_head.weight is child.model.embed_tokens.weight
    assert torch.equal(child.model.layers[1].self_attn.o_proj.bias, torch.zeros(64))
    assert torch.equal(child.model.layers[1].self_attn.q_proj.bias, parent.model.layers[1].self_attn.q_proj.bias)
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert (child(ids).logits - parent(ids).logits).abs().max().item() <= 1e-5


def test_conversion_writes_what_the_in_memory_conversion_writes(tiny_llama):
    root, parent = tiny_llama
    convert.convert_llama(root / "fp32", root / "from_files")
    convert.convert_llama(parent, root / "from_model")
    for name in ("model.safetensors", "config.json"):
        assert (root / "from_files" / name).read_bytes() == (root / "from_model" / name).read_bytes()
    child = checkpoint.load(root / "from_files")
    assert type(child) is DeciLMForCausalLM
    assert all(torch.equal(child.state_dict()[k], v) for k, v in stored(root / "fp32").items())


def test_first_layers_only(tiny_llama):
    root, parent = tiny_llama
    model = checkpoint.load(root / "fp32", layers=2)
    assert len(model.model.layers) == 2
    assert torch.equal(model.model.layers[1].mlp.up_proj.weight, parent.model.layers[1].mlp.up_proj.weight)
    with pytest.raises(ValueError, match="layers = 4: expected 1..3"):
        checkpoint.load(root / "fp32", layers=4)


def test_bad_checkpoints_are_named(tiny_llama, tmp_path):
    root, _ = tiny_llama
    with pytest.raises(ArtifactError, match="config.json: file does not exist"):
        checkpoint.load(tmp_path / "nothing")
    (tmp_path / "gpt2").mkdir()
    (tmp_path / "gpt2" / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(ArtifactError, match="model_type 'gpt2' is not one of"):
        checkpoint.load(tmp_path / "gpt2")
    state = load_file(str(root / "bf16" / "model.safetensors"))
    del state["model.norm.weight"]
    state["model.extra"] = torch.zeros(2)
    save_file(state, str(root / "bf16" / "model.safetensors"))
    with pytest.raises(ArtifactError, match=r"missing \['model.norm.weight'\], unexpected \['model.extra'\]"):
        checkpoint.load(root / "bf16")
    f = root / "bf16" / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(ArtifactError, match="truncated or corrupt"):
        checkpoint.load(root / "bf16")


def test_a_model_split_over_two_devices_matches_one_device(tiny_llama, tmp_path):
    root, _ = tiny_llama
    ids = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(4))
    whole = checkpoint.load(root / "fp32")
    layer = sum(p.numel() * 4 for p in whole.model.layers[0].parameters())
    # The CPU holds the embedding and about one layer; the rest is offloaded to disk and read back per forward.
    budget = {"cpu": 256 * 64 * 4 + layer + 1000, "disk": 10**9}
    split = checkpoint.load(root / "fp32", max_memory=budget, offload_folder=tmp_path / "offload")
    placed = split.hf_device_map
    assert set(placed.values()) == {"cpu", "disk"}, placed
    assert all(v in ("cpu", "disk") for k, v in placed.items() if k.startswith("model.layers."))  # layers whole
    assert checkpoint.input_device(split) == torch.device("cpu")
    with torch.no_grad():
        assert torch.equal(split(ids).logits, whole(ids).logits)


def test_placement_refuses_a_model_that_does_not_fit(tiny_llama):
    root, _ = tiny_llama
    with pytest.raises(ValueError, match=r"does not fit the job's devices .* \['disk'\] would be needed"):
        checkpoint.load(root / "fp32", max_memory={"cpu": 10_000})


def test_a_split_parent_dumps_the_activations_of_a_whole_one(tiny_llama, tmp_path):
    from puzzle import activations

    root, _ = tiny_llama
    windows = torch.randint(0, 256, (3, 16), generator=torch.Generator().manual_seed(5))
    act = {"dtype": "fp32", "chunk_windows": 2, "batch_size": 2}
    whole = checkpoint.load(root / "fp32")
    layer = sum(p.numel() * 4 for p in whole.model.layers[0].parameters())
    split = checkpoint.load(root / "fp32", max_memory={"cpu": 256 * 64 * 4 + layer + 1000, "disk": 10**9},
                            offload_folder=tmp_path / "offload")
    assert "disk" in split.hf_device_map.values()
    activations.dump(whole, windows, tmp_path / "whole", act)
    activations.dump(split, windows, tmp_path / "split", act)
    def chunks(d):
        return sorted(p.relative_to(d) for p in d.rglob("*.safetensors"))

    files = chunks(tmp_path / "whole")
    assert files and files == chunks(tmp_path / "split")
    for f in files:
        want, got = load_file(str(tmp_path / "whole" / f)), load_file(str(tmp_path / "split" / f))
        assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
