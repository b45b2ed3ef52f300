"""The one checkpoint loader: a parent or child from its safetensors, in its stored dtype, placed on the job's devices.

    model = checkpoint.load(path)                        # Llama/Mistral/Qwen2 parent or Nemotron-NAS child
    model = checkpoint.load(path, decilm=True)           # a Llama-family parent as a DeciLMForCausalLM
    model = checkpoint.load(path, device="auto")         # over all GPUs the job holds when it needs more than one

The model is built with its parameters on the meta device (no random init, no memory) and every tensor is read
from the files straight into its final place (`load_state_dict(assign=True)`): host memory peaks at the model's
bytes plus one tensor. Tensors are read with plain file reads rather than safetensors' mmap, whose touched pages
count as resident beside a converted (dtype-cast) copy. The Llama -> Nemotron-NAS conversion is the same read
under the same tensor names into a DeciLM built on meta, so there is never a second copy of the model.

Placement (`device="auto"` or a list of devices): accelerate's `infer_auto_device_map` over the devices, with the
model's `_no_split_modules` kept whole, fills the devices in order; a model that fits the first stays there as
one plain module, a larger one is dispatched (`dispatch_model`) and must not be moved with `.to(device)`
afterwards. `input_device(model)` is where its input ids go either way; code that calls a dispatched layer's
parts directly (scoring) runs them inside `weights_on(layer)`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, overload

import torch
from transformers import (
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PretrainedConfig,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from puzzle.io import ArtifactError
from puzzle.nemotron_nas import DeciLMConfig, DeciLMForCausalLM

CausalLM = LlamaForCausalLM | MistralForCausalLM | Qwen2ForCausalLM | DeciLMForCausalLM
MODELS: dict[str, tuple[type[PretrainedConfig], type[CausalLM]]] = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "mistral": (MistralConfig, MistralForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    "nemotron-nas": (DeciLMConfig, DeciLMForCausalLM),
}
# safetensors dtype names -> torch dtypes (the ones a model checkpoint holds)
DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
# Fraction of each GPU left free by `device="auto"` for activations, KV caches and workspaces.
GPU_HEADROOM = 0.2
_LAYER_PREFIX = "model.layers."
Device = str | int | torch.device


def read_config(path: str | os.PathLike) -> dict:
    """A checkpoint folder's config.json, with its model_type checked against the ones loaded here."""
    file = Path(path) / "config.json"
    try:
        cfg = json.loads(file.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{file}: file does not exist (expected a checkpoint folder)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{file}: not valid JSON ({e})") from None
    if cfg.get("model_type") not in MODELS:
        raise ArtifactError(f"{file}: model_type {cfg.get('model_type')!r} is not one of {sorted(MODELS)}")
    return cfg


def weight_files(path: str | os.PathLike) -> list[Path]:
    """The safetensors files of a checkpoint folder: the shards its index names, else model.safetensors."""
    d = Path(path)
    index = d / "model.safetensors.index.json"
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ArtifactError(f"{index}: not a safetensors index with a weight_map ({e!r})") from None
        return [d / name for name in sorted(set(weight_map.values()))]
    if (d / "model.safetensors").exists():
        return [d / "model.safetensors"]
    raise ArtifactError(f"{d}: no model.safetensors or model.safetensors.index.json (safetensors checkpoints only)")


def read_header(file: Path) -> tuple[int, dict]:
    """(header length, header without __metadata__) of a safetensors file, checked against the file's size."""
    size = file.stat().st_size
    with open(file, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if size < 8 or n > size - 8:
            raise ArtifactError(f"{file}: header of {n} bytes in a file of {size}: truncated or not safetensors")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ArtifactError(f"{file}: safetensors header is not JSON ({e})") from None
    header.pop("__metadata__", None)
    return n, header


Target = tuple[torch.device, torch.dtype] | None


def read_tensors(file: Path, place: Callable[[str, torch.dtype], Target] | None = None
                 ) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) for the tensors of a safetensors file, in file order, with plain reads (no mmap'd pages stay
    resident beside a copy). `place(name, stored dtype)` gives each tensor's (device, dtype), or None to skip it
    unread (default: the CPU, stored dtype). A tensor kept on the CPU as stored is read straight into its own
    memory; any other goes through one reused staging buffer into its place, so the host holds one tensor extra."""
    n, header = read_header(file)
    size = file.stat().st_size
    staging = torch.empty(0, dtype=torch.uint8)
    with open(file, "rb") as f:
        for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
            stored = DTYPES.get(info["dtype"])
            if stored is None:
                raise ArtifactError(f"{file}: tensor {name!r} has dtype {info['dtype']}, expected one of {[*DTYPES]}")
            target = place(name, stored) if place is not None else (torch.device("cpu"), stored)
            if target is None:
                continue
            start, end = info["data_offsets"]
            shape = info["shape"]
            nbytes = math.prod(shape) * stored.itemsize
            if end - start != nbytes or 8 + n + end > size:
                raise ArtifactError(
                    f"{file}: tensor {name!r} spans bytes {start}..{end} of the data; its shape {shape} "
                    f"needs {nbytes} and the file holds {size - 8 - n}: truncated or corrupt"
                )
            direct = target == (torch.device("cpu"), stored)
            if direct:
                tensor = torch.empty(shape, dtype=stored)
                raw = tensor.reshape(-1).view(torch.uint8)
            else:
                if staging.numel() < nbytes:
                    staging = torch.empty(nbytes, dtype=torch.uint8)
                raw = staging[:nbytes]
            f.seek(8 + n + start)
            if nbytes and f.readinto(raw.numpy()) != nbytes:
                raise ArtifactError(f"{file}: tensor {name!r} ends past the end of the file")
            if not direct:
                tensor = torch.empty(shape, device=target[0], dtype=target[1])
                tensor.copy_(raw.view(stored).view(shape))
            yield name, tensor


def model_config(cfg: dict, decilm: bool = False, layers: int | None = None) -> PretrainedConfig:
    """The transformers config of a config.json dict: as stored, or (`decilm`) a Llama-family parent's DeciLM
    config with every block the parent's; `layers` keeps only the first that many layers."""
    from puzzle.convert import decilm_config_from_llama

    cfg = dict(cfg)
    if layers is not None:
        if not 0 < layers <= cfg["num_hidden_layers"]:
            raise ValueError(f"layers = {layers}: expected 1..{cfg['num_hidden_layers']} (the checkpoint's layers)")
        cfg["num_hidden_layers"] = layers
        if "block_configs" in cfg:
            cfg["block_configs"] = cfg["block_configs"][:layers]
    if decilm and cfg["model_type"] != "nemotron-nas":
        return decilm_config_from_llama(cfg)
    return MODELS[cfg["model_type"]][0].from_dict(cfg)


def empty_model(config: PretrainedConfig, dtype: torch.dtype) -> CausalLM:
    """The model of `config` with its parameters on the meta device; buffers (RoPE's inv_freq, computed in
    __init__ and not in any checkpoint) are real CPU tensors."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        model = MODELS[config.model_type][1]._from_config(config, dtype=dtype)
    return model.eval()


def empty(path: str | os.PathLike, dtype: torch.dtype) -> CausalLM:
    """The model of checkpoint folder `path` in `dtype` with its parameters on the meta device (`empty_model`) and
    its generation config: for a caller that places every tensor itself (GKD's sharded loading and output)."""
    path = Path(path)
    model = empty_model(model_config(read_config(path)), dtype)
    model.tie_weights()  # tied embeddings are one parameter, as `load` makes them
    _read_generation_config(model, path)
    return model


def _read_generation_config(model: CausalLM, path: Path) -> None:
    if (path / "generation_config.json").exists():
        model.generation_config = GenerationConfig.from_pretrained(path)


def tensors(path: str | os.PathLike, dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) for every tensor of checkpoint folder `path` on the CPU, floating ones in `dtype`, one at a time
    (`read_tensors`: the host holds the tensor and at most one staging buffer)."""
    for file in weight_files(path):
        yield from read_tensors(file, lambda _, stored: (torch.device("cpu"), dtype if stored.is_floating_point
                                                          else stored))


def job_devices() -> list[torch.device]:
    """The devices this job holds: every visible CUDA GPU, else the CPU."""
    if torch.cuda.is_available():
        return [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    return [torch.device("cpu")]


def gpu_budget(devices: Sequence[torch.device], headroom: float = GPU_HEADROOM) -> dict[int | str, int]:
    """accelerate's max_memory for `devices`: each GPU's free memory less `headroom` of its total."""
    out: dict[int | str, int] = {}
    for d in devices:
        if d.type != "cuda":
            raise ValueError(f"device {d}: a placement over several devices takes CUDA GPUs (or explicit max_memory)")
        free, total = torch.cuda.mem_get_info(d)
        out[d.index] = max(0, int(free - headroom * total))
    return out


def device_map(model: CausalLM, max_memory: dict[int | str, int]) -> dict[str, int | str]:
    """Module name -> device filling `max_memory`'s devices in order, `_no_split_modules` kept whole; an error when
    the model does not fit them."""
    from accelerate import infer_auto_device_map

    placed = infer_auto_device_map(
        model, max_memory=max_memory, no_split_module_classes=model._no_split_modules, dtype=model.dtype
    )
    outside = sorted({str(v) for v in placed.values()} - {str(k) for k in max_memory})
    if outside:
        need = model_bytes(model)
        raise ValueError(
            f"model of {need / 2**30:.2f} GiB does not fit the job's devices {max_memory} (bytes); "
            f"{outside} would be needed: give the job more or larger GPUs"
        )
    return placed


def _device_of(name: str, placed: dict[str, int | str]) -> int | str:
    """The device of tensor `name` under a device map (its longest module prefix)."""
    parts = name.split(".")
    for i in range(len(parts), -1, -1):
        prefix = ".".join(parts[:i])
        if prefix in placed:
            return placed[prefix]
    raise KeyError(f"{name}: in no module of the device map")


def _assign(model: CausalLM, files: list[Path], dtype: torch.dtype | None, placed: dict[str, int | str],
            layers: int | None, decilm: bool) -> None:
    """Read every tensor the model holds into place, in `dtype` (None: as stored); one clear error when the files
    and the model's tensors differ."""
    wanted = set(model.state_dict())
    zero_o_bias = decilm and model.config.attention_bias and any(k.endswith("o_proj.bias") for k in wanted)
    found: set[str] = set()
    unexpected: list[str] = []

    def place(name: str, stored: torch.dtype) -> Target:
        if layers is not None and name.startswith(_LAYER_PREFIX) and int(name.split(".")[2]) >= layers:
            return None
        if name not in wanted:
            unexpected.append(name)
            return None
        device = _device_of(name, placed)  # a disk-offloaded module is read to the CPU, then dispatch offloads it
        cast = dtype if dtype is not None and stored.is_floating_point else stored
        return torch.device("cpu" if device == "disk" else device), cast

    for file in files:
        state = {}
        for name, tensor in read_tensors(file, place):
            state[name] = tensor
            found.add(name)
        model.load_state_dict(state, strict=False, assign=True)
        del state
    if zero_o_bias:  # the format has one attention_bias for q/k/v/o: Qwen2's o_proj has none, so zero
        for i in range(model.config.num_hidden_layers):
            name = f"model.layers.{i}.self_attn.o_proj.bias"
            if name not in found:
                w = model.get_parameter(f"model.layers.{i}.self_attn.o_proj.weight")
                model.load_state_dict({name: torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)},
                                      strict=False, assign=True)
                found.add(name)
    if model.config.tie_word_embeddings:
        found.add("lm_head.weight")
    missing = sorted(wanted - found)
    if missing or unexpected:
        raise ArtifactError(
            f"{files[0].parent}: the safetensors do not match config.json: missing {missing[:8]}"
            f"{' ...' if len(missing) > 8 else ''}, unexpected {sorted(unexpected)[:8]}"
            f"{' ...' if len(unexpected) > 8 else ''} ({len(missing)} missing, {len(unexpected)} unexpected)"
        )
    model.tie_weights()


@overload
def load(path: str | os.PathLike, *, dtype: str | torch.dtype = ..., device: Device | Sequence[Device] = ...,
         decilm: Literal[True], layers: int | None = ..., max_memory: dict[int | str, int] | None = ...,
         offload_folder: str | os.PathLike | None = ...) -> DeciLMForCausalLM: ...
@overload
def load(path: str | os.PathLike, *, dtype: str | torch.dtype = ..., device: Device | Sequence[Device] = ...,
         decilm: bool = ..., layers: int | None = ..., max_memory: dict[int | str, int] | None = ...,
         offload_folder: str | os.PathLike | None = ...) -> CausalLM: ...
def load(
    path: str | os.PathLike,
    *,
    dtype: str | torch.dtype = "auto",
    device: Device | Sequence[Device] = "cpu",
    decilm: bool = False,
    layers: int | None = None,
    max_memory: dict[int | str, int] | None = None,
    offload_folder: str | os.PathLike | None = None,
) -> CausalLM:
    """The model of checkpoint folder `path`, in eval mode, with every tensor from its safetensors.

    dtype: "auto" keeps each tensor's stored dtype; a torch dtype casts floating tensors while reading.
    device: one device (the model goes there whole); "auto" (the job's devices, `job_devices`) or a list of
        devices: filled in order (`device_map`), dispatched over them when it needs more than the first.
    decilm: a Llama-family parent is returned as the equal DeciLMForCausalLM (a Nemotron-NAS checkpoint as is).
    layers: only the first `layers` decoder layers (the others are never read).
    max_memory, offload_folder: accelerate's, for a placement over explicit budgets (a "cpu" or "disk" budget
        offloads there; disk needs `offload_folder`).
    A caller that runs a dispatched model's parts directly does so inside `weights_on`."""
    path = Path(path)
    cfg = read_config(path)
    cast = None if dtype == "auto" else dtype
    if not (cast is None or isinstance(cast, torch.dtype)):
        raise ValueError(f"dtype = {dtype!r}: expected 'auto' or a torch.dtype")
    files = weight_files(path)
    stored = _stored_dtype(files[0])
    model = empty_model(model_config(cfg, decilm, layers), cast or stored)

    if max_memory is None:
        devices = job_devices() if device == "auto" else device
        devices = [torch.device(d) for d in devices] if isinstance(devices, (list, tuple)) else [torch.device(devices)]
        placed = {"": devices[0]} if len(devices) == 1 else device_map(model, gpu_budget(devices))
    else:
        placed = device_map(model, max_memory)
    where = set(placed.values())
    single = torch.device(where.pop()) if len(where) == 1 and where != {"disk"} else None
    if single is not None:
        placed = {"": single}
    _assign(model, files, cast, placed, layers, decilm)
    _read_generation_config(model, path)
    if single is not None:
        return model.to(single)  # the parameters are there already; this moves the RoPE buffers
    from accelerate import dispatch_model

    return dispatch_model(model, placed, offload_dir=None if offload_folder is None else str(offload_folder))


def _stored_dtype(file: Path) -> torch.dtype:
    """The dtype of the first floating tensor of a safetensors file (the model is built in it)."""
    for info in read_header(file)[1].values():
        if DTYPES.get(info["dtype"], torch.int8).is_floating_point:
            return DTYPES[info["dtype"]]
    return torch.float32


def input_device(model: torch.nn.Module) -> torch.device:
    """Where a model's input ids go: where its first parameter is, or for a dispatched model where its embedding
    runs (an offloaded embedding's weight is on meta; its hook brings it to that device)."""
    if getattr(model, "hf_device_map", None):
        hook = getattr(model.get_input_embeddings(), "_hf_hook", None)
        if getattr(hook, "execution_device", None) is not None:
            return torch.device(hook.execution_device)
    return next(model.parameters()).device


def model_bytes(model: torch.nn.Module) -> int:
    """Bytes of a model's parameters (tied ones once)."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


def devices_for(device: torch.device) -> list[torch.device]:
    """The devices a stage that picked `device` places its model over: all the job's GPUs for a CUDA device
    (a model that fits the first stays there), else `device` alone."""
    return job_devices() if device.type == "cuda" else [device]


@contextmanager
def weights_on(module: torch.nn.Module) -> Iterator[torch.device]:
    """`module` of a dispatched model with its weights present on its execution device, for code that calls its parts
    directly (past the per-block hooks that would otherwise load them); yields that device, where the inputs go.
    Each accelerate hook in the module runs its pre_forward (an offloaded part's weights are loaded) and, on leaving,
    its post_forward (they are offloaded again). A plain module yields the device of its weights."""
    hooks = [(m, m._hf_hook) for m in module.modules() if getattr(m, "_hf_hook", None) is not None]
    for m, hook in hooks:
        hook.pre_forward(m)
    try:
        tensor = next(module.parameters(), None)
        if tensor is None:
            tensor = next(module.buffers())
        yield tensor.device
    finally:
        for m, hook in hooks:
            hook.post_forward(m, None)

