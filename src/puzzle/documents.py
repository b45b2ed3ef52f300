"""Documents of local files, read lazily in bounded memory: a .txt is one document, a .jsonl one per
line (the `text_field` of each record), a .parquet one per row (its `text_field` column).

Bad input stops at the first bad record with an error naming the file, the line or row and what was expected.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from puzzle.config import ConfigError
from puzzle.io import ArtifactError

PARQUET_BATCH_ROWS = 1024  # rows per pyarrow batch: a few MB of text held at a time


def iter_file_docs(path: str, text_field: str) -> Iterator[str]:
    """The documents of one local .txt / .jsonl / .parquet file, in file order."""
    p = Path(path).expanduser()
    if p.suffix == ".jsonl":
        return _jsonl_docs(p, text_field)
    if p.suffix == ".parquet":
        return _parquet_docs(p, text_field)
    return _text_doc(p)


def _text_doc(p: Path) -> Iterator[str]:
    # One document per file, as the stage always read it: a .txt is held whole while it is tokenized.
    try:
        yield p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ArtifactError(f"{p}: expected UTF-8 text ({e.reason} at byte {e.start})") from None


def _jsonl_docs(p: Path, text_field: str) -> Iterator[str]:
    # Lines as bytes, decoded one by one: a decoding error names its line (a text stream decodes ahead).
    with open(p, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ArtifactError(f"{p}:{n}: expected UTF-8 text ({e.reason} at byte {e.start})") from None
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ArtifactError(f"{p}:{n}:{e.colno}: expected one JSON object per line ({e.msg})") from None
            if not isinstance(rec, dict) or text_field not in rec:
                raise ConfigError(f"config error: data.text_field = {text_field!r}: not a field of {p}:{n}")
            text = rec[text_field]
            if not isinstance(text, str):
                raise ArtifactError(f"{p}:{n}: field {text_field!r} is {type(text).__name__}, expected a string")
            yield text


def _parquet_docs(p: Path, text_field: str) -> Iterator[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise RuntimeError(f"reading {p} needs pyarrow: pip install 'puzzle[parquet]' ({e})") from None
    try:
        pf = pq.ParquetFile(p)
    except Exception as e:  # pyarrow raises its own ArrowInvalid / OSError for a file that is not parquet
        raise ArtifactError(f"{p}: not a readable parquet file ({e})") from None
    names = pf.schema_arrow.names
    if text_field not in names:
        raise ConfigError(f"config error: data.text_field = {text_field!r}: not a column of {p} (columns: {names})")
    row = 0
    for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=[text_field]):
        for text in batch.column(0).to_pylist():
            if not isinstance(text, str):
                raise ArtifactError(
                    f"{p}: row {row}: column {text_field!r} is {type(text).__name__}, expected a string"
                )
            row += 1
            yield text
