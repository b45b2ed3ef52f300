"""Atomic file I/O: every artifact is written to a temporary file and renamed into place,
so a killed job never leaves a half-written file behind."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pandas is imported by the CSV functions alone
    import pandas as pd

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; artifacts get the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file's content; a missing or malformed file raises ArtifactError naming it and the position."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{path}: file does not exist") from None
    except UnicodeDecodeError as e:
        raise ArtifactError(f"{path}: not a text file ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path}:{e.lineno}:{e.colno}: not valid JSON ({e.msg})") from None


def read_csv(path: str | os.PathLike) -> pd.DataFrame:
    """A CSV file as a pandas DataFrame; a missing, binary, empty or malformed file raises
    ArtifactError naming it."""
    import pandas as pd

    try:
        return pd.read_csv(path)
    except FileNotFoundError:
        raise ArtifactError(f"{path}: file does not exist") from None
    except UnicodeDecodeError as e:
        raise ArtifactError(f"{path}: not a text CSV ({e.reason} at byte {e.start})") from None
    except pd.errors.EmptyDataError:
        raise ArtifactError(f"{path}: empty file: expected a CSV with a header row") from None
    except pd.errors.ParserError as e:
        raise ArtifactError(f"{path}: not a valid CSV ({' '.join(str(e).split())})") from None


def write_csv(path: str | os.PathLike, frame: pd.DataFrame) -> None:
    """Write a pandas DataFrame atomically (no index column)."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class ArtifactError(ValueError):
    """A file a stage reads is missing, truncated or corrupt; the message names the file and what is wrong."""


def save_safetensors(path: str | os.PathLike, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """Save torch tensors as safetensors atomically (contiguous copies, as the format requires).

    Same tensors and metadata, same bytes: the library writes its header's `__metadata__` in hash
    order, so the header is re-serialized with sorted keys (the data offsets do not change), which
    keeps the sha256 in assembly.json stable."""
    from safetensors.torch import save

    raw = save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata)
    n = int.from_bytes(raw[:8], "little")
    header = json.dumps(json.loads(raw[8 : 8 + n]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # the data stays 8-byte aligned, as the format asks
    with atomic_path(path) as tmp:
        tmp.write_bytes(len(header).to_bytes(8, "little") + header + raw[8 + n :])


def load_safetensors(path: str | os.PathLike, device: str = "cpu") -> dict:
    """The tensors of a safetensors file; a truncated or corrupt file, or a NaN or inf in a float
    tensor, raises ArtifactError naming the file (and the tensor)."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not os.path.exists(path):
        raise ArtifactError(f"{path}: file does not exist")
    try:
        tensors = load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError) as e:
        raise ArtifactError(f"{path}: not a readable safetensors file ({e})") from None
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ArtifactError(f"{path}: tensor {name!r} holds NaN or inf: expected finite weights (a corrupt file?)")
    return tensors
