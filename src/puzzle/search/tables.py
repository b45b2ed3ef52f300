"""The search's input tables: read, typed, and checked complete and plausible before any solve.

The artifact contract:

    scores.csv  layer, attention, ffn, kl, lm_loss, token_acc     (one row per composition)
    costs.csv   kind, variant, scenario, batch, input_len, output_len, prefill_ms, decode_ms,
                param_bytes, kv_bytes_per_token [, layer, device, dtype]

A layer with (a, f) takes prefill(a) + prefill(f) + output_len * (decode(a) + decode(f)) ms and
holds param_bytes + batch * (input_len + output_len) * kv_bytes_per_token bytes; the `non_block`
row (embeddings, final norm, LM head) is added once. Throughput = batch * output_len / time.

Complete: layers 0..L-1, each with every composition that any layer has (scoring writes every
attention x FFN variant of the library in every layer), one non_block row per (scenario, batch).
Plausible: no duplicate rows, finite values, KL >= 0, costs >= 0. A table that breaks one of
these (a row deleted, a file cut short, a hand edit) stops the search with one line naming it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from puzzle.config import ConfigError

METRICS = ("kl", "lm_loss", "token_acc")
SCORE_COLUMNS = ["layer", "attention", "ffn", *METRICS]
COST_COLUMNS = [
    "kind",
    "variant",
    "scenario",
    "batch",
    "input_len",
    "output_len",
    "prefill_ms",
    "decode_ms",
    "param_bytes",
    "kv_bytes_per_token",
]
COST_VALUES = ["prefill_ms", "decode_ms", "param_bytes", "kv_bytes_per_token"]
# optional: measured rows' bootstrap intervals (costs.interval); the search bounds its speed-up with them
INTERVAL_COLUMNS = ["prefill_ms_lo", "prefill_ms_hi", "decode_ms_lo", "decode_ms_hi"]
# KL(parent || model) >= 0; scoring sums per-token differences of log-sums in floating point, so an
# unchanged block may land a rounding error below 0, never more
KL_TOLERANCE = 1e-6


def _what(table: str, path: str | Path | None) -> str:
    """The head of a table's error: `scores: file 'x/scores.csv'`, or `scores` for a table built in memory."""
    return table if path is None else f"{table}: file {str(path)!r}"


def _read_csv(path: str | Path, what: str) -> pd.DataFrame:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{what} does not exist")
    try:
        return pd.read_csv(p)
    except UnicodeDecodeError as e:
        raise ConfigError(f"{what} is not a text CSV table ({e.reason} at byte {e.start})") from None
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as e:
        raise ConfigError(f"{what} is not a readable CSV table ({str(e).splitlines()[0]})") from None


def _require(frame: pd.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ConfigError(f"{what}: missing columns {missing}: expected {columns}")


def _numbers(frame: pd.DataFrame, col: str, what: str) -> pd.Series:
    values = pd.to_numeric(frame[col], errors="coerce")
    bad = values.isna() & frame[col].notna()
    if bad.any():
        raise ConfigError(
            f"{what}: column {col} = {frame.loc[bad, col].iloc[0]!r} in row {int(np.argmax(bad))}: expected a number"
        )
    return values


def _row(frame: pd.DataFrame, mask: pd.Series) -> str:
    """The first masked row, as a reader finds it in the file (data row number, 0-based)."""
    i = int(np.argmax(mask.to_numpy()))
    return f"row {i} ({', '.join(f'{k}={v}' for k, v in frame.iloc[i].items())})"


def check_scores(scores: pd.DataFrame, path: str | Path | None = None) -> pd.DataFrame:
    """Typed, sorted copy of a scores table, checked plausible and complete; errors name `path`, the
    file it was read from.

    A metric column is either fully measured (finite everywhere) or not at all (all empty, e.g.
    token_acc in the NVlabs library); kl is always measured."""
    what = _what("scores", path)
    _require(scores, SCORE_COLUMNS, what)
    s = scores[SCORE_COLUMNS].copy()
    for col in ("layer", *METRICS):
        s[col] = _numbers(s, col, what)
    for col in ("layer", "attention", "ffn", *METRICS):
        missing = s[col].isna()
        if col != "kl" and col in METRICS and missing.all():
            continue
        if missing.any() or (col in METRICS and not np.isfinite(s[col]).all()):
            bad = missing if missing.any() else ~np.isfinite(s[col])
            raise ConfigError(
                f"{what}: column {col} is missing or not finite in {_row(s, bad)}: "
                "expected a value in every row (file cut short?)"
            )
    if (s["layer"] % 1 != 0).any() or (s["layer"] < 0).any():
        raise ConfigError(f"{what}: {_row(s, (s['layer'] % 1 != 0) | (s['layer'] < 0))}: expected a layer index >= 0")
    negative = s["kl"] < -KL_TOLERANCE
    if negative.any():
        raise ConfigError(f"{what}: kl < 0 in {_row(s, negative)}: expected KL(parent || model) >= 0")
    s["layer"] = s["layer"].astype(int)
    s[["attention", "ffn"]] = s[["attention", "ffn"]].astype(str)
    dup = s.duplicated(["layer", "attention", "ffn"])
    if dup.any():
        row = s[dup].iloc[0]
        raise ConfigError(f"{what}: duplicate row for layer {row.layer} {row.attention}+{row.ffn}")
    layers = sorted(s["layer"].unique())
    if layers != list(range(len(layers))):
        gaps = sorted(set(range(max(layers) + 1)) - set(layers)) if layers else []
        raise ConfigError(f"{what}: layers = {layers[:5]}...: expected 0..L-1 without gaps (missing {gaps[:5]})")
    check_complete(s, path=path)
    return s.sort_values(["layer", "attention", "ffn"], kind="stable").reset_index(drop=True)


def check_complete(scores: pd.DataFrame, num_layers: int | None = None, path: str | Path | None = None) -> None:
    """Every layer scores every composition that any layer has, and (when given) the parent's
    `num_layers` layers are all there: a row deleted or a file cut at a layer boundary is an error."""
    what = _what("scores", path)
    have = scores.groupby("layer")[["attention", "ffn"]].apply(lambda g: set(zip(g["attention"], g["ffn"])))
    every = set().union(*have)
    for layer, comps in have.items():
        if comps != every:
            lost = sorted(every - comps)[:3]
            raise ConfigError(
                f"{what}: layer {layer} lacks {len(every - comps)} of the {len(every)} compositions "
                "the other layers have, "
                f"e.g. {['+'.join(c) for c in lost]}: expected every layer x variant of the library"
            )
    if num_layers is not None and len(have) != num_layers:
        raise ConfigError(
            f"{what}: {len(have)} layers but the parent has num_hidden_layers = {num_layers}: "
            "expected a score for every layer"
        )


def check_costs(costs: pd.DataFrame, path: str | Path | None = None) -> pd.DataFrame:
    """Typed copy of a costs table: finite non-negative values, one row per key, one non_block row
    per (scenario, batch); errors name `path`, the file it was read from."""
    what = _what("costs", path)
    _require(costs, COST_COLUMNS, what)
    c = costs.copy()
    bad = set(c["kind"]) - {"attention", "ffn", "non_block"}
    if bad:
        raise ConfigError(f"{what}: kind = {sorted(map(str, bad))[0]!r}: expected attention, ffn or non_block")
    c["scenario"] = c["scenario"].astype(str)
    for col in ("batch", "input_len", "output_len", *COST_VALUES):
        c[col] = _numbers(c, col, what).astype(float)
        if (c[col] < 0).any() or not np.isfinite(c[col]).all():
            raise ConfigError(f"{what}: column {col} has negative, missing or infinite values: expected numbers >= 0")
    for col in ("batch", "input_len", "output_len", "param_bytes", "kv_bytes_per_token"):
        if (c[col] % 1 != 0).any():
            raise ConfigError(f"{what}: column {col} = {c.loc[c[col] % 1 != 0, col].iloc[0]}: expected whole numbers")
        c[col] = c[col].astype(np.int64)
    if "layer" in c.columns:
        # non_block rows carry no layer; block rows must
        blocks = c["kind"] != "non_block"
        if c.loc[blocks, "layer"].isna().any():
            raise ConfigError(
                f"{what}: column layer is empty in some attention/ffn rows: "
                "expected a layer per row or no layer column"
            )
        c["layer"] = c["layer"].fillna(-1).astype(int)
    key = ["kind", "variant", "scenario", "batch"] + (["layer"] if "layer" in c.columns else [])
    dup = c.duplicated(key)
    if dup.any():
        raise ConfigError(f"{what}: duplicate row {dict(c.loc[dup, key].iloc[0])}: expected one row per {key}")
    lens = c.groupby(["scenario", "batch"])[["input_len", "output_len"]].nunique()
    if (lens > 1).any().any():
        raise ConfigError(f"{what}: scenario {lens[(lens > 1).any(axis=1)].index[0]} has several input/output lengths")
    non_block = c[c["kind"] == "non_block"].groupby(["scenario", "batch"]).size()
    for scenario, batch in c.groupby(["scenario", "batch"]).size().index:
        n = int(non_block.get((scenario, batch), 0))
        if n != 1:
            raise ConfigError(
                f"{what}: {n} non_block rows for scenario {scenario!r} batch {batch}: expected one (the embeddings, "
                "final norm and LM head) at every scenario and batch"
            )
    return c


def load_scores(path: str | Path) -> pd.DataFrame:
    return check_scores(_read_csv(path, _what("scores", path)), path)


def load_costs(path: str | Path) -> pd.DataFrame:
    return check_costs(_read_csv(path, _what("costs", path)), path)
