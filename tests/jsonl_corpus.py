"""A large generated .jsonl whose token count is known without tokenizing it (tests/test_data.py, benchmarks)."""

from __future__ import annotations

import json
from pathlib import Path


def write_repeated_jsonl(path: Path, size: int) -> tuple[list[str], int]:
    """Write about `size` bytes of jsonl: 8 documents of 100 long words, repeated. Returns (documents, repeats).

    A BPE trained on the 8 documents makes each word one token, so a line's tokens are known from its
    document alone."""
    words = ["".join(chr(97 + (i * 7 + j * j * 3) % 26) for j in range(40)) for i in range(8)]
    docs = [" ".join(words[(k + m * (k + 1)) % 8] for m in range(100)) for k in range(8)]
    block = "".join(json.dumps({"id": k, "text": d}) + "\n" for k, d in enumerate(docs))
    repeats = size // len(block)
    with open(path, "w") as f:
        for _ in range(repeats):
            f.write(block)
    return docs, repeats
