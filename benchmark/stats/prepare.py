"""Input validation and normalisation of a records table: metric names to columns, stale-record checks,
:func:`prepare_records` (identifiers, ratio labels, effective ratios, duplicates), NaN metric rows, table order."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from benchmark.core.errors import UserError, unknown_name_error
from benchmark.stats.vocabulary import (
    CELL, KNOWN_METRIC_COLUMNS, METRICS, RATIO_FORMS, SPLITS, UNIT, VARIANT, _natural_key, mixed_ratio_label,
    ratio_label, ratio_problem, ratio_sort_key, ratio_value,
)

REQUIRED_COLUMNS = ("dataset", "rare_count", "generator", "synthetic_ratio", "backbone", "seed")
OPTIONAL_DEFAULTS = {"image_size": "-", "rare_class": "-", "fold": 0, "budget": "-"}
BOOKKEEPING = frozenset({"key", "name", "grid", "wall_s", "compute_hours", "n_train_real", "n_train_synthetic",
                         "fold", "seed", "image_size", "synthetic_ratio", "rare_count", "effective_ratio",
                         "n_rare_train", "n_real_extra", "n_real_extra_available", "results_version"})
STALE_COLUMNS = {"dataset_sha256": "dataset content (dataset_sha256)",
                 "results_version": "harness results version (results_version)"}


def metric_choices(df: pd.DataFrame) -> list[str]:
    """Columns that can serve as metrics: the numeric ``val_*``/``test_*`` columns when there are any (a harness
    table), otherwise every numeric column that is not an identifier, bookkeeping or audit column."""
    out = []
    for col in df.columns:
        if col in CELL or col in VARIANT or col in BOOKKEEPING or str(col).startswith("audit_"):
            continue
        if col in KNOWN_METRIC_COLUMNS or pd.api.types.is_numeric_dtype(df[col]):
            out.append(str(col))
    split = [c for c in out if c.startswith(tuple(f"{s}_" for s in SPLITS))]
    return split or out


def resolve_metrics(df: pd.DataFrame, metrics, source: str = "the records table") -> list[str]:
    """Map metric names to columns (``auroc`` → ``test_auroc``); raise one UserError for every problem."""
    metrics = [m.strip() for m in ([metrics] if isinstance(metrics, str) else metrics) if m and m.strip()]
    if not metrics:
        raise UserError(f"No metric given. Choose from the metric columns of {source}: "
                        f"{', '.join(metric_choices(df)) or '(none)'}.")
    resolved, missing, unknown = [], [], []
    for m in metrics:
        if m in df.columns:
            resolved.append(m)
        elif f"test_{m}" in df.columns:
            resolved.append(f"test_{m}")
        elif m in KNOWN_METRIC_COLUMNS or m in METRICS:
            missing.append(m if m in KNOWN_METRIC_COLUMNS else f"test_{m}")
        else:
            unknown.append(m)
    if unknown:
        err = unknown_name_error("metric", unknown[0], metric_choices(df))
        more = f" (also unknown: {', '.join(unknown[1:])})" if len(unknown) > 1 else ""
        raise UserError(f"{err}{more} Pass metric columns of {source} to --metrics, comma-separated.")
    if missing:
        raise UserError(f"{source} is missing the metric column(s) {', '.join(missing)}. Columns it has: "
                        f"{', '.join(map(str, df.columns))}. Choose other metrics with --metrics, or regenerate "
                        f"the records with a harness version that writes them.")
    return list(dict.fromkeys(resolved))


def _as_id_string(s: pd.Series) -> pd.Series:
    """Identifier values as strings; integer-valued numbers without '.0' (20.0 → '20', 'all' stays)."""
    codes, uniq = pd.factorize(s, use_na_sentinel=False)

    def one(v):
        try:
            f = float(v)
            if math.isfinite(f) and f == round(f):
                return str(int(f))
        except (TypeError, ValueError):
            pass
        return str(v).strip()

    return pd.Series(np.array([one(v) for v in uniq], dtype=object)[codes], index=s.index, dtype=object)


def _is_empty(s: pd.Series) -> np.ndarray:
    codes, uniq = pd.factorize(s, use_na_sentinel=False)
    return np.array([pd.isna(v) or str(v).strip() == "" for v in uniq], dtype=bool)[codes]


def _map_unique(s: pd.Series, fn) -> pd.Series:
    """``s.map(fn)`` computed once per distinct value (fast on 100,000 rows with a handful of values)."""
    codes, uniq = pd.factorize(s, use_na_sentinel=False)
    return pd.Series(np.array([fn(v) for v in uniq], dtype=object)[codes], index=s.index, dtype=object)


def _numeric(df: pd.DataFrame, col: str) -> pd.Series:
    if col not in df.columns:
        return pd.Series(np.nan, index=df.index, dtype=float)
    return pd.to_numeric(df[col], errors="coerce").astype(float)


def effective_ratios(df: pd.DataFrame) -> pd.Series:
    """The ratio each job actually trained with: rare images added per kept real rare image.

    The records column ``effective_ratio`` where it has a value; else (records written before it existed)
    (n_train_synthetic + n_real_extra) / n_rare_train; else (a table without those counts) the number a numeric
    ``synthetic_ratio`` label stands for. NaN when none is known (e.g. ``balance`` in a foreign table).
    """
    eff = _numeric(df, "effective_ratio")
    added = _numeric(df, "n_train_synthetic") + _numeric(df, "n_real_extra").fillna(0.0)
    n_rare = _numeric(df, "n_rare_train")
    with np.errstate(divide="ignore", invalid="ignore"):
        computed = (added / n_rare).where(n_rare > 0)
    label_value = _map_unique(df["synthetic_ratio"], ratio_value).astype(float)
    return eff.fillna(computed).fillna(label_value)


def _cell_text(values: tuple) -> str:
    """'dataset=ds1, …, fold=0' (a budget is named only where the records have one)."""
    return ", ".join(f"{k}={v}" for k, v in zip((*CELL, "fold"), values)
                     if not (k == "budget" and v == OPTIONAL_DEFAULTS["budget"]))


def check_not_stale(df: pd.DataFrame, source: str = "the records table") -> None:
    """Refuse to mix, inside one cell (dataset, image_size, rare_class, rare_count, backbone, fold), records made
    from different dataset content (``dataset_sha256``) or by harness code whose results differ
    (``results_version``, when the column exists). A missing value counts as a value of its own."""
    problems = []
    keys = [*CELL, "fold"]
    for col, what in STALE_COLUMNS.items():
        if col not in df.columns:
            continue
        vals = _map_unique(df[col], lambda v: "(missing)" if pd.isna(v) or str(v).strip() == "" else
                           (str(int(v)) if isinstance(v, float) and v.is_integer() else str(v).strip()))
        if vals.nunique() < 2:
            continue
        n = vals.groupby([df[k] for k in keys], sort=False).nunique()
        bad = n[n > 1]
        if bad.empty:
            continue
        first = bad.index[0]
        sel = np.ones(len(df), bool)
        for k, v in zip(keys, first):
            sel &= (df[k] == v).to_numpy()
        sub = df.loc[sel].assign(_v=vals[sel])
        parts = []
        for v, grp in sub.groupby("_v", sort=False):
            ids = grp["key"].astype(str).head(2).tolist() if "key" in grp.columns else []
            eg = f", e.g. key {', '.join(ids)}" if ids else ""
            parts.append(f"{v!r} ({len(grp)} record(s){eg})")
        more = f" (and {len(bad) - 1} more cell(s))" if len(bad) > 1 else ""
        problems.append(f"{what} differs within cell {_cell_text(first)}{more}: {'; '.join(parts)}")
    if problems:
        raise UserError(f"{source} mixes stale and current results: " + ". ".join(problems) + ". Records made from "
                        "other data or by a harness whose results differ are not comparable with today's, so they "
                        "are never mixed in one table. Re-run the stale jobs (python launch/grid.py --grid NAME "
                        "--dry-run lists them as stale; running the grid re-trains them), or collect only one "
                        "version (keep the records of one dataset_sha256 / results_version).")


def prepare_records(records: pd.DataFrame, metrics, baseline: str, source: str = "the records table"):
    """Validate and normalise a records table; returns (clean DataFrame, resolved metrics, duplicates DataFrame).

    Identifier columns become strings (``rare_count`` 20 → "20", "all" stays), ``synthetic_ratio`` its canonical
    label (:func:`ratio_label`: '2', 'balance', 'real_percentage=50'; empty → '0'), ``effective_ratio`` a float
    (:func:`effective_ratios`), ``seed`` an int where numeric, ``fold`` an int (absent → 0), metrics floats
    (non-numeric → NaN). Records of one cell from different data or results versions are refused
    (:func:`check_not_stale`). Rows repeating a (cell, variant, seed, fold) are dropped after the first and returned
    as ``duplicates``.
    """
    if not isinstance(records, pd.DataFrame) or records.empty:
        raise UserError(f"{source} has no rows. Run the grid first (python launch/grid.py …) or pass a records "
                        f"file with one row per finished job.")
    missing = [c for c in REQUIRED_COLUMNS if c not in records.columns]
    if missing:
        raise UserError(f"{source} is missing required column(s): {', '.join(missing)}. A records table needs "
                        f"{', '.join(REQUIRED_COLUMNS)} plus metric columns (e.g. test_auroc); image_size, "
                        f"rare_class and fold are optional. Columns present: {', '.join(map(str, records.columns))}. "
                        f"Rename the columns (docs/statistics.md lists them) and try again.")
    metrics = resolve_metrics(records, metrics, source)
    df = records.copy()
    for col, default in OPTIONAL_DEFAULTS.items():
        if col not in df.columns:
            df[col] = default
    problems = []
    for col in ("dataset", "rare_count", "generator", "backbone", "seed"):
        empty = _is_empty(df[col])
        if empty.any():
            rows = ", ".join(str(i + 2) for i in np.flatnonzero(empty)[:5])
            problems.append(f"column {col!r} is empty in {int(empty.sum())} row(s) (file lines {rows}…)")
    ratio = _map_unique(df["synthetic_ratio"], ratio_label)
    if "mixing" in df.columns:  # a variant's label carries its mixing ('balance+pretrain_finetune'; concat: none)
        ratio = pd.Series([mixed_ratio_label(r, m) for r, m in zip(ratio, df["mixing"])], index=df.index)
    bad = sorted({str(v) for v in ratio.unique() if ratio_problem(v)})
    if bad:
        problems.append(f"synthetic_ratio must be {RATIO_FORMS}; got {bad[:5]}")
    fold = pd.to_numeric(df["fold"].fillna(0), errors="coerce")
    if fold.isna().any() or (fold != np.round(fold)).any():
        problems.append("fold must be an integer in every row")
    if problems:
        raise UserError(f"{source} has invalid values: " + "; ".join(problems) + ". Fix or remove those rows.")
    for col in ("dataset", "image_size", "rare_class", "rare_count", "generator", "backbone", "budget"):
        df[col] = _as_id_string(df[col])
    df["synthetic_ratio"] = ratio
    df["effective_ratio"] = effective_ratios(df)
    df["fold"] = fold.astype("int64")
    seed_num = pd.to_numeric(df["seed"], errors="coerce")
    if seed_num.notna().all() and (seed_num == np.round(seed_num)).all():
        df["seed"] = seed_num.astype("int64")
    else:
        df["seed"] = df["seed"].astype(str).astype(object)
    check_not_stale(df, source)
    for m in metrics:
        df[m] = pd.to_numeric(df[m], errors="coerce").astype(float)
    if "compute_hours" not in df.columns:
        df["compute_hours"] = pd.to_numeric(df["wall_s"], errors="coerce") / 3600 if "wall_s" in df.columns else np.nan
    else:
        df["compute_hours"] = pd.to_numeric(df["compute_hours"], errors="coerce")
    methods = list(dict.fromkeys(df["generator"]))
    if baseline not in methods:
        err = unknown_name_error("baseline method", baseline, methods)
        raise UserError(f"{err} The baseline is a value of the 'generator' column of {source}; choose one with "
                        f"--baseline.")
    dup = df.duplicated(list(CELL) + list(VARIANT) + list(UNIT), keep="first")
    duplicates = df.loc[dup, [c for c in ("key", "name") if c in df.columns] + list(CELL) + list(VARIANT)
                        + list(UNIT)].reset_index(drop=True)
    df = df.loc[~dup].reset_index(drop=True)
    return df, metrics, duplicates


def nan_metric_rows(df: pd.DataFrame, metrics) -> pd.DataFrame:
    """One row per (record, metric) whose value is NaN (a diverged run): excluded from every statistic."""
    idcols = [c for c in ("key", "name") if c in df.columns] + list(CELL) + list(VARIANT) + list(UNIT)
    parts = [df.loc[df[m].isna(), idcols].assign(metric=m) for m in metrics]
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=idcols + ["metric"])
    return out[["metric"] + idcols]


def _ordered(df: pd.DataFrame, baseline: str) -> dict:
    """Display orders: generators by first appearance (baseline first), cells naturally sorted."""
    gens = list(dict.fromkeys(df["generator"]))
    gens = [baseline] + [g for g in gens if g != baseline] if baseline in gens else gens
    return {"generator": {g: i for i, g in enumerate(gens)}}


def sort_frame(df: pd.DataFrame, baseline: str, extra=()) -> pd.DataFrame:
    """Sort a table by metric, cell, generator, ratio: names (dataset, backbone, rare class, generator) in the
    order they first appear (the grid's order; baseline first), numbers (image size, rare count) ascending with
    ``all`` last, ratio labels by :func:`ratio_sort_key` (numbers, then balance, then real_percentage=P)."""
    if df.empty:
        return df.reset_index(drop=True)
    order = _ordered(df, baseline) if "generator" in df.columns else {"generator": {}}
    keys = [c for c in ("metric", *CELL, "generator", "synthetic_ratio", "baseline_ratio", *extra) if c in df.columns]

    def key(col):
        if col.name == "generator":
            return col.map(lambda g: order["generator"].get(g, len(order["generator"])))
        if col.name in ("dataset", "backbone", "rare_class"):      # names: the order they first appear in
            return pd.Series(pd.factorize(col)[0], index=col.index)
        if col.name in ("synthetic_ratio", "baseline_ratio"):              # numbers, balance, real_percentage=P
            uniq = sorted(col.dropna().unique(), key=ratio_sort_key)
            return col.map({v: i for i, v in enumerate(uniq)})
        if pd.api.types.is_numeric_dtype(col):
            return col
        uniq = sorted(col.dropna().unique(), key=_natural_key)
        return col.map({v: i for i, v in enumerate(uniq)})

    return df.sort_values(keys, key=key, kind="stable").reset_index(drop=True)
