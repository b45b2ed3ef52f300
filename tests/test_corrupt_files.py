"""Nothing stale or corrupt comes out: every read of a broken file names the file and what is wrong,
NaN never enters a score table, a hand-edited solution stops before assembly, a library file whose
bytes changed after BLD (even to finite numbers) fails its recorded sha256 in every reader, and a
library file written twice from the same tensors has the same bytes (so assembly.json's sha256 is stable)."""

import hashlib
import json
import shutil
import struct

import pandas as pd
import pytest
import torch
from safetensors import safe_open

from puzzle import cli, io
from puzzle.assemble import verify_solution
from puzzle.scoring import COLUMNS, refuse_non_finite
from puzzle.search.synthetic import synthetic_tables

META = {f"key{i}": str(i) for i in range(12)}  # enough keys that a hash order would differ between runs


def _tensors():
    g = torch.Generator().manual_seed(0)
    return {
        "mlp.down_proj.weight": torch.randn(4, 8, generator=g),
        "mlp.up_proj.weight": torch.randn(8, 4, generator=g),
    }


def test_two_writes_of_the_same_tensors_give_the_same_bytes_and_read_back(tmp_path):
    # the same tensors and metadata, built in different insertion orders
    io.save_safetensors(tmp_path / "a.safetensors", _tensors(), META)
    io.save_safetensors(tmp_path / "b.safetensors", dict(reversed(_tensors().items())), dict(reversed(META.items())))
    a, b = (tmp_path / "a.safetensors").read_bytes(), (tmp_path / "b.safetensors").read_bytes()
    assert hashlib.sha256(a).hexdigest() == hashlib.sha256(b).hexdigest()
    header = json.loads(a[8 : 8 + int.from_bytes(a[:8], "little")])
    assert list(header["__metadata__"]) == sorted(META) and (8 + int.from_bytes(a[:8], "little")) % 8 == 0
    with safe_open(str(tmp_path / "a.safetensors"), framework="pt") as f:
        assert f.metadata() == META
    back = io.load_safetensors(tmp_path / "a.safetensors")
    assert all(torch.equal(back[k], v) for k, v in _tensors().items())


def test_a_truncated_library_file_is_named(tmp_path):
    path = tmp_path / "ffn_50.safetensors"
    io.save_safetensors(path, _tensors(), META)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(io.ArtifactError, match=rf"^{path}: not a readable safetensors file \("):
        io.load_safetensors(path)


def test_a_library_file_with_overwritten_bytes_is_refused_naming_the_tensor(tmp_path):
    path = tmp_path / "ffn_50.safetensors"
    bad = _tensors()
    bad["mlp.up_proj.weight"][3, 1] = float("nan")  # what overwritten float bytes turn into
    io.save_safetensors(path, bad)
    with pytest.raises(io.ArtifactError, match=rf"^{path}: tensor 'mlp.up_proj.weight' holds NaN or inf"):
        io.load_safetensors(path)


def test_bad_json_is_named_with_its_position(tmp_path):
    path = tmp_path / "solution.json"
    path.write_text('{"layers": [\n  1,\n')
    with pytest.raises(io.ArtifactError, match=rf"^{path}:3:1: not valid JSON \("):
        io.read_json(path)
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(io.ArtifactError, match=rf"^{path}: not a text file"):
        io.read_json(path)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\x89PNG\r\n\x1a\n\xff\xfe\xfa binary", "not a text CSV"),
        (b"", "empty file: expected a CSV with a header row"),
    ],
)
def test_a_garbage_csv_is_named(tmp_path, content, message):
    path = tmp_path / "scores.csv"
    path.write_bytes(content)
    with pytest.raises(io.ArtifactError, match=rf"^{path}: {message}"):
        io.read_csv(path)


def test_scoring_refuses_to_write_nan_or_inf():
    frame = pd.DataFrame(
        [[0, "attn_kv2", "ffn_100", 0.0, 3.0, 0.5], [1, "attn_kv2", "ffn_50", float("nan"), 3.1, 0.4]], columns=COLUMNS
    )
    with pytest.raises(
        io.ArtifactError, match=r"scoring: layer 1 block attn_kv2\+ffn_50 scores .*expected finite numbers"
    ):
        refuse_non_finite(frame, "scoring")
    frame.loc[1, "kl"] = float("inf")
    with pytest.raises(io.ArtifactError, match="layer 1"):
        refuse_non_finite(frame, "scoring")
    assert refuse_non_finite(frame.iloc[:1], "scoring") is not None


def test_a_hand_edited_solution_stops_before_assembly_naming_the_file(tmp_path):
    scores, costs = synthetic_tables(4, seed=3)
    scores.to_csv(tmp_path / "scores.csv", index=False)
    costs.to_csv(tmp_path / "costs.csv", index=False)
    out = tmp_path / "solution.json"
    assert (
        cli.main(
            [
                "search",
                "--scores",
                str(tmp_path / "scores.csv"),
                "--costs",
                str(tmp_path / "costs.csv"),
                "--throughput",
                "1.5x",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    verify_solution(out, tmp_path / "scores.csv", tmp_path / "costs.csv")  # as the search wrote it: passes
    sol = json.loads(out.read_text())
    layer = next(i for i, b in enumerate(sol["layers"]) if b["ffn"] != "ffn_noop")
    sol["layers"][layer]["ffn"] = "ffn_noop"  # consistent edit of one block, costs left as the solver wrote them
    out.write_text(json.dumps(sol))
    with pytest.raises(
        io.ArtifactError, match=rf"^{out}: solution does not verify: .*costs\.\w+ = .* but the tables give"
    ):
        verify_solution(out, tmp_path / "scores.csv", tmp_path / "costs.csv")


@pytest.fixture(scope="module")
def tiny_library(tmp_path_factory):
    from fixtures import parent_and_library

    return parent_and_library(tmp_path_factory.mktemp("corrupt_library"))


def _overwrite_mid_tensor(path, name, value):
    """Overwrite one float32 element in the middle of tensor `name` in place (the header stays valid)."""
    raw = bytearray(path.read_bytes())
    n = int.from_bytes(raw[:8], "little")
    start, end = json.loads(raw[8 : 8 + n])[name]["data_offsets"]
    at = 8 + n + (start + end) // 2 // 4 * 4
    raw[at : at + 4] = struct.pack("<f", value)
    path.write_bytes(bytes(raw))


def test_overwritten_bytes_that_decode_to_finite_numbers_stop_every_library_reader(tiny_library, tmp_path):
    from puzzle import assemble, library, scoring
    from puzzle.paper import tables as paper_tables

    parent, clean = tiny_library
    lib = tmp_path / "library"
    shutil.copytree(clean, lib)
    layers = [("attn_kv2", "ffn_100"), ("attn_kv1", "ffn_50"), ("attn_noop", "ffn_linear")]
    path = lib / "layer_1" / "ffn_50.safetensors"
    record = json.loads(path.with_suffix(".json").read_text())["file"]
    assert record == {"bytes": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    untouched, _ = assemble.assemble_state(parent, lib, layers, "decoupled")  # an untouched library passes
    assert library.verify_entry(path) == record["sha256"]

    _overwrite_mid_tensor(path, "mlp.up_proj.weight", 0.5)
    tensors = io.load_safetensors(path)  # still a readable file of finite weights: only the hash tells
    assert bool(torch.isfinite(tensors["mlp.up_proj.weight"]).all())
    assert untouched["model.layers.1.mlp.up_proj.weight"].dtype == torch.float32
    before = io.load_safetensors(clean / "layer_1" / path.name)["mlp.up_proj.weight"]
    assert not torch.equal(tensors["mlp.up_proj.weight"], before)
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    message = (
        f"{path}: sha256 {actual}, but {path.with_suffix('.json')} records {record['sha256']}: the file "
        f"was changed after BLD wrote it; rerun its bld job (delete {path} and ffn_50.json, then run "
        "snakemake again)"
    )
    readers = {
        "scoring": lambda: scoring.read_library_file(path),
        "assemble": lambda: assemble.assemble_state(parent, lib, layers, "decoupled"),
        "paper": lambda: paper_tables.library_summary(lib),
    }
    for reader, read in readers.items():
        with pytest.raises(io.ArtifactError) as e:
            read()
        assert str(e.value) == message, reader


def test_a_library_file_that_changed_size_or_has_no_record_is_refused(tiny_library, tmp_path):
    from puzzle import library

    lib = tmp_path / "library"
    shutil.copytree(tiny_library[1], lib)
    path = lib / "layer_0" / "attn_kv1.safetensors"
    size = path.stat().st_size
    path.write_bytes(path.read_bytes() + b"\0" * 8)
    with pytest.raises(
        io.ArtifactError,
        match=rf"^{path}: {size + 8} bytes, but {path.with_suffix('.json')} records "
        rf"{size}: a changed file; rerun its bld job",
    ):
        library.load_entry(path)
    path.with_suffix(".json").write_text('{"variant": "attn_kv1"}')
    with pytest.raises(io.ArtifactError, match=rf"^{path}: {path.with_suffix('.json')} records no size and sha256"):
        library.load_entry(path)
    path.with_suffix(".json").unlink()
    with pytest.raises(io.ArtifactError, match=rf"^{path.with_suffix('.json')}: file does not exist"):
        library.load_entry(path)
