import json

import numpy as np
import pytest

from puzzle import config as pzc
from puzzle import data


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
    assert data.file_docs(str(j), "text") == ["record 0", "record 1", "record 2"]
    assert data.file_docs(str(t), "text") == ["one whole document"]
    with pytest.raises(pzc.ConfigError, match="data.text_field = 'body'"):
        data.file_docs(str(j), "body")


def test_limit_chars_keeps_whole_documents_in_order():
    assert data.limit_chars(["aaaa", "bbbb", "cccc"], 5) == ["aaaa", "bbbb"]
    assert data.limit_chars(["aaaa"], None) == ["aaaa"]


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
    kjv = data.limit_chars(data.kjv_docs(), 60_000)
    alone = data.split_documents({"kjv": kjv}, cfg["data"], cfg["seed"])
    mixed = data.split_documents({"kjv": kjv, "stdlib": [f"x = {i}" for i in range(50)]}, cfg["data"], cfg["seed"])
    assert {s: set(alone[s]) for s in data.SPLITS} == {s: set(mixed[s]) & set(kjv) for s in data.SPLITS}
    test = data.read_shard(tmp_path / "bible" / "test.bin")
    assert tok.decode(test[: test.tolist().index(tok.eos_token_id)].tolist()) == alone["test"][0]
