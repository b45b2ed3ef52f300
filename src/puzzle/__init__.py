"""puzzle: a reproducible implementation of NVIDIA's Puzzle (distillation-based NAS for LLM inference)."""

__version__ = "0.1.0"
