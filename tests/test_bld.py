"""BLD training: it distills, stored and online teachers give the same library, a pipelined job of
two processes equals one process, and a killed, signalled or reconfigured job resumes correctly."""

import json
import os
import signal
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from fixtures import BLD_PARENT, BLD_SHARDS, bld_cfg, make_parent, write_shards
from puzzle import activations, bld, blocks, config, library

_unpatched_batch_ids = bld.batch_ids
SMALL_SPACE = {"attention": {"kv_heads": [1], "linear": False, "no_op": True},
               "ffn": {"ratios": [0.5], "linear": False, "no_op": True, "multiple_of": 8}}


def _cfg(**bld_keys):
    """fp32 activations (so stored inputs are the parent's exactly), 6 steps of 4 windows: each of
    the 24 stored windows once, which is also the online pool (steps x batch windows)."""
    cfg = bld_cfg(**{"batch_size": 4, "tokens": 4 * 16 * 6, "eval_every": 2, "checkpoint_every": 2, **bld_keys})
    return config.deep_merge(cfg, {"activations": {"dtype": "fp32"}})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("bld")
    cfg = _cfg()
    make_parent(root / "parent", **BLD_PARENT)
    shards = write_shards(root / "data", **BLD_SHARDS)
    for split in ("train", "valid"):
        activations.run(cfg, str(root / "parent"), str(shards / f"{split}.bin"), split, str(root / split))
    return {"root": root, "parent": str(root / "parent"), "shard": str(shards / "train.bin"),
            "train": str(root / "train"), "valid": str(root / "valid")}


def _run(tiny, out, layers, teacher, **bld_keys):
    cfg = _cfg(teacher=teacher, **bld_keys)
    source = {"train": tiny["train"]} if teacher == "stored" else {"shard": tiny["shard"]}
    return bld.run(cfg, tiny["parent"], tiny["valid"], layers, str(out), **source)


def _library(out, metrics):
    return {(m["layer"], m["variant"]): load_file(library.entry_path(out, m["layer"], m["variant"])) for m in metrics}


def _assert_same_library(a, b):
    assert a.keys() == b.keys()
    for key, tensors in a.items():
        assert tensors.keys() == b[key].keys() and all(torch.equal(t, b[key][k]) for k, t in tensors.items()), key


@pytest.fixture(scope="module")
def libraries(tiny, tmp_path_factory):
    """Stored and online libraries of both layers, decoupled and coupled; files written online."""
    out, real_save = {}, activations.save_safetensors
    for mode in ("decoupled", "coupled"):
        space = {"search_space": SMALL_SPACE} if mode == "coupled" else {}
        for teacher in ("stored", "online"):
            d = tmp_path_factory.mktemp(f"{mode}_{teacher}")
            dumped = []
            activations.save_safetensors = lambda *a, out=dumped: (out.append(a[0]), real_save(*a))
            try:
                cfg = config.deep_merge(_cfg(teacher=teacher, mode=mode), space)
                source = {"train": tiny["train"]} if teacher == "stored" else {"shard": tiny["shard"]}
                metrics = bld.run(cfg, tiny["parent"], tiny["valid"], [0, 1], str(d), **source)
            finally:
                activations.save_safetensors = real_save
            files = sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())
            out[mode, teacher] = {"dir": d, "metrics": metrics, "files": files, "dumped": dumped}
    return out


@pytest.mark.parametrize("mode", ["decoupled", "coupled"])
def test_online_teacher_gives_exactly_the_stored_library_in_fp32(libraries, mode):
    stored, online = libraries[mode, "stored"], libraries[mode, "online"]
    _assert_same_library(_library(stored["dir"], stored["metrics"]), _library(online["dir"], online["metrics"]))
    assert [m["curve"] for m in stored["metrics"]] == [m["curve"] for m in online["metrics"]]
    assert {m["teacher"] for m in stored["metrics"]} == {"stored"} and {m["teacher"] for m in online["metrics"]} == {
        "online"}
    trained = [m for m in online["metrics"] if m["steps"]]
    assert trained and all(m["steps"] == 6 and m["train_windows"] == 24 for m in trained)
    assert all(m["nmse_final"] < m["nmse_init"] for m in trained if m["layer"] == 1), [
        (m["variant"], m["nmse_init"], m["nmse_final"]) for m in trained]


def test_a_teacher_prefix_split_over_cpu_and_disk_gives_exactly_the_stored_inputs(tiny, tmp_path):
    """The path a prefix over several GPUs takes (accelerate's hooks): layer 1 offloaded to disk, layer 0 on the
    CPU; every window's x and h equal the stored fp32 activations and the prefix on one device."""
    from puzzle import checkpoint
    from puzzle.bld_teacher import OnlineInputs, StoredInputs

    cpu = torch.device("cpu")
    stored = StoredInputs(tiny["train"], [0, 1], cpu)
    whole = checkpoint.load(tiny["parent"])
    layer = sum(p.numel() * 4 for p in whole.model.layers[0].parameters())
    budget = {"cpu": whole.model.embed_tokens.weight.numel() * 4 + 2 * layer + 1000, "disk": 10**9}
    split = OnlineInputs(tiny["parent"], tiny["shard"], [0, 1], stored.windows, stored.seq_len, cpu, torch.float32,
                         max_memory=budget, offload_folder=tmp_path / "offload")
    one = OnlineInputs(tiny["parent"], tiny["shard"], [0, 1], stored.windows, stored.seq_len, cpu, torch.float32)
    placed = split.model.hf_device_map
    assert placed["model.layers.0"] == "cpu" and placed["model.layers.1"] == "disk", placed
    assert not hasattr(one.model, "hf_device_map")
    for ids in ([0, 1, 2, 3], [7, 23, 11]):
        want, got, whole_got = stored(ids), split(ids), one(ids)
        for layer in (0, 1):
            for name in ("x", "h"):
                t = got[layer][name]
                assert t.device == cpu and t.dtype == torch.float32
                assert torch.equal(t, want[layer][name]) and torch.equal(whole_got[layer][name], want[layer][name])


def test_the_teacher_prefix_leaves_the_training_gpu_to_the_trained_entries(monkeypatch):
    from puzzle import bld_teacher, checkpoint

    gpus = [torch.device("cuda", i) for i in range(4)]
    monkeypatch.setattr(checkpoint, "job_devices", lambda: gpus)
    assert bld_teacher.prefix_devices(torch.device("cuda", 0)) == gpus[1:]
    monkeypatch.setattr(checkpoint, "job_devices", lambda: gpus[:1])
    assert bld_teacher.prefix_devices(torch.device("cuda", 0)) == gpus[:1]  # one GPU: shared, as before
    assert bld_teacher.prefix_devices(torch.device("cpu")) == [torch.device("cpu")]


def test_an_online_job_writes_no_training_activations(libraries):
    online = libraries["decoupled", "online"]
    names = library.entries(_cfg(), blocks.ParentShape(32, 4, 2, 48, 2))
    want = sorted(str(Path(p).relative_to(online["dir"])) for p in library.output_files(str(online["dir"]), 2, names))
    assert online["dumped"] == [] and online["files"] == want  # library files only; checkpoints removed


def _pipeline_rank(rank, port, tiny, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    try:
        _run(tiny, out, [0, 1], "online")
    finally:
        torch.distributed.destroy_process_group()


def test_two_pipelined_processes_give_the_one_process_library(tiny, libraries, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # fork: the ranks start with torch and transformers already imported (spawn re-imports them: +30 s)
    mp.start_processes(_pipeline_rank, args=(port, tiny, str(tmp_path)), nprocs=2, start_method="fork")
    one = libraries["decoupled", "online"]
    two = {(m["layer"], m["variant"]): load_file(library.entry_path(tmp_path, m["layer"], m["variant"]))
           for m in one["metrics"]}
    _assert_same_library(_library(one["dir"], one["metrics"]), two)
    got = json.loads(library.entry_path(tmp_path, 1, "ffn_50", "json").read_text())
    assert got["curve"] == next(m["curve"] for m in one["metrics"] if (m["layer"], m["variant"]) == (1, "ffn_50"))


def test_entries_trained_in_groups_equal_entries_trained_together(tiny, libraries, tmp_path):
    # ~100 kB of training state per group: about one tiny entry each
    metrics = _run(tiny, tmp_path, [1], "stored", gpu_memory_gb=1e-4)
    assert max(m.get("group", 0) for m in metrics) >= 2
    whole = libraries["decoupled", "stored"]
    want = {k: v for k, v in _library(whole["dir"], whole["metrics"]).items() if k[0] == 1}
    _assert_same_library(want, _library(tmp_path, metrics))


def _interrupt_at(monkeypatch, step, how):
    real = bld.batch_ids

    def interrupted(windows, batch, seed, s):
        if s == step:
            if how == "killed":
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGUSR1)  # as SLURM does before preemption
        return real(windows, batch, seed, s)

    monkeypatch.setattr(bld, "batch_ids", interrupted)


def _count_saves(monkeypatch):
    saved, real_save = [], bld.Checkpoint.save

    def counted(self, entries, optimizers, step, state):
        saved.append(step)
        real_save(self, entries, optimizers, step, state)

    monkeypatch.setattr(bld.Checkpoint, "save", counted)
    return saved


@pytest.mark.parametrize("how", ["killed", "signal"])
def test_interrupted_online_job_resumes_to_the_same_weights(tiny, libraries, tmp_path, monkeypatch, how):
    saved = _count_saves(monkeypatch)
    _interrupt_at(monkeypatch, 2, how)
    with pytest.raises(KeyboardInterrupt if how == "killed" else SystemExit):
        _run(tiny, tmp_path, [1], "online")
    # killed in step 3: the step-2 checkpoint is left; signalled in step 3: the step ends with a save
    assert saved == ([2] if how == "killed" else [2, 3])
    monkeypatch.setattr(bld, "batch_ids", _unpatched_batch_ids)
    saved.clear()
    metrics = _run(tiny, tmp_path, [1], "online")
    assert saved == [4, 6]  # resumed from its checkpoint, not from step 0
    whole = libraries["decoupled", "online"]
    want = {k: v for k, v in _library(whole["dir"], whole["metrics"]).items() if k[0] == 1}
    _assert_same_library(want, _library(tmp_path, metrics))
    assert [m["curve"] for m in metrics] == [m["curve"] for m in whole["metrics"] if m["layer"] == 1]


def test_a_checkpoint_from_another_budget_is_discarded(tiny, libraries, tmp_path, monkeypatch, capsys):
    _interrupt_at(monkeypatch, 9, "killed")
    with pytest.raises(KeyboardInterrupt):  # 12 steps, killed in step 10: a step-8 checkpoint is left
        _run(tiny, tmp_path, [1], "online", tokens=4 * 16 * 12)
    monkeypatch.setattr(bld, "batch_ids", _unpatched_batch_ids)
    metrics = _run(tiny, tmp_path, [1], "online")  # the 6-step budget must not keep the step-8 weights
    assert "discarding the checkpoint" in capsys.readouterr().out
    whole = libraries["decoupled", "online"]
    want = {k: v for k, v in _library(whole["dir"], whole["metrics"]).items() if k[0] == 1}
    _assert_same_library(want, _library(tmp_path, metrics))


def test_checkpoints_by_elapsed_time_as_well_as_by_steps(tiny, tmp_path, monkeypatch):
    saved = _count_saves(monkeypatch)
    _run(tiny, tmp_path / "steps", [1], "online", checkpoint_every=4, checkpoint_seconds=None)
    assert saved == [4, 6]
    saved.clear()
    _run(tiny, tmp_path / "time", [1], "online", checkpoint_every=4, checkpoint_seconds=1e-9)  # always due
    assert saved == [1, 2, 3, 4, 5, 6]


def test_the_job_asks_for_the_input_its_teacher_path_reads(tiny, tmp_path):
    with pytest.raises(config.ConfigError, match="bld.teacher: bld.teacher = online .* needs --shard TRAIN_SHARD"):
        bld.run(_cfg(teacher="online"), tiny["parent"], tiny["valid"], [0], str(tmp_path), train=tiny["train"])


def test_batches_are_passes_over_the_pool_shared_by_every_layer():
    steps = [bld.batch_ids(10, 4, 0, s) for s in range(5)]  # 20 positions = 2 passes over 10 windows
    assert len(set(steps[0]) | set(steps[1])) == 8  # within a pass no window repeats
    assert sorted(int(i) for ids in steps for i in ids) == sorted(list(range(10)) * 2)
    assert all((a == bld.batch_ids(10, 4, 0, s)).all() for s, a in enumerate(steps))  # (seed, step) only
    assert not all((a == bld.batch_ids(10, 4, 1, s)).all() for s, a in enumerate(steps))


def test_library_plan_follows_the_search_space_and_bld_mode():
    parent = blocks.ParentShape(hidden_size=128, num_attention_heads=4, num_key_value_heads=2,
                                intermediate_size=344, num_hidden_layers=4)
    cfg = config.validate({"search_space": {"ffn": {"ratios": [0.5], "multiple_of": 8}}})
    decoupled = library.entries(cfg, parent)
    assert decoupled == ["attn_kv2", "attn_kv1", "attn_linear", "attn_noop", "ffn_100", "ffn_50", "ffn_linear",
                         "ffn_noop"]
    assert [n for n in decoupled if library.needs_training(n, parent)] == ["attn_kv1", "attn_linear", "ffn_50",
                                                                             "ffn_linear"]
    assert library.entries(cfg, parent, "ffn") == decoupled[4:]
    coupled = library.entries(config.deep_merge(cfg, {"bld": {"mode": "coupled"}}), parent)
    assert len(coupled) == 16 and "attn_linear+ffn_50" in coupled
    assert [n for n in coupled if not library.needs_training(n, parent)] == ["attn_kv2+ffn_100", "attn_noop+ffn_noop"]
    assert library.block_config("attn_kv1+ffn_50", parent, 8) == {  # 344 / 2 = 172, rounded to 176 = 22 x 8
        "attention": {"n_heads_in_group": 4, "no_op": False, "replace_with_linear": False},
        "ffn": {"no_op": False, "replace_with_linear": False, "intermediate_size": 176},
    }
