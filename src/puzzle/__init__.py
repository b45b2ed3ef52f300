"""puzzle: a reproducible implementation of NVIDIA's Puzzle (distillation-based NAS for LLM inference)."""

__version__ = "0.1.0"

try:
    import torch  # noqa: F401
    import transformers  # noqa: F401
except ImportError:  # planning stages (search, validate) run without them
    pass
else:
    # `AutoModelForCausalLM.from_pretrained(child_dir)` works once puzzle is imported.
    from puzzle.nemotron_nas import register as _register

    _register()
