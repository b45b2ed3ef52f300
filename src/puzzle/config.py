"""Experiment config: load, fill defaults from the JSON schema, validate, and fail in one line.

The same validation runs in the Snakefile (before any job starts) and in every CLI stage.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shlex
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from puzzle import serving


class ConfigError(ValueError):
    """A config value that does not fit the schema; the message is one line naming key and value."""


def schema() -> dict[str, Any]:
    return yaml.safe_load(resources.files("puzzle").joinpath("schema.yaml").read_text())


def _fill_defaults(node: dict[str, Any], value: Any) -> Any:
    """Recursively insert schema defaults for missing object keys (objects default to {})."""
    if not isinstance(value, dict) or node.get("type") != "object":
        return value
    for key, sub in node.get("properties", {}).items():
        if key not in value and "default" in sub:
            value[key] = copy.deepcopy(sub["default"])
        if key in value:
            value[key] = _fill_defaults(sub, value[key])
    return value


_FORMATS = jsonschema.FormatChecker()


@_FORMATS.checks("existing-path")
def _existing_path(value: object) -> bool:
    return not isinstance(value, str) or os.path.exists(os.path.expanduser(value))


def _expected(err: jsonschema.ValidationError) -> str:
    v, arg = err.validator, err.validator_value
    if v == "type":
        return f"expected {' or '.join(arg) if isinstance(arg, list) else arg}"
    if v == "enum":
        return f"expected one of {arg}"
    if v in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        op = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}[v]
        return f"expected a number {op} {arg}"
    if v == "format" and arg == "existing-path":
        return "expected a path that exists"
    if v == "pattern":
        return f"expected a string matching {arg}"
    return err.message


def _one_line(err: jsonschema.ValidationError) -> str:
    key = ".".join(str(p) for p in err.absolute_path) or "<top level>"
    if err.validator == "additionalProperties":
        known = sorted(err.schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(known))
        name = ".".join([*map(str, err.absolute_path), extra[0]]) if extra else key
        return f"unknown key {name!r}: expected one of {known}"
    if err.validator == "required":
        return f"{key}: {err.message}"
    return f"{key} = {json.dumps(err.instance)}: {_expected(err)}"


def validate(cfg: dict[str, Any], node: dict[str, Any] | None = None, prefix: str = "") -> dict[str, Any]:
    """Fill defaults and validate `cfg` (a whole config, or one section when `node` is given).

    Returns a new dict; raises ConfigError with one line naming the key, value and expectation.
    """
    whole = node is None
    node = schema() if whole else node
    cfg = _fill_defaults(node, copy.deepcopy(cfg if cfg is not None else {}))
    validator = jsonschema.Draft202012Validator(node, format_checker=_FORMATS)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: (list(e.absolute_path), e.validator))
    if errors:
        err = jsonschema.exceptions.best_match(errors)
        msg = _one_line(err)
        raise ConfigError(f"config error: {prefix}{msg}")
    if whole:
        _check_relations(cfg)
    return cfg


def _check_relations(cfg: dict[str, Any]) -> None:
    """Checks across keys that JSON schema cannot express."""
    t = cfg["parent"]["train"]
    if t["num_heads"] % t["num_kv_heads"]:
        raise ConfigError(
            f"config error: parent.train.num_kv_heads = {t['num_kv_heads']}: expected a divisor of "
            f"parent.train.num_heads = {t['num_heads']}"
        )
    if t["hidden_size"] % t["num_heads"]:
        raise ConfigError(
            f"config error: parent.train.hidden_size = {t['hidden_size']}: expected a multiple of "
            f"parent.train.num_heads = {t['num_heads']}"
        )
    if cfg["data"]["source"] == "files" and not cfg["data"]["files"]:
        raise ConfigError("config error: data.files = []: expected at least one file when data.source = files")
    if cfg["serve"]["engine"] != "transformers":
        conflict = serving.conflict(cfg["serve"]["engine"], cfg["search_space"], parent_config(cfg))
        if conflict:
            raise ConfigError(f"config error: {conflict}")


def load(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read a YAML config file, apply `overrides` (deep-merged), fill defaults and validate."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config error: config file {str(p)!r} does not exist")
    raw = yaml.safe_load(p.read_text()) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config error: {str(p)!r} must hold a mapping of keys, not {type(raw).__name__}")
    return validate(deep_merge(raw, overrides or {}))


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def results_dir(cfg: dict[str, Any]) -> str:
    return os.path.join(cfg["results_dir"], cfg["experiment"])


def parent_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The parent's HF config dict: read from the local checkpoint, or that of the embedded default."""
    if cfg["parent"]["path"]:
        p = Path(cfg["parent"]["path"]).expanduser() / "config.json"
        if not p.exists():
            raise ConfigError(f"config error: parent.path = {cfg['parent']['path']!r}: expected a folder with config.json")
        return json.loads(p.read_text())
    t = cfg["parent"]["train"]
    return {
        "hidden_size": t["hidden_size"],
        "num_attention_heads": t["num_heads"],
        "num_key_value_heads": t["num_kv_heads"],
        "intermediate_size": t["intermediate_size"],
        "num_hidden_layers": t["num_layers"],
    }


def embedded_corpora() -> list[str]:
    """The corpora `data.source: embedded` can build (the schema's enum of data.corpus)."""
    return schema()["properties"]["data"]["properties"]["corpus"]["enum"]


# ---- CLI glue: how a stage gets its config ------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser, section: str | None = None) -> None:
    """`--config FILE` (a whole experiment YAML) or `--cfg JSON` (the sections a stage reads)."""
    what = f"{{{section!r}: {{...}}}}" if section else "the sections this stage reads, e.g. {'seed': 0}"
    parser.add_argument("--config", help="experiment config YAML (validated, defaults filled)")
    parser.add_argument("--cfg", help=f"JSON of {what}; how Snakemake rules call stages")


def from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The validated config of a stage: from --cfg JSON, else --config FILE, else all defaults."""
    if getattr(args, "cfg", None):
        try:
            raw = json.loads(args.cfg)
        except json.JSONDecodeError as e:
            raise ConfigError(f"config error: --cfg is not valid JSON ({e})") from None
        return validate(raw)
    if getattr(args, "config", None):
        return load(args.config)
    return validate({})


def stage_section(args: argparse.Namespace, section: str) -> dict[str, Any]:
    return from_args(args)[section]


def cli_arg(cfg: dict[str, Any], *keys: str) -> str:
    """Shell-quoted JSON of the named keys (sections, or dotted keys such as "parent.path"):
    what a Snakemake rule passes as `--cfg`.

    Rules pass it as `params`, so Snakemake reruns exactly the rules whose keys changed.
    """
    out: dict[str, Any] = {}
    for key in keys:
        *parents, leaf = key.split(".")
        src, dst = cfg, out
        for p in parents:
            src, dst = src[p], dst.setdefault(p, {})
        dst[leaf] = src[leaf]
    return shlex.quote(json.dumps(out, sort_keys=True))


def main(args: argparse.Namespace) -> None:
    """`puzzle validate --config FILE`."""
    if not args.config:
        raise ConfigError("config error: --config FILE is required")
    cfg = load(args.config)
    print(f"{args.config}: valid (experiment {cfg['experiment']!r})")
