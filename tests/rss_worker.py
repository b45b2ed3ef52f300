"""Peak host memory of model loaders, each in a fresh process: `python tests/rss_worker.py CHECKPOINT OUT ENTRY...`
prints one line {"entry", "rss_bytes", "model_bytes"} per entry: the peak resident memory (VmHWM) growth from
after the imports to after the load with every parameter read once (so mmap'd or lazily read weights count), and
the loaded parameters' bytes; {"entry", "error"} when it failed.

ENTRY names one loader by the signature every version of it has had (benchmarks/loader_rss.py runs this same file
against an older checkout to compare)."""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import torch

import puzzle  # noqa: F401  (registers nemotron-nas with transformers)
from puzzle import activations, bld_teacher, checkpoint, compress, convert, evaluate, scoring

CPU = torch.device("cpu")


def entries(path: str, out: str | None) -> dict[str, Any]:
    def checkpoint_load(**kw: Any) -> Any:
        return checkpoint.load(path, **kw)

    def converted() -> Any:
        convert.convert_llama(path, out)  # written, then loaded as the child it is
        return None

    return {
        "checkpoint.load": lambda: checkpoint_load(),
        "checkpoint.load_decilm": lambda: checkpoint_load(decilm=True),
        "checkpoint.load_float32": lambda: checkpoint_load(dtype=torch.float32),
        "activations.load_parent": lambda: activations.load_parent(path, CPU),
        "scoring.load_parent": lambda: scoring.load_parent(path, CPU, torch.bfloat16),
        "evaluate.load_model": lambda: evaluate.load_model(path, CPU, torch.bfloat16),
        "compress.load_parent": lambda: compress.load_parent(path, CPU),
        "bld_teacher.load_prefix": lambda: bld_teacher.load_prefix(path, 5, [CPU], torch.bfloat16),
        "convert.convert_llama": converted,
    }


def save_random_llama(path: str | Path, vocab: int = 32000) -> Path:
    """A random Llama of about 168M parameters (hidden 1024, 12 layers, vocab 32000, tied embeddings; 143M with
    vocab 8000) saved in bf16 as one safetensors file (336 MB): written from random tensors, no model ever built."""
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab, hidden_size=1024, intermediate_size=2816, num_hidden_layers=12,
                         num_attention_heads=16, num_key_value_heads=4, tie_word_embeddings=True, dtype="bfloat16")
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in LlamaForCausalLM(config).state_dict().items() if k != "lm_head.weight"}
    g = torch.Generator().manual_seed(0)
    state = {k: torch.randn(shape, generator=g).to(torch.bfloat16) for k, shape in shapes.items()}
    path = Path(path)
    config.save_pretrained(path)
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path


def status(field: str) -> int:
    """A /proc/self/status memory field, bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def reset_peak() -> int:
    """The resident bytes now, with the peak (VmHWM) reset to them. ru_maxrss is not used: Linux keeps it across
    fork and exec, so a child of a large process (pytest holding the test model) starts at its parent's peak."""
    Path("/proc/self/clear_refs").write_text("5")
    return status("VmRSS")


def measure(entry: str, path: str, out: str) -> dict[str, Any]:
    run = entries(path, out)[entry]
    base = reset_peak()
    model = run()
    if model is None:  # convert: the model is the one it wrote
        model_bytes = sum(f.stat().st_size for f in Path(out).glob("*.safetensors"))
    else:
        with torch.no_grad():
            for p in model.parameters():
                p.sum()  # touches every page of every weight
        model_bytes = checkpoint.model_bytes(model)
    return {"entry": entry, "rss_bytes": status("VmHWM") - base, "model_bytes": model_bytes}


def main(path: str, out: str, *names: str) -> None:
    """Each loader in a child forked after the imports (a fresh process that need not import again)."""
    for i, entry in enumerate(names):
        pid = os.fork()
        if pid == 0:
            try:
                print(json.dumps(measure(entry, path, f"{out}_{i}")), flush=True)
                os._exit(0)
            except BaseException:
                traceback.print_exc()
                sys.stderr.flush()
                os._exit(1)
        if os.waitpid(pid, 0)[1]:
            print(json.dumps({"entry": entry, "error": "failed (traceback on stderr)"}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
