"""One layer's shape in the Nemotron-NAS format, as frozen attribute objects (the shape of NVIDIA's own
`block_config.py`): `config.block_configs[i].attention.n_heads_in_group`, `.ffn.ffn_mult`, ...

vLLM and TensorRT-LLM read these as attributes, never as dict keys. `to_dict()` writes the published JSON:

    {"attention": {"n_heads_in_group": int | None, "no_op": bool, "replace_with_linear": bool},
     "ffn":       {"ffn_mult": float | None, "no_op": bool, "replace_with_linear": bool}}

A width that `ffn_mult` cannot express (tiny models) is an explicit `intermediate_size` in place of `ffn_mult`;
only transformers (this package's model code) runs such a block. The published fields that no released model
sets (`sparsify`, `window_length`, ...) must be null/false; a file that has them gets them back as it gave them.

Imports only the standard library: it ships as remote code beside configuration_decilm.py, and the torch-free
search plans with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any


def ffn_mult_to_intermediate_size(ffn_mult: float, hidden_size: int) -> int:
    """The published formula (HF remote code, vLLM, TRT-LLM and llama.cpp agree)."""
    width = int(2 * ffn_mult * hidden_size / 3)
    return ((width + 255) // 256) * 256


def intermediate_size_to_ffn_mult(intermediate_size: int, hidden_size: int) -> float | None:
    """The `ffn_mult` that yields exactly this width, or None when no `ffn_mult` can express it."""
    ffn_mult = 1.5 * intermediate_size / hidden_size
    if ffn_mult_to_intermediate_size(ffn_mult, hidden_size) == intermediate_size:
        return ffn_mult
    return None


# Published fields no released model uses, with the only values we accept (we run none of these features).
_UNUSED = {
    "attention": {
        "sparsify": None, "window_length": None, "num_sink_tokens": None,
        "use_prefill_window_in_sink_attention": False, "unshifted_sink": False,
    },
    "ffn": {"sparsify": None},
}


def _unused_fields(where: str, kind: str, entry: Mapping[str, Any]) -> tuple[str, ...]:
    """Names of the unused published fields `entry` carries; raises when one is set."""
    for key, off in _UNUSED[kind].items():
        if entry.get(key, off) not in (off, None, False):
            raise ValueError(f"{where}.{key}={entry[key]!r} is not supported (only null/false)")
    return tuple(sorted(k for k in _UNUSED[kind] if k in entry))


def _known_keys(where: str, cls: type, entry: Mapping[str, Any]) -> None:
    known = {f.name for f in fields(cls) if f.name != "given"}
    unknown = sorted(set(entry) - known)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}: expected some of {sorted(known)}")


def _flags(where: str, no_op: Any, replace_with_linear: Any) -> None:
    for name, value in (("no_op", no_op), ("replace_with_linear", replace_with_linear)):
        if not isinstance(value, bool):
            raise ValueError(f"{where}.{name}={value!r}: expected true or false")
    if no_op and replace_with_linear:
        raise ValueError(f"{where}: no_op and replace_with_linear are both set")


@dataclass(frozen=True)
class AttentionConfig:
    no_op: bool = False
    replace_with_linear: bool = False
    n_heads_in_group: int | None = None  # query heads per KV head: KV heads = num_attention_heads // this
    sparsify: Any = None
    window_length: int | None = None
    num_sink_tokens: int | None = None
    use_prefill_window_in_sink_attention: bool = False
    unshifted_sink: bool = False
    # Which unused published fields the source had, so that to_dict() writes back exactly what was read.
    given: tuple[str, ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any], where: str, num_attention_heads: int) -> AttentionConfig:
        _known_keys(where, cls, entry)
        given = _unused_fields(where, "attention", entry)
        config = cls(**entry, given=given)
        _flags(where, config.no_op, config.replace_with_linear)
        group = config.n_heads_in_group
        if config.no_op or config.replace_with_linear:
            return config
        if isinstance(group, bool) or not isinstance(group, int) or group <= 0 or num_attention_heads % group:
            raise ValueError(
                f"{where}.n_heads_in_group={group!r} does not divide num_attention_heads={num_attention_heads}"
            )
        return config

    def num_key_value_heads(self, num_attention_heads: int) -> int:
        """KV heads of this attention (0 when it is no-op or linear: it keeps no KV cache)."""
        if self.no_op or self.replace_with_linear:
            return 0
        return num_attention_heads // self.n_heads_in_group

    def to_dict(self) -> dict[str, Any]:
        out = {"n_heads_in_group": self.n_heads_in_group, "no_op": self.no_op,
               "replace_with_linear": self.replace_with_linear}
        return {**out, **{k: getattr(self, k) for k in self.given}}


@dataclass(frozen=True)
class FFNConfig:
    no_op: bool = False
    replace_with_linear: bool = False
    ffn_mult: float | None = None  # width = ffn_mult_to_intermediate_size(ffn_mult, hidden_size)
    intermediate_size: int | None = None  # set only for a width ffn_mult cannot express (then ffn_mult is None)
    sparsify: Any = None
    given: tuple[str, ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any], where: str, hidden_size: int) -> FFNConfig:
        """Validated. A given `ffn_mult` is kept as it is (readers compute the width from it); an explicit width
        becomes `ffn_mult` whenever that expresses it exactly (every runtime reads `ffn_mult`)."""
        _known_keys(where, cls, entry)
        given = _unused_fields(where, "ffn", entry)
        no_op, linear = entry.get("no_op", False), entry.get("replace_with_linear", False)
        _flags(where, no_op, linear)
        extras = {k: entry[k] for k in given}
        if no_op or linear:
            return cls(no_op=no_op, replace_with_linear=linear, **extras, given=given)
        ffn_mult, width = entry.get("ffn_mult"), entry.get("intermediate_size")
        if width is None:
            if ffn_mult is None:
                raise ValueError(f"{where}.ffn_mult: missing (give ffn_mult or intermediate_size)")
            if isinstance(ffn_mult, bool) or not isinstance(ffn_mult, (int, float)) or ffn_mult <= 0:
                raise ValueError(f"{where}.ffn_mult={ffn_mult!r}: expected a positive number")
            return cls(ffn_mult=float(ffn_mult), **extras, given=given)
        if isinstance(width, bool) or not isinstance(width, int) or width <= 0:
            raise ValueError(f"{where}.intermediate_size={width!r} is not a positive integer")
        if ffn_mult is not None and ffn_mult_to_intermediate_size(float(ffn_mult), hidden_size) != width:
            raise ValueError(f"{where}: ffn_mult={ffn_mult!r} and intermediate_size={width} disagree")
        exact = intermediate_size_to_ffn_mult(width, hidden_size)
        if exact is None:
            return cls(intermediate_size=width, **extras, given=given)
        return cls(ffn_mult=float(ffn_mult) if ffn_mult is not None else exact, **extras, given=given)

    def width(self, hidden_size: int) -> int:
        """SwiGLU width (0 when this FFN is no-op or linear)."""
        if self.no_op or self.replace_with_linear:
            return 0
        if self.intermediate_size is not None:
            return self.intermediate_size
        return ffn_mult_to_intermediate_size(self.ffn_mult, hidden_size)

    def to_dict(self) -> dict[str, Any]:
        size = {"ffn_mult": self.ffn_mult} if self.intermediate_size is None else {
            "intermediate_size": self.intermediate_size
        }
        out = {**size, "no_op": self.no_op, "replace_with_linear": self.replace_with_linear}
        return {**out, **{k: getattr(self, k) for k in self.given}}


@dataclass(frozen=True)
class BlockConfig:
    attention: AttentionConfig
    ffn: FFNConfig

    @classmethod
    def from_dict(
        cls, block: Any, where: str, hidden_size: int, num_attention_heads: int
    ) -> BlockConfig:
        """From a `block_configs` entry: a dict as config.json holds it, or a BlockConfig (validated again
        against this model's shape)."""
        if isinstance(block, BlockConfig):
            block = block.to_dict()
        if not isinstance(block, Mapping) or set(block) != {"attention", "ffn"}:
            raise ValueError(f"{where}: expected {{'attention': {{...}}, 'ffn': {{...}}}}, got {block!r}")
        return cls(
            attention=AttentionConfig.from_dict(block["attention"], f"{where}.attention", num_attention_heads),
            ffn=FFNConfig.from_dict(block["ffn"], f"{where}.ffn", hidden_size),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"attention": self.attention.to_dict(), "ffn": self.ffn.to_dict()}
