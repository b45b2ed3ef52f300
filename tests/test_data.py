import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tokenizers
import yaml

from jsonl_corpus import write_repeated_jsonl
from puzzle import config as pzc
from puzzle import data
from puzzle.documents import iter_file_docs
from puzzle.io import ArtifactError

REPO = Path(__file__).resolve().parents[1]


def _cfg(**data_over):
    return pzc.validate({"data": {"valid_fraction": 0.1, "test_fraction": 0.1, **data_over}})


def test_kjv_is_read_without_importing_the_package():
    docs = data.kjv_docs()
    assert len(docs) == 4635
    assert sum(map(len, docs)) + len(docs) == 4_295_537  # the text with its line breaks
    assert "In the beginning God created the heaven and the earth." in " ".join(docs[:3])


def test_stdlib_source_skips_tests_and_pydoc_topics():
    files = data.stdlib_files()
    names = {f.name for f in files}
    assert {"os.py", "json.py" if "json.py" in names else "__init__.py"} <= names and len(files) > 300
    for f in files:
        assert not any(part.startswith("test") for part in f.parts[-3:-1]), f
        assert not f.name.startswith("test_") and f.parts[-2:] != ("pydoc_data", "topics.py")
    assert len(data.pydoc_topics_docs()) > 50


def test_split_is_by_document_deterministic_and_disjoint():
    sources = {"a": [f"doc a{i} " * 5 for i in range(100)], "b": [f"doc b{i} " * 5 for i in range(50)]}
    s1 = data.split_documents(sources, _cfg()["data"], seed=0)
    s2 = data.split_documents(sources, _cfg()["data"], seed=0)
    s3 = data.split_documents(sources, _cfg()["data"], seed=1)
    assert s1 == s2 and s1 != s3
    assert [len(s1[s]) for s in data.SPLITS] == [120, 15, 15]
    assert not set(s1["train"]) & set(s1["valid"]) and not set(s1["valid"]) & set(s1["test"])
    assert sorted(s1["train"] + s1["valid"] + s1["test"]) == sorted(sources["a"] + sources["b"])
    # every source keeps its share of held-out documents
    assert sum(d.startswith("doc b") for d in s1["valid"]) == 5


def test_tokenizer_and_shards_round_trip_exactly(tmp_path):
    docs = {"x": [f"def f{i}(x):\n    return x * {i}  # héllo ✓\n" for i in range(200)]}
    splits = data.split_documents(docs, _cfg()["data"], seed=0)
    tok = data.train_tokenizer(splits["train"], 300, tmp_path / "tok")
    again = data.load_tokenizer(tmp_path / "tok")
    text = "def f7(x):\n    return x * 7  # héllo ✓\n"
    assert again.decode(again(text)["input_ids"]) == text
    assert again(text)["input_ids"] == tok(text)["input_ids"]
    meta = data.write_corpus_shards(again, docs, _cfg()["data"], 0, tmp_path / "x")
    valid = data.read_shard(tmp_path / "x" / "valid.bin")
    assert valid.dtype == np.uint16 and meta["splits"]["valid"]["tokens"] == len(valid)
    eos = again.eos_token_id
    pieces = np.split(np.asarray(valid), np.flatnonzero(np.asarray(valid) == eos) + 1)[:-1]
    assert [again.decode(p[:-1].tolist()) for p in pieces] == splits["valid"]


def test_local_jsonl_and_text_files(tmp_path):
    j = tmp_path / "d.jsonl"
    j.write_text("\n".join(json.dumps({"text": f"record {i}"}) for i in range(3)) + "\n")
    t = tmp_path / "d.txt"
    t.write_text("one whole document")
    assert list(iter_file_docs(str(j), "text")) == ["record 0", "record 1", "record 2"]
    assert list(iter_file_docs(str(t), "text")) == ["one whole document"]
    with pytest.raises(pzc.ConfigError, match="data.text_field = 'body'"):
        list(iter_file_docs(str(j), "body"))


def test_limit_chars_keeps_whole_documents_in_order():
    assert list(data.limit_chars(["aaaa", "bbbb", "cccc"], 5)) == ["aaaa", "bbbb"]
    assert list(data.limit_chars(iter(["aaaa"]), None)) == ["aaaa"]


def test_one_more_corpus_is_tokenized_with_the_experiment_tokenizer(tmp_path):
    cfg = pzc.validate({"data": {"corpus": "python", "max_chars": 60_000, "tokenizer": {"vocab_size": 300}}})
    with pytest.raises(pzc.ConfigError, match="no tokenizer"):
        data.run_corpus(cfg, "bible", tmp_path)
    data.run(cfg, tmp_path)
    meta = data.run_corpus(cfg, "bible", tmp_path)["bible"]
    tok = data.load_tokenizer(tmp_path / "tokenizer")
    assert meta["vocab_size"] == len(tok) and json.loads((tmp_path / "bible" / "meta.json").read_text()) == meta
    # the Bible splits as it does inside the mixed corpus ("kjv" sorts before the other sources), so
    # a narrow BLD never trains on the mixed corpus's held-out text
    kjv = list(data.limit_chars(data.kjv_docs(), 60_000))
    alone = data.split_documents({"kjv": kjv}, cfg["data"], cfg["seed"])
    mixed = data.split_documents({"kjv": kjv, "stdlib": [f"x = {i}" for i in range(50)]}, cfg["data"], cfg["seed"])
    assert {s: set(alone[s]) for s in data.SPLITS} == {s: set(mixed[s]) & set(kjv) for s in data.SPLITS}
    test = data.read_shard(tmp_path / "bible" / "test.bin")
    assert tok.decode(test[: test.tolist().index(tok.eos_token_id)].tolist()) == alone["test"][0]


# sha256 of the micro config's data stage (.test/config/config.yaml) as the in-memory stage wrote them
# before streaming (commit e93f2b1), under the interpreter and tokenizers these were recorded with: the
# stdlib corpus is the interpreter's own files and the BPE's merges are the library's.
MICRO_SHA256 = {
    "mixed/meta.json": "d54e63c8fe93b6d8bca212ef74af4bbaa7685584e2d1a29b2720a14f96f2b401",
    "mixed/test.bin": "f272405cc32a735b66d31f67fcdd9ad7082f1f31c19be0b7315aadfde3a23cea",
    "mixed/train.bin": "4d39f7e1369688f63deccb03040b2f09c507612c6b0c4d5476deee0af34da74a",
    "mixed/valid.bin": "37945ce99085959f3494cdaadf6ec1bc9224750f942a3d07d604639dcc63ea64",
    "tokenizer/tokenizer.json": "459d94a5ee297144095f8a145596e6dab9e2cd13d3d932efcc9666d6f40e54ee",
}


@pytest.mark.skipif(
    platform.python_version() != "3.11.7" or tokenizers.__version__ != "0.23.3",
    reason="MICRO_SHA256 was recorded with Python 3.11.7's stdlib and tokenizers 0.23.3",
)
@pytest.mark.parametrize("workers", [1, 2])
def test_micro_embedded_shards_are_the_in_memory_stages_bytes(tmp_path, workers):
    micro = yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text())
    cfg = pzc.load(REPO / "config" / "config.yaml", pzc.deep_merge(micro, {"data": {"workers": workers}}))
    data.run(cfg, tmp_path)
    assert {k: hashlib.sha256((tmp_path / k).read_bytes()).hexdigest() for k in MICRO_SHA256} == MICRO_SHA256


def test_shards_are_the_hf_tokenizers_ids_of_each_document(tmp_path):
    """The workers run the rust tokenizer directly: its ids are the HF tokenizer's (special-token text too)."""
    docs = {"x": [f"def f{i}(x):\n    return x * {i}  # héllo ✓ <|eos|>\n" * (1 + i % 3) for i in range(120)]}
    cfg = _cfg(workers=2)["data"]
    splits = data.split_documents(docs, cfg, seed=0)
    tok = data.train_tokenizer(splits["train"], 300, tmp_path / "tok")
    meta = data.write_corpus_shards(tok, docs, cfg, 0, tmp_path / "x")
    for s in data.SPLITS:
        ref = [t for ids in tok(splits[s], add_special_tokens=False)["input_ids"] for t in ids + [tok.eos_token_id]]
        assert data.read_shard(tmp_path / "x" / f"{s}.bin").tolist() == ref
        assert meta["splits"][s] == {"documents": len(splits[s]), "characters": sum(map(len, splits[s])),
                                     "tokens": len(ref)}


def _files_cfg(files, **over):
    return pzc.validate({"data": {"source": "files", "files": [str(f) for f in files], "valid_fraction": 0.1,
                                  "test_fraction": 0.1, "tokenizer": {"vocab_size": 300}, **over}})


def _local_files(root):
    root.mkdir()
    lines = [json.dumps({"text": f"record {i}: " + "words and more words " * (i % 7), "id": i}) for i in range(150)]
    (root / "a.jsonl").write_text("\n".join(lines[:100]) + "\n\n" + "\n".join(lines[100:]) + "\n")
    (root / "b.txt").write_text("a whole file\n\nis one document\n")
    return [root / "a.jsonl", root / "b.txt"]


def test_local_files_stream_split_by_hash_in_order_for_any_worker_count(tmp_path, monkeypatch):
    files = _local_files(tmp_path / "in")
    docs = list(data.file_documents([str(f) for f in files], "text", None))
    assert len(docs) == 151 and docs[-1] == "a whole file\n\nis one document\n"
    labeled = list(data.hash_split(docs, _files_cfg(files)["data"], 0, "files"))
    assert labeled == list(data.hash_split(iter(docs), _files_cfg(files)["data"], 0, "files"))
    assert labeled != list(data.hash_split(docs, _files_cfg(files)["data"], 1, "files"))
    assert [s for s, _ in labeled[:2]] == ["valid", "test"] and [d for _, d in labeled] == docs
    # 151 documents at 10% / 10%: the first two held out, then each hash lands in its fraction
    n = {s: sum(x == s for x, _ in labeled) for s in data.SPLITS}
    assert sum(n.values()) == 151 and 5 <= n["valid"] <= 25 and 5 <= n["test"] <= 25

    seen: list[list[str]] = []  # the documents each run's BPE learns from
    train = data.train_tokenizer
    monkeypatch.setattr(data, "train_tokenizer", lambda d, *a: train(seen.append(list(d)) or seen[-1], *a))
    out = {}
    for w in (1, 2):
        meta = data.run(_files_cfg(files, workers=w, tokenizer={"vocab_size": 300, "train_chars": 2000}),
                        tmp_path / f"w{w}")["files"]
        out[w] = {s: (tmp_path / f"w{w}" / "files" / f"{s}.bin").read_bytes() for s in data.SPLITS}
        assert meta["sources"] == {"files": 151}
    assert out[1] == out[2]
    # the BPE learned from the first training documents only, each whole, until 2,000 characters
    first_train = [d for s, d in labeled if s == "train"]
    k = len(seen[0])
    assert seen[0] == seen[1] == first_train[:k] and k < len(first_train)
    assert sum(map(len, seen[0][:-1])) < 2000 <= sum(map(len, seen[0]))

    tok = data.load_tokenizer(tmp_path / "w2" / "tokenizer")
    for s in data.SPLITS:
        docs_s = [d for x, d in labeled if x == s]
        ref = [t for ids in tok(docs_s, add_special_tokens=False)["input_ids"] for t in ids + [tok.eos_token_id]]
        assert data.read_shard(tmp_path / "w2" / "files" / f"{s}.bin").tolist() == ref


def test_a_parquet_file_streams_its_text_column(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    texts = [f"row {i} " * (i % 5 + 1) for i in range(2500)]  # three reader batches
    pq.write_table(pa.table({"id": list(range(2500)), "body": texts}), tmp_path / "d.parquet")
    assert list(iter_file_docs(str(tmp_path / "d.parquet"), "body")) == texts
    with pytest.raises(pzc.ConfigError, match=r"'text': not a column of .*d.parquet \(columns: \['id', 'body'\]\)"):
        next(iter_file_docs(str(tmp_path / "d.parquet"), "text"))
    pq.write_table(pa.table({"text": ["fine", None]}), tmp_path / "null.parquet")
    with pytest.raises(ArtifactError, match=r"null.parquet: row 1: column 'text' is NoneType, expected a string"):
        list(iter_file_docs(str(tmp_path / "null.parquet"), "text"))


def test_bad_local_files_stop_with_the_file_and_line_and_leave_no_shard(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n\n{"text": "cut\n')
    with pytest.raises(ArtifactError, match=r"bad.jsonl:3:14: expected one JSON object per line \(Invalid control"):
        list(iter_file_docs(str(bad), "text"))
    bad.write_text('{"text": "fine"}\n{"text": 7}\n')
    with pytest.raises(ArtifactError, match=r"bad.jsonl:2: field 'text' is int, expected a string"):
        list(iter_file_docs(str(bad), "text"))
    bad.write_text('{"text": "fine"}\n["text"]\n')
    with pytest.raises(pzc.ConfigError, match=r"data.text_field = 'text': not a field of .*bad.jsonl:2"):
        list(iter_file_docs(str(bad), "text"))
    bad.write_bytes(b'{"text": "fine"}\n{"text": "\xff"}\n')
    with pytest.raises(ArtifactError, match=r"bad.jsonl:2: expected UTF-8 text"):
        list(iter_file_docs(str(bad), "text"))
    # two documents cannot fill three splits: stopped before any shard or meta.json is in place
    two = tmp_path / "two.jsonl"
    two.write_text('{"text": "one document"}\n{"text": "another document"}\n')
    with pytest.raises(pzc.ConfigError, match=r"the 2 documents of 'files' leave the train split empty"):
        data.run(_files_cfg([two], workers=1), tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").rglob("*") if p.is_file() and p.parent.name == "files") == []


# Runs the stage on a 300 MB jsonl with its address space limited to what the imports take plus a third
# of the file: reading the file whole (the stage before streaming) cannot fit, the stream must.
_LIMITED = """
import json, resource, sys
from puzzle import config as pzc, data
jsonl, tok, out, headroom = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
data.load_tokenizer(tok)  # every import the stage makes, before the limit
size = next(int(line.split()[1]) << 10 for line in open("/proc/self/status") if line.startswith("VmSize"))
resource.setrlimit(resource.RLIMIT_AS, (size + headroom, size + headroom))
try:
    open(jsonl).read()
    whole = True
except MemoryError:
    whole = False
cfg = pzc.validate({"data": {"source": "files", "files": [jsonl], "tokenizer": {"path": tok}, "workers": 2}})
print(json.dumps({"whole_file_read": whole, "meta": data.run(cfg, out)["files"]}))
"""


def test_a_300_mb_jsonl_streams_under_an_address_space_limit(tmp_path):
    docs, repeats = write_repeated_jsonl(tmp_path / "big.jsonl", 300_000_000)
    size = (tmp_path / "big.jsonl").stat().st_size
    tok = data.train_tokenizer(docs, 1200, tmp_path / "tok")
    expected = repeats * sum(len(tok(d, add_special_tokens=False)["input_ids"]) + 1 for d in docs)
    assert expected == repeats * 8 * 101  # one token per word, and EOS

    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "TOKENIZERS_PARALLELISM": "false",
           "RAYON_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "1"}  # no per-thread reservations of address space
    r = subprocess.run([sys.executable, "-c", _LIMITED, str(tmp_path / "big.jsonl"), str(tmp_path / "tok"),
                        str(tmp_path / "out"), str(size // 3)], env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["whole_file_read"] is False
    splits = result["meta"]["splits"]
    assert sum(m["tokens"] for m in splits.values()) == expected
    assert sum(m["documents"] for m in splits.values()) == repeats * 8 == result["meta"]["sources"]["files"]
    assert sum(m["characters"] for m in splits.values()) == repeats * sum(map(len, docs))
    assert sum((tmp_path / "out" / "files" / f"{s}.bin").stat().st_size for s in data.SPLITS) == 2 * expected
    (tmp_path / "big.jsonl").unlink()  # pytest keeps the last runs' folders
