"""Experiment config: load, fill defaults from the JSON schema, validate, and fail in one line.

The same validation runs in the Snakefile (before any job starts) and in every CLI stage.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import shlex
from collections.abc import Callable, Iterable
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
        return f"expected {err.schema.get('x-expected') or f'a string matching {arg}'}"
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


def validate(
    cfg: dict[str, Any], node: dict[str, Any] | None = None, prefix: str = "", stage: str | None = None
) -> dict[str, Any]:
    """Fill defaults and validate `cfg` (a whole config, or one section when `node` is given).

    A whole config also gets the checks across keys (RELATIONS): all of them, or with `stage` only
    those whose keys that stage declares (a stage's --cfg holds only its own keys, the rest defaults).
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
        declared = None if stage is None else _declared(stage)
        for keys, check in RELATIONS:
            if declared is None or all(_within(k.split("."), declared) for k in keys):
                check(cfg)
    return cfg


# ---- checks across keys that JSON schema cannot express ------------------------------------------
# Each is (the keys it reads, the check). The Snakefile and `puzzle validate` run them all on the
# whole config, before any job; a stage given --cfg runs those whose keys it declares.


def _bad(key: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(f"config error: {key} = {json.dumps(value, sort_keys=True)}: expected {expected}")


def _check_parent_train(cfg: dict[str, Any]) -> None:
    t = cfg["parent"]["train"]
    if t["num_heads"] % t["num_kv_heads"]:
        raise _bad(
            "parent.train.num_kv_heads", t["num_kv_heads"], f"a divisor of parent.train.num_heads = {t['num_heads']}"
        )
    if t["hidden_size"] % t["num_heads"]:
        raise _bad(
            "parent.train.hidden_size", t["hidden_size"], f"a multiple of parent.train.num_heads = {t['num_heads']}"
        )


def _check_data_files(cfg: dict[str, Any]) -> None:
    if cfg["data"]["source"] == "files" and not cfg["data"]["files"]:
        raise _bad("data.files", [], "at least one file when data.source = files")


def corpora(cfg: dict[str, Any]) -> list[str]:
    """The shard folders the data stage writes: the main corpus ("files" for local files), then the extra ones."""
    main = "files" if cfg["data"]["source"] == "files" else cfg["data"]["corpus"]
    return list(dict.fromkeys([main, *cfg["data"]["extra_corpora"]]))


def _check_serve_engine(cfg: dict[str, Any]) -> None:
    """A serving engine other than transformers must be able to run every block of the search space."""
    if cfg["serve"]["engine"] != "transformers":
        conflict = serving.conflict(cfg["serve"]["engine"], cfg["search_space"], parent_config(cfg))
        if conflict:
            raise ConfigError(f"config error: {conflict}")


def _check_corpora(cfg: dict[str, Any]) -> None:
    for key in ("bld", "scoring"):
        corpus = cfg[key]["corpus"]
        if corpus is not None and corpus not in corpora(cfg):
            raise _bad(f"{key}.corpus", corpus, f"one of {corpora(cfg)} (data.corpus + data.extra_corpora)")


def _check_target(cfg: dict[str, Any]) -> None:
    target = cfg["search"]["target"]
    if target not in cfg["costs"]["targets"]:
        raise _bad("search.target", target, f"one of costs.targets {sorted(cfg['costs']['targets'])}")


def _check_scenarios(cfg: dict[str, Any]) -> None:
    for key in ("costs.scenarios", "evaluate.scenarios"):
        section, leaf = key.split(".")
        names = [s["name"] for s in cfg[section][leaf]]
        dup = next((n for i, n in enumerate(names) if n in names[:i]), None)
        if dup is not None:
            raise _bad(f"{key}.name", dup, f"a name used once in {key}")
    scenario, names = cfg["search"]["scenario"], [s["name"] for s in cfg["costs"]["scenarios"]]
    if scenario is not None and scenario not in names:
        raise _bad("search.scenario", scenario, f"null or one of costs.scenarios {names}")


def _check_budget(key: str, kind: str, value: Any) -> None:
    from puzzle.search.targets import parse_target  # lazily: the search package imports pandas

    try:
        parse_target(kind, value)
    except ConfigError as err:
        raise ConfigError(f"config error: {str(err).replace(f'search.{kind}', key, 1)}") from None


def _check_search_budgets(cfg: dict[str, Any]) -> None:
    s = cfg["search"]
    for kind in ("throughput", "memory", "latency"):
        _check_budget(f"search.{kind}", kind, s[kind])
    for i, value in enumerate(s["sweep"]):
        _check_budget(f"search.sweep.{i}", s["sweep_resource"], value)


def _check_paper_budgets(cfg: dict[str, Any]) -> None:
    for key in ("sweep", "evaluate"):  # the paper's throughput sweep and its evaluated children
        for i, value in enumerate(cfg["paper"][key]):
            _check_budget(f"paper.{key}.{i}", "throughput", value)


def _check_gkd_loss(cfg: dict[str, Any]) -> None:
    if not any(cfg["gkd"]["loss"].values()):
        raise _bad("gkd.loss", cfg["gkd"]["loss"], "at least one term true (cosine, kl or lm)")


def _check_search_space(cfg: dict[str, Any]) -> None:
    """The parent's KV heads must be divisible by every kv_heads choice, and the space must offer
    something besides the parent's own blocks (else there is nothing to search)."""
    from puzzle import blocks

    parent = blocks.ParentShape.from_config(parent_config(cfg))
    space = cfg["search_space"]
    for i, k in enumerate(space["attention"]["kv_heads"]):
        if parent.num_key_value_heads % k:
            raise _bad(
                f"search_space.attention.kv_heads.{i}",
                k,
                f"a divisor of the parent's {parent.num_key_value_heads} KV heads",
            )
    attn, ffn = blocks.search_space(parent, space)
    if len(attn) == 1 and len(ffn) == 1:
        raise _bad("search_space", space, f"at least one variant besides the parent's {attn[0]} and {ffn[0]}")


def _check_scoring_parts(cfg: dict[str, Any]) -> None:
    from puzzle import score_plan

    score_plan.check_parts(cfg, parent_config(cfg))


MAX_POSITIONS = 1 << 20  # the longest window of a parent whose config.json does not say


def _check_seq_lens(cfg: dict[str, Any]) -> None:
    """Windows no longer than the parent's positions (its max_position_embeddings; a config.json
    without one gets a sane bound that still stops a 1e8-token window before any job)."""
    limit = parent_config(cfg).get("max_position_embeddings", MAX_POSITIONS)
    for key in ("activations.seq_len", "scoring.seq_len", "gkd.seq_len", "evaluate.seq_len"):
        section, leaf = key.split(".")
        value = cfg[section][leaf]
        if value is not None and value > limit:
            raise _bad(key, value, f"at most the parent's max_position_embeddings = {limit}")


RELATIONS: list[tuple[tuple[str, ...], Callable[[dict[str, Any]], None]]] = [
    (("parent.train",), _check_parent_train),
    (("data",), _check_data_files),
    (("data", "bld.corpus", "scoring.corpus"), _check_corpora),
    (("search.target", "costs.targets"), _check_target),
    (("costs.scenarios", "evaluate.scenarios", "search.scenario"), _check_scenarios),
    (("search",), _check_search_budgets),
    (("paper.sweep", "paper.evaluate"), _check_paper_budgets),
    (("gkd.loss",), _check_gkd_loss),
    (("search_space", "parent"), _check_search_space),
    (("serve.engine", "search_space", "parent"), _check_serve_engine),
    (("scoring.parts", "scoring.candidates_per_pass", "search_space", "parent"), _check_scoring_parts),
    (("parent", "activations.seq_len", "scoring.seq_len", "gkd.seq_len", "evaluate.seq_len"), _check_seq_lens),
]


def load(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read a YAML config file, apply `overrides` (deep-merged), fill defaults and validate."""
    return validate(deep_merge(_read(path), overrides or {}))


def load_layered(paths: Iterable[str | os.PathLike]) -> dict[str, Any]:
    """Several YAML config files deep-merged in order (later keys win, as with Snakemake's
    `--configfile A B`), then defaults filled and validated."""
    merged: dict[str, Any] = {}
    for path in paths:
        merged = deep_merge(merged, _read(path))
    return validate(merged)


def _read(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config error: config file {str(p)!r} does not exist")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{p}:{mark.line + 1}:{mark.column + 1}" if mark else str(p)
        what = " ".join(str(getattr(e, "problem", None) or e).split())
        raise ConfigError(f"config error: {where}: not valid YAML ({what})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config error: {str(p)!r} must hold a mapping of keys, not {type(raw).__name__}")
    return raw


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
            raise ConfigError(
                f"config error: parent.path = {cfg['parent']['path']!r}: expected a folder with config.json"
            )
        return json.loads(p.read_text())
    t = cfg["parent"]["train"]
    return {
        "max_position_embeddings": embedded_max_positions(t),
        "hidden_size": t["hidden_size"],
        "num_attention_heads": t["num_heads"],
        "num_key_value_heads": t["num_kv_heads"],
        "intermediate_size": t["intermediate_size"],
        "num_hidden_layers": t["num_layers"],
    }


def embedded_max_positions(train: dict[str, Any]) -> int:
    """Positions of the embedded parent: longer than its training windows, so that cost scenarios
    and generation can run past them."""
    return max(2048, train["seq_len"])


def embedded_corpora() -> list[str]:
    """The corpora `data.source: embedded` can build (the schema's enum of data.corpus)."""
    return schema()["properties"]["data"]["properties"]["corpus"]["enum"]


# ---- what each stage reads ----------------------------------------------------------------------
# A stage gets exactly the keys it declares: the rules build its --cfg from STAGE_KEYS (stage_arg), a
# --cfg holding any other key stops, and reading an undeclared key raises UndeclaredKey naming it, so
# no key silently takes its default. A key is dotted ("parent.path"); "{name}" matches any one key
# (filled by stage_arg's keyword arguments). STAGE_AFTER names the stages whose outputs a stage
# reads: a rule also carries a digest of their keys (upstream), so that Snakemake's params trigger
# reruns it, and with it the upstream job, after the upstream job was changed and killed.
# A new config key: add it to the stage that reads it.

STAGE_KEYS: dict[str, tuple[str, ...]] = {
    "data": ("data", "seed", "parent.path"),
    "parent": ("parent", "seed", "threads", "device", "data.source", "data.corpus"),
    "activations": ("activations", "seed", "threads", "device", "parent.path", "parent.train.seq_len"),
    # activations, the parent and its vocabulary: the planner sizes an online teacher (bld.teacher)
    "bld": (
        "bld",
        "search_space",
        "seed",
        "threads",
        "device",
        "activations",
        "parent.path",
        "parent.train.seq_len",
        "data.tokenizer.vocab_size",
    ),
    "score": ("scoring", "search_space", "bld.mode", "seed", "threads", "device", "data.source", "data.corpus"),
    # only the job's own target, so editing one target reruns that target alone
    "costs": (
        "costs.targets.{target}",
        "costs.scenarios",
        "costs.repeats",
        "costs.warmup",
        "costs.n_copies",
        "costs.statistic",
        "costs.clock",
        "costs.threads",
        "costs.interval",
        "costs.bootstrap",
        "costs.remeasure",
        "costs.on_noise",
        "search_space",
        "threads",
        "device",
    ),
    "search": ("search", "search_space.ffn.multiple_of"),
    "assemble": ("bld.mode",),
    "gkd": ("gkd", "seed", "threads", "device"),
    "evaluate": ("evaluate", "threads", "device"),
    "compress": ("seed", "threads", "device"),
}

STAGE_AFTER: dict[str, tuple[str, ...]] = {
    "data": (),
    "parent": ("data",),
    "activations": ("parent", "data"),
    "bld": ("activations",),
    "score": ("bld", "data"),
    "costs": ("parent",),
    "scores": ("score",),  # the per-layer score tables merged (no config of its own)
    "search": ("scores", "costs"),
    "assemble": ("search", "bld"),
    "gkd": ("assemble", "data"),
    "evaluate": ("gkd", "assemble", "search", "data"),
    "summary": ("evaluate",),  # eval/summary.csv
    "compress": ("parent", "data"),
    "compress_eval": ("compress", "search", "data"),  # Table 18's compressed parents, evaluated
    "report": ("summary", "compress_eval"),  # the paper's tables and figures (puzzle report)
}


class UndeclaredKey(KeyError):
    """A stage read a config key that its STAGE_KEYS entry does not declare (a bug in the stage)."""


class StageConfig(dict):
    """A stage's view of the config: only its declared keys; reading another names the key."""

    stage = ""
    prefix = ""

    def __missing__(self, key: str) -> Any:
        raise UndeclaredKey(
            f"stage {self.stage!r} reads config key {self.prefix + str(key)!r}, "
            f"which config.STAGE_KEYS[{self.stage!r}] does not declare"
        )


def _declared(stage: str) -> list[list[str]]:
    if stage not in STAGE_KEYS:
        raise ConfigError(f"config error: stage {stage!r}: expected one of {sorted(STAGE_KEYS)}")
    return [k.split(".") for k in STAGE_KEYS[stage]]


def _matches(pattern: list[str], path: list[str]) -> bool:
    return all(p == k or p.startswith("{") for p, k in zip(pattern, path))


def _within(path: list[str], declared: list[list[str]]) -> bool:
    """`path` is a declared key or lies inside one."""
    return any(len(d) <= len(path) and _matches(d, path) for d in declared)


def _above(path: list[str], declared: list[list[str]]) -> bool:
    """`path` is a section holding a declared key (parent of "parent.path")."""
    return any(len(d) > len(path) and _matches(d, path) for d in declared)


def _undeclared(raw: Any, declared: list[list[str]], path: list[str]) -> str | None:
    for key, value in raw.items():
        p = [*path, str(key)]
        if _within(p, declared):
            continue
        if isinstance(value, dict) and _above(p, declared):
            bad = _undeclared(value, declared, p)
            if bad is not None:
                return bad
            continue
        return ".".join(p)
    return None


def _restrict(cfg: dict[str, Any], declared: list[list[str]], stage: str, path: list[str]) -> StageConfig:
    out = StageConfig()
    out.stage, out.prefix = stage, "".join(f"{p}." for p in path)
    for key, value in cfg.items():
        p = [*path, key]
        if _within(p, declared):
            out[key] = value
        elif isinstance(value, dict) and _above(p, declared):
            out[key] = _restrict(value, declared, stage, p)
    return out


def stage_config(cfg: dict[str, Any], stage: str) -> StageConfig:
    """The keys of a validated config that `stage` declares."""
    return _restrict(cfg, _declared(stage), stage, [])


def _keys_json(cfg: dict[str, Any], keys: Iterable[str], fill: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in keys:
        parts = [fill.get(part[1:-1], part) if part.startswith("{") else part for part in key.split(".")]
        while parts[-1].startswith("{"):  # not filled: the whole section
            parts.pop()
        *parents, leaf = parts
        src, dst = cfg, out
        for p in parents:
            src, dst = src[p], dst.setdefault(p, {})
        dst[leaf] = copy.deepcopy(src[leaf])
    return out


def stage_arg(cfg: dict[str, Any], stage: str, **fill: str) -> str:
    """Shell-quoted JSON of the keys `stage` declares: what its Snakemake rule passes as `--cfg`.
    Rules pass it as `params`, so Snakemake reruns exactly the rules whose keys changed."""
    _declared(stage)
    return shlex.quote(json.dumps(_keys_json(cfg, STAGE_KEYS[stage], fill), sort_keys=True))


def upstream_stages(stage: str) -> list[str]:
    """Every stage whose outputs `stage` reads, directly or through others (sorted)."""
    seen: set[str] = set()
    todo = list(STAGE_AFTER[stage])
    while todo:
        s = todo.pop()
        if s not in seen:
            seen.add(s)
            todo.extend(STAGE_AFTER[s])
    return sorted(seen)


def upstream(cfg: dict[str, Any], stage: str, **fill: str) -> str:
    """A digest of the keys of every stage upstream of `stage`: a rule's `params: upstream=...`."""
    keys = [k for s in upstream_stages(stage) for k in STAGE_KEYS.get(s, ())]
    text = json.dumps(_keys_json(cfg, keys, fill), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---- CLI glue: how a stage gets its config ------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser, section: str | None = None) -> None:
    """`--config FILE` (a whole experiment YAML) or `--cfg JSON` (the keys a stage declares)."""
    what = (
        f"{{{section!r}: {{...}}}}" if section else "the keys this stage reads (config.STAGE_KEYS), e.g. {'seed': 0}"
    )
    parser.add_argument("--config", help="experiment config YAML (validated, defaults filled)")
    parser.add_argument("--cfg", help=f"JSON of {what}; how Snakemake rules call stages")


def from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The validated config of a stage: from --cfg JSON, else --config FILE, else all defaults.

    Run as `puzzle <stage>` (args.stage), the stage gets only the keys it declares (STAGE_KEYS),
    and a --cfg holding any other key stops with that key named."""
    stage = getattr(args, "stage", None)
    stage = stage if stage in STAGE_KEYS else None
    if getattr(args, "cfg", None):
        try:
            raw = json.loads(args.cfg)
        except json.JSONDecodeError as e:
            raise ConfigError(f"config error: --cfg is not valid JSON ({e})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config error: --cfg = {args.cfg}: expected a JSON object of config keys")
        if stage is not None:
            bad = _undeclared(raw, _declared(stage), [])
            if bad is not None:
                raise ConfigError(
                    f"config error: --cfg key {bad!r}: stage {stage!r} does not read it; "
                    f"expected keys of {list(STAGE_KEYS[stage])}"
                )
        cfg = validate(raw, stage=stage)
    elif getattr(args, "config", None):
        cfg = load(args.config)
    else:
        cfg = validate({})
    return cfg if stage is None else stage_config(cfg, stage)


def main(args: argparse.Namespace) -> None:
    """`puzzle validate --config FILE`."""
    if not args.config:
        raise ConfigError("config error: --config FILE is required")
    cfg = load(args.config)
    print(f"{args.config}: valid (experiment {cfg['experiment']!r})")
