"""Statistics on GenMed-Rare records: paired tests vs a baseline, a hierarchical model across the sweep, rank tests
across independent blocks, dose-response on the effective ratio, power under correction.

Everything here is pure pandas / numpy / scipy / statsmodels and returns DataFrames; nothing writes files
(``benchmark.report`` does). The methods, the columns of every table and the references are documented in
``docs/statistics.md``. Entry point: :func:`analyse`.

Vocabulary
    cell      (dataset, image_size, rare_class, rare_count, backbone): the setting a comparison is made in.
    variant   (generator, synthetic_ratio): one method at one ratio form; label ``dcgan@2``, ``dcgan@balance``,
              ``oversample@real_percentage=50`` (just the method name when the ratio is 0).
    unit      (seed, fold): the replicate that pairs a variant with its baseline inside a cell.
    block     a dataset, when methods are ranked (Friedman / Nemenyi): cells of one dataset share test sets, seeds
              and subsamples, so they are averaged into one value per dataset first.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy import stats as sps

from benchmark.errors import UserError, unknown_name_error
from benchmark.generators.base import REAL_PERCENTAGE_PREFIX, mixing_mode_problem

METRICS = ("accuracy", "balanced_accuracy", "auroc", "auprc", "macro_f1", "rare_sensitivity", "rare_specificity",
           "rare_precision", "rare_auprc", "ece", "thr_balanced_accuracy", "thr_rare_sensitivity",
           "thr_rare_specificity", "rare_sensitivity_at_90spec", "threshold")
SPLITS = ("val", "test")
KNOWN_METRIC_COLUMNS = tuple(f"{s}_{m}" for s in SPLITS for m in METRICS)
DEFAULT_METRICS = ("test_auroc", "test_balanced_accuracy", "test_thr_balanced_accuracy",
                   "test_thr_rare_sensitivity")
LOWER_IS_BETTER = frozenset({"ece", "loss", "nll", "brier", "error", "wall_s", "compute_hours"})
BOUNDED_METRICS = frozenset(METRICS)  # every harness metric (and the chosen threshold) lies in [0, 1]

CELL = ("dataset", "image_size", "rare_class", "rare_count", "backbone")
VARIANT = ("generator", "synthetic_ratio")
UNIT = ("seed", "fold")
REQUIRED_COLUMNS = ("dataset", "rare_count", "generator", "synthetic_ratio", "backbone", "seed")
OPTIONAL_DEFAULTS = {"image_size": "-", "rare_class": "-", "fold": 0}
BOOKKEEPING = frozenset({"key", "name", "grid", "wall_s", "compute_hours", "n_train_real", "n_train_synthetic",
                         "fold", "seed", "image_size", "synthetic_ratio", "rare_count", "effective_ratio",
                         "n_rare_train", "n_real_extra", "n_real_extra_available", "results_version"})
STALE_COLUMNS = {"dataset_sha256": "dataset content (dataset_sha256)",
                 "results_version": "harness results version (results_version)"}
RATIO_FORMS = "a number ≥ 0, 'balance' or 'real_percentage=P' (0 < P ≤ 100)"

CORRECTIONS = ("holm", "fdr_bh")
ZERO_METHODS = ("zsplit", "pratt", "wilcox")
FAMILIES = ("metric", "cell", "all")
TESTS = ("t", "wilcoxon")
EXACT_WILCOXON_MAX_N = 50
N_BOOT = 2000
POWER = 0.8
MIN_CLUSTERS = 10  # cluster-robust OLS standard errors (dose-response fallback) need enough clusters
MIN_RANK_BLOCKS = 3  # rank tests need at least this many independent blocks (datasets)
MIN_SEEDS_CI = 5  # leaderboard intervals over fewer seeds are marked unreliable ("n<5")
UPPER_BOUND = "real_extra"  # the real-data upper bound: its gain over the baseline is the gap others try to close
GAP_COLUMNS = ("metric", *CELL, "generator", "synthetic_ratio", "variant", "effective_ratio", "gain", "gain_ci_low",
               "gain_ci_high", "upper_variant", "upper_gain", "upper_verdict", "gap_closed", "note")

PAIRED_COLUMNS = (
    "metric", "higher_is_better", *CELL, "generator", "synthetic_ratio", "variant", "baseline", "baseline_ratio",
    "n_pairs", "n_nan_excluded", "n_only_method", "n_only_baseline", "mean_method", "mean_baseline", "mean_diff",
    "sd_diff", "ci_t_low", "ci_t_high", "ci_boot_low", "ci_boot_high", "t_stat", "p_t", "wilcoxon_stat",
    "wilcoxon_n_nonzero", "p_wilcoxon", "wilcoxon_method", "cohens_dz", "wins", "ties", "losses", "family",
    "family_size", "alpha_family", "p_t_adj", "p_wilcoxon_adj", "test", "p_adj", "significant", "verdict", "mde_dz",
    "mde", "min_p_wilcoxon", "wilcoxon_can_reach_alpha", "min_pairs_wilcoxon", "effective_ratio", "note",
)
HIERARCHICAL_COLUMNS = (
    "metric", "higher_is_better", "generator", "synthetic_ratio", "variant", "baseline", "baseline_ratio", "n_obs",
    "n_datasets", "n_cells", "n_units", "levels", "estimate", "se", "ci_low", "ci_high", "p", "p_holm", "verdict",
    "var_dataset", "var_cell", "var_seed", "var_residual", "model", "converged", "assumes", "note",
)


# ----------------------------------------------------------------------------------------------------------------
# Names, directions, labels
# ----------------------------------------------------------------------------------------------------------------

def higher_is_better(metric: str) -> bool:
    """False for metrics where lower is better (``ece``, losses, errors, time); True otherwise."""
    base = metric.split("_", 1)[1] if metric.startswith(tuple(f"{s}_" for s in SPLITS)) else metric
    return not (base in LOWER_IS_BETTER or base.endswith(("_loss", "_error", "_ece")))


def _number_text(x: float) -> str:
    """2.0 → '2', 0.5 → '0.5' (shortest round-trip text of the float)."""
    return str(int(x)) if x == round(x) and abs(x) < 1e15 else repr(float(x))


def ratio_label(value) -> str:
    """Canonical text of a ``synthetic_ratio`` value, the same however it was written or read back: numbers without
    a trailing '.0' (2, 2.0 and "2" → '2'; 0.5 → '0.5'), empty → '0' (methods without a ratio), 'balance',
    'real_percentage=P' with P written the same way ('real_percentage=50.0' → 'real_percentage=50'). Anything else
    is returned stripped (and rejected by :func:`prepare_records`)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "0"
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return _number_text(float(value)) if math.isfinite(float(value)) else str(value)
    text = str(value).strip()
    if text == "":
        return "0"
    try:
        number = float(text)
    except ValueError:
        number = None
    if number is not None:
        return _number_text(number) if math.isfinite(number) else text
    if text.startswith(REAL_PERCENTAGE_PREFIX):
        try:
            pct = float(text[len(REAL_PERCENTAGE_PREFIX):])
        except ValueError:
            return text
        return REAL_PERCENTAGE_PREFIX + (_number_text(pct) if math.isfinite(pct) else str(pct))
    return text


def ratio_value(label) -> float:
    """The number a ratio label stands for ('2' → 2.0); NaN for 'balance' / 'real_percentage=P'."""
    try:
        return float(label)
    except (TypeError, ValueError):
        return float("nan")


def ratio_problem(label: str) -> str | None:
    """None if ``label`` (from :func:`ratio_label`) is a valid ratio form, else what is wrong with it."""
    number = ratio_value(label)
    if math.isnan(number) and label in ("nan", "NaN"):
        return f"synthetic_ratio must be {RATIO_FORMS}, got {label!r}"
    if not math.isnan(number):
        return None if math.isfinite(number) and number >= 0 else \
            f"synthetic_ratio must be {RATIO_FORMS}, got {label!r}"
    return mixing_mode_problem(label)


def ratio_sort_key(label) -> tuple:
    """Display order of ratio labels: numbers ascending, then 'balance', then 'real_percentage=P' by decreasing P
    (fewer added images first), then anything else."""
    label = ratio_label(label)
    number = ratio_value(label)
    if not math.isnan(number):
        return (0, number, "")
    if label == "balance":
        return (1, 0.0, "")
    if label.startswith(REAL_PERCENTAGE_PREFIX):
        return (2, -ratio_value(label[len(REAL_PERCENTAGE_PREFIX):]), "")
    return (3, 0.0, label)


def variant_label(generator, ratio) -> str:
    """``dcgan@2``, ``dcgan@balance``, ``oversample@real_percentage=50``; just the method name when the ratio is 0."""
    label = ratio_label(ratio)
    return str(generator) if label == "0" else f"{generator}@{label}"


def _natural_key(value):
    """Sort key: numbers numerically, then strings ("all" after every count)."""
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def unit_label(seed, fold) -> str:
    return f"{seed}" if int(fold) == 0 else f"{seed}/fold{int(fold)}"


# ----------------------------------------------------------------------------------------------------------------
# Input validation and normalisation
# ----------------------------------------------------------------------------------------------------------------

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
    return ", ".join(f"{k}={v}" for k, v in zip((*CELL, "fold"), values))


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
                        f"other data or by a harness whose results differ are not comparable with today's, so they "
                        f"are never mixed in one table. Re-run the stale jobs (python launch/grid.py --grid NAME "
                        f"--dry-run lists them as stale; running the grid re-trains them), or collect only one "
                        f"version (keep the records of one dataset_sha256 / results_version).")


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
    bad = sorted({str(v) for v in ratio.unique() if ratio_problem(v)})
    if bad:
        problems.append(f"synthetic_ratio must be {RATIO_FORMS}; got {bad[:5]}")
    fold = pd.to_numeric(df["fold"].fillna(0), errors="coerce")
    if fold.isna().any() or (fold != np.round(fold)).any():
        problems.append("fold must be an integer in every row")
    if problems:
        raise UserError(f"{source} has invalid values: " + "; ".join(problems) + ". Fix or remove those rows.")
    for col in ("dataset", "image_size", "rare_class", "rare_count", "generator", "backbone"):
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


# ----------------------------------------------------------------------------------------------------------------
# Pairing
# ----------------------------------------------------------------------------------------------------------------

@dataclass
class Pairing:
    comparisons: pd.DataFrame   # comp_id, cell…, generator, synthetic_ratio, baseline_ratio
    pairs: pd.DataFrame         # comp_id, seed, fold, <metric>_m, <metric>_b  (units on both sides), sorted
    missing_baseline: pd.DataFrame
    seed_mismatch: pd.DataFrame


def pair_records(df: pd.DataFrame, metrics, baseline: str) -> Pairing:
    """Match every non-baseline variant with its baseline inside each cell, then pair runs by (seed, fold).

    Baseline ratio rule: if the baseline has one ratio in the cell (``none`` has 0) every variant is compared with
    it; if the variant's method has one ratio in the cell it is compared with each baseline ratio; otherwise
    (both have several, e.g. ``--baseline oversample``) a variant is paired with the baseline at the same ratio.
    """
    ids = list(CELL)
    base = df[df["generator"] == baseline]
    other = df[df["generator"] != baseline]
    bv = base[ids + ["synthetic_ratio"]].drop_duplicates()
    ov = other[ids + ["generator", "synthetic_ratio"]].drop_duplicates()
    nb = bv.groupby(ids, sort=False).size().rename("_nb").reset_index()
    nm = ov.groupby(ids + ["generator"], sort=False).size().rename("_nm").reset_index()
    ov = ov.merge(nb, on=ids, how="left").merge(nm, on=ids + ["generator"], how="left")
    counts = other.groupby(ids + ["generator", "synthetic_ratio"], sort=False).size().rename("n_records").reset_index()
    bratios = bv.groupby(ids, sort=False)["synthetic_ratio"].agg(
        lambda r: ", ".join(sorted(r, key=ratio_sort_key)))
    bratios = bratios.rename("baseline_ratios").reset_index()

    no_base = ov[ov["_nb"].isna()].assign(reason=f"no {baseline!r} run in this cell")
    has = ov[ov["_nb"].notna()]
    cross = has[(has["_nb"] == 1) | (has["_nm"] == 1)].merge(
        bv.rename(columns={"synthetic_ratio": "baseline_ratio"}), on=ids)
    same = has[(has["_nb"] > 1) & (has["_nm"] > 1)].merge(
        bv.assign(baseline_ratio=bv["synthetic_ratio"]), on=ids + ["synthetic_ratio"], how="left")
    no_ratio = same[same["baseline_ratio"].isna()].merge(bratios, on=ids, how="left")
    no_ratio = no_ratio.assign(reason=lambda t: [f"{baseline!r} has no run at ratio {r} in this cell (it has "
                                                 f"{b})" for r, b in zip(t["synthetic_ratio"], t["baseline_ratios"])])
    missing = pd.concat([no_base, no_ratio], ignore_index=True)
    missing = missing.merge(counts, on=ids + ["generator", "synthetic_ratio"], how="left")
    missing = sort_frame(missing[ids + ["generator", "synthetic_ratio", "n_records", "reason"]], baseline)

    comps = pd.concat([cross, same[same["baseline_ratio"].notna()]], ignore_index=True)
    comps = sort_frame(comps[ids + ["generator", "synthetic_ratio", "baseline_ratio"]], baseline)
    comps.insert(0, "comp_id", np.arange(len(comps), dtype=np.int64))

    cols = ["seed", "fold"] + list(metrics)
    left = other[ids + ["generator", "synthetic_ratio"] + cols].merge(
        comps, on=ids + ["generator", "synthetic_ratio"])[["comp_id"] + cols]
    right = base[ids + ["synthetic_ratio"] + cols].rename(columns={"synthetic_ratio": "baseline_ratio"}).merge(
        comps[ids + ["baseline_ratio", "comp_id"]], on=ids + ["baseline_ratio"])[["comp_id"] + cols]
    both = left.merge(right, on=["comp_id", "seed", "fold"], how="outer", suffixes=("_m", "_b"), indicator=True)
    pairs = both[both["_merge"] == "both"].drop(columns="_merge")
    pairs = pairs.sort_values(["comp_id", "seed", "fold"], kind="stable").reset_index(drop=True)

    odd = both[both["_merge"] != "both"]
    mismatch = pd.DataFrame(columns=["comp_id", "only_method", "only_baseline", "n_only_method", "n_only_baseline"])
    if len(odd):
        odd = odd.sort_values(["comp_id", "seed", "fold"], kind="stable")
        lab = [unit_label(s, f) for s, f in zip(odd["seed"], odd["fold"])]
        odd = odd.assign(_unit=lab, _side=np.where(odd["_merge"] == "left_only", "m", "b"))
        agg = odd.groupby(["comp_id", "_side"])["_unit"].agg(list).unstack("_side")
        for side in ("m", "b"):
            if side not in agg.columns:
                agg[side] = None
        mismatch = pd.DataFrame({
            "comp_id": agg.index.to_numpy(),
            "only_method": [" ".join(v) if isinstance(v, list) else "" for v in agg["m"]],
            "only_baseline": [" ".join(v) if isinstance(v, list) else "" for v in agg["b"]],
            "n_only_method": [len(v) if isinstance(v, list) else 0 for v in agg["m"]],
            "n_only_baseline": [len(v) if isinstance(v, list) else 0 for v in agg["b"]],
        })
    n_common = pairs.groupby("comp_id").size()
    mismatch["n_common"] = mismatch["comp_id"].map(n_common).fillna(0).astype(int)
    mismatch = comps.merge(mismatch, on="comp_id")
    return Pairing(comps, pairs, missing, mismatch)


# ----------------------------------------------------------------------------------------------------------------
# Per-comparison statistics
# ----------------------------------------------------------------------------------------------------------------

def t_ci(mean, sd, n, confidence=0.95):
    """t-based confidence interval for a mean (arrays allowed): mean ± t_{(1+c)/2, n-1} · sd/√n."""
    mean, sd, n = np.asarray(mean, float), np.asarray(sd, float), np.asarray(n, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        half = sps.t.ppf(0.5 + confidence / 2, n - 1) * sd / np.sqrt(n)
    half = np.where(n >= 2, half, np.nan)
    return mean - half, mean + half


def average_ranks(a) -> np.ndarray:
    """1-based ranks of a 1-d array, ties sharing their average rank (= scipy.stats.rankdata, faster on tiny n)."""
    a = np.asarray(a, float)
    order = np.argsort(a, kind="mergesort")
    s = a[order]
    new = np.r_[True, s[1:] != s[:-1]] if s.size else np.zeros(0, bool)
    starts = np.flatnonzero(new)
    ends = np.r_[starts[1:], s.size]
    ranks = np.empty(a.size)
    ranks[order] = ((starts + 1 + ends) / 2.0)[np.cumsum(new) - 1]
    return ranks


@lru_cache(maxsize=1024)
def _signed_rank_null(doubled_ranks: tuple) -> tuple[np.ndarray, np.ndarray, float]:
    """Exact null distribution of 2·T+ for the given (doubled, integer) ranks: cumulative counts ≤ and ≥."""
    total = sum(doubled_ranks)
    counts = np.zeros(total + 1)
    counts[0] = 1.0
    for r in doubled_ranks:
        counts[r:] = counts[r:] + counts[: total + 1 - r]
    return np.cumsum(counts), np.cumsum(counts[::-1])[::-1], float(2 ** len(doubled_ranks))


def wilcoxon_signed_rank(d, zero_method: str = "zsplit") -> dict:
    """Two-sided Wilcoxon signed-rank test on paired differences ``d`` (NaN already removed).

    Zeros: ``zsplit`` (default; Demšar 2006 §3.1.3) ranks them with the rest and gives half of each zero's rank
    to R+ and half to R−; ``pratt`` ranks them and then drops their ranks; ``wilcox`` drops them before ranking.
    Ties get average ranks. p is exact (the permutation distribution of R+ given the observed ranks, all 2^m sign
    patterns of the m non-zero differences) when m ≤ 50, otherwise the normal approximation with tie correction
    (scipy's ``method='asymptotic'``, no continuity correction). Statistic = min(R+, R−) as in scipy.
    """
    d = np.asarray(d, float)
    if zero_method not in ZERO_METHODS:
        raise unknown_name_error("zero_method", zero_method, ZERO_METHODS)
    nz = d != 0
    m = int(nz.sum())
    out = {"stat": np.nan, "p": np.nan, "n_nonzero": m, "method": "", "min_p": np.nan, "r_plus": np.nan,
           "r_minus": np.nan}
    if d.size == 0:
        return out
    x = d[nz] if zero_method == "wilcox" else d
    ranks = average_ranks(np.abs(x))
    pos = x > 0
    if zero_method == "wilcox":
        r_plus, total, const = ranks[pos].sum(), ranks.sum(), 0.0
        free = ranks
    else:
        zero = x == 0
        const = ranks[zero].sum() / 2 if zero_method == "zsplit" else 0.0
        r_plus = ranks[pos].sum() + const
        total = ranks.sum() if zero_method == "zsplit" else ranks[~zero].sum()
        free = ranks[~zero]
    out.update(r_plus=float(r_plus), r_minus=float(total - r_plus), stat=float(min(r_plus, total - r_plus)))
    if m == 0:
        out.update(p=1.0, method="all zero", min_p=1.0)
        return out
    if m <= EXACT_WILCOXON_MAX_N:
        doubled = tuple(sorted(int(round(2 * r)) for r in free))
        le, ge, n_patterns = _signed_rank_null(doubled)
        t2 = int(round(2 * (r_plus - const)))
        p = 2 * min(le[t2], ge[t2]) / n_patterns
        out.update(p=float(min(1.0, p)), method="exact", min_p=float(min(1.0, 2.0 / n_patterns)))
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = sps.wilcoxon(d, zero_method=zero_method, method="asymptotic", correction=False)
        out.update(p=float(res.pvalue), method="normal",
                   min_p=float(2 * sps.norm.sf(math.sqrt(3 * m * (m + 1) / (2 * (2 * m + 1))))))
    return out


@lru_cache(maxsize=None)
def mde_dz(n: int, alpha: float = 0.05, power: float = POWER) -> float:
    """Smallest standardised effect (Cohen's d_z) a two-sided paired t-test detects with the given power."""
    if n < 2:
        return np.nan
    from statsmodels.stats.power import TTestPower

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(TTestPower().solve_power(effect_size=None, nobs=n, alpha=alpha, power=power,
                                              alternative="two-sided"))


@lru_cache(maxsize=None)
def wilcoxon_min_pairs(threshold: float) -> float:
    """Smallest number n of non-zero pairs at which a two-sided exact Wilcoxon signed-rank test can give
    p < ``threshold``: its smallest p is 2/2^n (every difference of one sign), so n is the smallest with
    2^n > 2/threshold. Under Holm (and at the first step of Benjamini–Hochberg) over a family of m tests the
    smallest p must be below α/m, so pass ``threshold = α/m``."""
    if not threshold > 0:
        return float("nan")
    n = max(1, math.floor(math.log2(2.0 / threshold)) + 1)
    while 2.0 / 2 ** n >= threshold:
        n += 1
    while n > 1 and 2.0 / 2 ** (n - 1) < threshold:
        n -= 1
    return n


def bootstrap_resample_weights(n: int, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """(n_boot × n) resampling counts for n pairs: ``default_rng([seed, n]).integers(0, n, (n_boot, n))``."""
    idx = np.random.default_rng([seed, n]).integers(0, n, size=(n_boot, n))
    w = np.zeros((n_boot, n))
    np.add.at(w, (np.arange(n_boot)[:, None], idx), 1.0)
    return w


def metric_bounds(metric: str) -> tuple[float, float] | None:
    """(0, 1) for the harness's metrics (``test_auroc``, ``val_thr_rare_sensitivity``, ``test_ece``, …), None for
    any other column (its range is unknown)."""
    base = metric.split("_", 1)[1] if metric.startswith(tuple(f"{s}_" for s in SPLITS)) else metric
    return (0.0, 1.0) if base in BOUNDED_METRICS else None


def bootstrap_mean_intervals(codes: np.ndarray, values: np.ndarray, n_groups: int, confidence: float = 0.95,
                             n_boot: int = N_BOOT, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of the mean of each group's values (NaN values and groups of < 2 ignored).

    Vectorised: groups of equal size k share one (n_boot × k) resampling matrix
    (:func:`bootstrap_resample_weights`, seeded by (seed, k)), so a group's interval depends only on its values in
    their order. Every resampled mean is a mean of observed values, so the interval lies inside [min, max] of the
    group and hence inside the metric's range, by construction (clamped there against floating-point rounding).
    """
    codes = np.asarray(codes, np.int64)
    values = np.asarray(values, float)
    ok = np.isfinite(values)
    codes, values = codes[ok], values[ok]
    order = np.argsort(codes, kind="stable")
    codes, values = codes[order], values[order]
    n = np.bincount(codes, minlength=n_groups)
    starts = np.concatenate([[0], np.cumsum(n)[:-1]]).astype(np.int64)
    lo = np.full(n_groups, np.nan)
    hi = np.full(n_groups, np.nan)
    q = [0.5 - confidence / 2, 0.5 + confidence / 2]
    for k in np.unique(n[n >= 2]).astype(int):
        sel = np.flatnonzero(n == k)
        w = bootstrap_resample_weights(k, n_boot, seed).T / k                   # (k × B)
        for chunk in np.array_split(sel, max(1, len(sel) // 2000 + 1)):
            if chunk.size == 0:
                continue
            mat = values[starts[chunk][:, None] + np.arange(k)]                  # (c × k)
            qq = np.quantile(mat @ w, q, axis=1)
            lo[chunk], hi[chunk] = np.maximum(qq[0], mat.min(axis=1)), np.minimum(qq[1], mat.max(axis=1))
    return lo, hi


def mean_intervals(codes, values, n_groups: int, metric: str, confidence: float = 0.95, n_boot: int = N_BOOT,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """Interval of each group's mean for ``metric``: the percentile bootstrap over seeds for a bounded metric
    (:func:`bootstrap_mean_intervals`, inside the range by construction), the t-interval otherwise.
    Returns (low, high, method name)."""
    if metric_bounds(metric) is not None:
        lo, hi = bootstrap_mean_intervals(codes, values, n_groups, confidence, n_boot, seed)
        return lo, hi, "bootstrap percentile"
    codes = np.asarray(codes, np.int64)
    values = np.asarray(values, float)
    ok = np.isfinite(values)
    s = pd.DataFrame({"g": codes[ok], "v": values[ok]}).groupby("g")["v"].agg(["mean", "std", "count"])
    s = s.reindex(range(n_groups))
    lo, hi = t_ci(s["mean"], s["std"], s["count"].fillna(0), confidence)
    return np.asarray(lo, float), np.asarray(hi, float), "t"


def bootstrap_ci(d, n_boot: int = N_BOOT, seed: int = 0, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``d`` (deterministic: depends only on d, n_boot, seed)."""
    d = np.asarray(d, float)
    if d.size < 2:
        return np.nan, np.nan
    means = bootstrap_resample_weights(d.size, n_boot, seed) @ d / d.size
    lo, hi = np.quantile(means, [0.5 - confidence / 2, 0.5 + confidence / 2])
    return float(lo), float(hi)


def describe_differences(group: np.ndarray, d: np.ndarray, n_groups: int, higher_better: bool = True,
                         alpha: float = 0.05, n_boot: int = N_BOOT, seed: int = 0,
                         zero_method: str = "zsplit") -> pd.DataFrame:
    """Per group of paired differences: n, mean, sd, t and bootstrap CIs, t-test, Wilcoxon, d_z, W/T/L, power.

    ``group`` must be sorted ascending (ints in [0, n_groups)); ``d`` are the differences (method − baseline).
    """
    group = np.asarray(group, np.int64)
    d = np.asarray(d, float)
    n = np.bincount(group, minlength=n_groups).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.bincount(group, d, minlength=n_groups) / n
        var = np.bincount(group, (d - mean[group]) ** 2, minlength=n_groups) / (n - 1)
        sd = np.where(n >= 2, np.sqrt(var), np.nan)
        se = sd / np.sqrt(n)
        tstat = mean / se
        p_t = 2 * sps.t.sf(np.abs(tstat), n - 1)
        dz = np.where(sd > 0, mean / sd, np.nan)
    allzero = (n >= 1) & (np.bincount(group, d != 0, minlength=n_groups) == 0)
    p_t = np.where(allzero & (n >= 2), 1.0, p_t)
    tstat = np.where(allzero & (n >= 2), 0.0, tstat)
    ci_lo, ci_hi = t_ci(mean, sd, n, 1 - alpha)
    better = d > 0 if higher_better else d < 0
    worse = d < 0 if higher_better else d > 0
    wins = np.bincount(group, better, minlength=n_groups).astype(int)
    losses = np.bincount(group, worse, minlength=n_groups).astype(int)
    ties = n.astype(int) - wins - losses

    starts = np.concatenate([[0], np.cumsum(n)[:-1]]).astype(np.int64)
    b_lo, b_hi = bootstrap_mean_intervals(group, d, n_groups, 1 - alpha, n_boot, seed)

    w_stat = np.full(n_groups, np.nan)
    w_p = np.full(n_groups, np.nan)
    w_min = np.full(n_groups, np.nan)
    w_m = np.zeros(n_groups, int)
    w_method = np.full(n_groups, "", dtype=object)
    done = np.zeros(n_groups, bool)
    for k in np.unique(n[(n >= 1) & (n <= EXACT_WILCOXON_MAX_N)]).astype(int):
        # fast path, same numbers as wilcoxon_signed_rank: groups of k differences, no zeros, no tied |d|
        sel = np.flatnonzero(n == k)
        mat = d[starts[sel][:, None] + np.arange(k)]
        a = np.abs(mat)
        order = np.argsort(a, axis=1, kind="stable")
        srt = np.take_along_axis(a, order, axis=1)
        clean = (srt[:, 0] > 0) & (np.all(srt[:, 1:] != srt[:, :-1], axis=1) if k > 1 else True)
        sel, order, mat = sel[clean], order[clean], mat[clean]
        if sel.size == 0:
            continue
        ranks = np.empty(order.shape)
        np.put_along_axis(ranks, order, np.arange(1, k + 1, dtype=float)[None, :].repeat(len(sel), 0), axis=1)
        r_plus = np.where(mat > 0, ranks, 0.0).sum(axis=1)
        le, ge, n_patterns = _signed_rank_null(tuple(range(2, 2 * k + 1, 2)))
        t2 = np.rint(2 * r_plus).astype(int)
        w_p[sel] = np.minimum(1.0, 2 * np.minimum(le[t2], ge[t2]) / n_patterns)
        w_stat[sel] = np.minimum(r_plus, k * (k + 1) / 2 - r_plus)
        w_min[sel], w_m[sel], w_method[sel] = min(1.0, 2.0 / n_patterns), k, "exact"
        done[sel] = True
    for i in np.flatnonzero((n >= 1) & ~done):
        res = wilcoxon_signed_rank(d[starts[i]:starts[i] + int(n[i])], zero_method)
        w_stat[i], w_p[i], w_min[i], w_m[i], w_method[i] = res["stat"], res["p"], res["min_p"], res["n_nonzero"], \
            res["method"]
    mde = np.array([mde_dz(int(k), alpha) for k in n])
    return pd.DataFrame({
        "n_pairs": n.astype(int), "mean_diff": mean, "sd_diff": sd, "ci_t_low": ci_lo, "ci_t_high": ci_hi,
        "ci_boot_low": b_lo, "ci_boot_high": b_hi, "t_stat": tstat, "p_t": p_t, "wilcoxon_stat": w_stat,
        "wilcoxon_n_nonzero": w_m, "p_wilcoxon": w_p, "wilcoxon_method": w_method, "cohens_dz": dz, "wins": wins,
        "ties": ties, "losses": losses, "mde_dz": mde, "mde": mde * sd, "min_p_wilcoxon": w_min,
        "wilcoxon_can_reach_alpha": w_min < alpha,
    })


def correct_pvalues(p, method: str = "holm", alpha: float = 0.05, families=None) -> np.ndarray:
    """Holm or Benjamini–Hochberg adjusted p-values, separately within each family; NaN stays NaN and is not
    counted in its family.

    Same numbers as ``statsmodels.stats.multitest.multipletests(p, alpha, method)`` run on each family (the tests
    check this); done here in one vectorised pass because statsmodels' Holm branch calls ``gc.collect()`` on every
    call (tens of ms each), which per-cell families over a large sweep would multiply into minutes.
    """
    if method not in CORRECTIONS:
        raise unknown_name_error("correction", method, CORRECTIONS)
    p = np.asarray(p, float)
    fam = np.zeros(p.shape, np.int64) if families is None else pd.factorize(np.asarray(families))[0]
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if ok.size == 0:
        return out
    order = ok[np.lexsort((p[ok], fam[ok]))]
    ps, fs = p[order], fam[order]
    m = np.bincount(fs)[fs].astype(float)
    first = np.r_[True, fs[1:] != fs[:-1]]
    i = np.arange(ps.size) - np.maximum.accumulate(np.where(first, np.arange(ps.size), 0))   # 0-based in family
    if method == "holm":
        raw = pd.Series(np.minimum(1.0, ps * (m - i)))
        adj = raw.groupby(fs).cummax().to_numpy()
    else:
        raw = pd.Series(np.minimum(1.0, ps * m / (i + 1)))[::-1]
        adj = raw.groupby(fs[::-1]).cummin()[::-1].to_numpy()
    out[order] = adj
    return out


def paired_tests(df: pd.DataFrame, metrics, baseline: str, pairing: Pairing | None = None, correction="holm",
                 alpha=0.05, family="metric", zero_method="zsplit", test="t", n_boot=N_BOOT, seed=0):
    """All paired comparisons (variant vs baseline, per cell and metric); returns (tests DataFrame, Pairing).

    Columns are ``PAIRED_COLUMNS`` (documented in docs/statistics.md). ``family`` sets the multiple-comparison
    family: ``metric`` (all comparisons of one metric; default), ``cell`` (one metric in one cell) or ``all``.
    ``test`` (``t`` or ``wilcoxon``) picks the test behind ``p_adj``, ``significant`` and ``verdict``.
    """
    for value, valid, kind in ((correction, CORRECTIONS, "correction"), (family, FAMILIES, "family"),
                               (zero_method, ZERO_METHODS, "zero_method"), (test, TESTS, "test")):
        if value not in valid:
            raise unknown_name_error(kind, value, valid)
    pairing = pairing or pair_records(df, metrics, baseline)
    comps, pairs = pairing.comparisons, pairing.pairs
    mm = pairing.seed_mismatch.set_index("comp_id") if len(pairing.seed_mismatch) else None
    frames = []
    for metric in metrics:
        hib = higher_is_better(metric)
        vm, vb = pairs[f"{metric}_m"].to_numpy(float), pairs[f"{metric}_b"].to_numpy(float)
        cid = pairs["comp_id"].to_numpy(np.int64)
        ok = np.isfinite(vm) & np.isfinite(vb)
        desc = describe_differences(cid[ok], vm[ok] - vb[ok], len(comps), hib, alpha, n_boot, seed, zero_method)
        with np.errstate(invalid="ignore", divide="ignore"):
            cnt = np.bincount(cid[ok], minlength=len(comps))
            desc.insert(1, "mean_method", np.bincount(cid[ok], vm[ok], minlength=len(comps)) / cnt)
            desc.insert(2, "mean_baseline", np.bincount(cid[ok], vb[ok], minlength=len(comps)) / cnt)
        desc.insert(1, "n_nan_excluded", np.bincount(cid[~ok], minlength=len(comps)))
        frames.append(pd.concat([comps.reset_index(drop=True), desc], axis=1).assign(metric=metric,
                                                                                       higher_is_better=hib))
    tests = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=PAIRED_COLUMNS)
    tests["variant"] = [variant_label(g, r) for g, r in zip(tests["generator"], tests["synthetic_ratio"])]
    tests["baseline"] = baseline
    if mm is not None:
        tests["n_only_method"] = tests["comp_id"].map(mm["n_only_method"]).fillna(0).astype(int)
        tests["n_only_baseline"] = tests["comp_id"].map(mm["n_only_baseline"]).fillna(0).astype(int)
    else:
        tests["n_only_method"] = 0
        tests["n_only_baseline"] = 0
    if family == "metric":
        fam = tests["metric"]
    elif family == "cell":
        fam = tests["metric"] + "/" + tests.groupby(list(CELL), sort=False).ngroup().astype(str)
    else:
        fam = pd.Series("all", index=tests.index)
    tests["family"] = fam.to_numpy()
    tests["p_t_adj"] = np.nan
    tests["p_wilcoxon_adj"] = np.nan
    tests["family_size"] = 0
    for col in ("p_t", "p_wilcoxon"):
        tests[f"{col}_adj"] = correct_pvalues(tests[col], correction, alpha, tests["family"])
    tests["family_size"] = tests.groupby("family", sort=False)["p_t"].transform("count").astype(int)
    # power under correction: Holm's first step (and BH's) needs the smallest p of the family below α/m
    with np.errstate(divide="ignore", invalid="ignore"):
        tests["alpha_family"] = np.where(tests["family_size"] > 0, alpha / tests["family_size"], np.nan)
    tests["wilcoxon_can_reach_alpha"] = (tests["min_p_wilcoxon"] < tests["alpha_family"]).to_numpy()
    tests["min_pairs_wilcoxon"] = [wilcoxon_min_pairs(a) for a in tests["alpha_family"]]
    dz = np.array([mde_dz(int(n), float(a)) if np.isfinite(a) else np.nan
                   for n, a in zip(tests["n_pairs"], tests["alpha_family"])])
    tests["mde_dz"] = dz
    tests["mde"] = dz * tests["sd_diff"].to_numpy()
    eff = df.groupby([*CELL, *VARIANT], sort=False)["effective_ratio"].mean().rename("effective_ratio")
    tests = tests.drop(columns="effective_ratio", errors="ignore").merge(
        eff.reset_index(), on=[*CELL, *VARIANT], how="left")
    tests["test"] = "paired t" if test == "t" else "wilcoxon"
    tests["p_adj"] = tests["p_t_adj"] if test == "t" else tests["p_wilcoxon_adj"]
    tests["significant"] = tests["p_adj"] < alpha
    signed = np.where(tests["higher_is_better"], tests["mean_diff"], -tests["mean_diff"])
    tests["verdict"] = np.where(~tests["significant"], "n.s.", np.where(signed > 0, "better", "worse"))
    notes = []
    for n, m_, reach, nn, cnt_nan, fs, mp in zip(tests["n_pairs"], tests["wilcoxon_n_nonzero"],
                                                 tests["wilcoxon_can_reach_alpha"], tests["n_only_method"] +
                                                 tests["n_only_baseline"], tests["n_nan_excluded"],
                                                 tests["family_size"], tests["min_pairs_wilcoxon"]):
        note = []
        if n < 2:
            note.append(f"only {n} pair(s): no test")
        elif not reach:
            note.append(f"Wilcoxon cannot reach p<{alpha:g} after {correction} over {fs} tests with {m_} non-zero "
                        f"pairs (needs {mp})")
        if nn:
            note.append(f"{nn} unpaired seed(s) ignored")
        if cnt_nan:
            note.append(f"{cnt_nan} NaN pair(s) excluded")
        notes.append("; ".join(note))
    tests["note"] = notes
    return tests[list(PAIRED_COLUMNS)], pairing


# ----------------------------------------------------------------------------------------------------------------
# Across the sweep: a hierarchical (mixed) model of the paired differences
# ----------------------------------------------------------------------------------------------------------------

LEVEL_TEXT = {"dataset": "dataset", "cell": "cell(dataset)", "seed": "seed(cell)"}
FIT_METHODS = ("powell", "bfgs", "lbfgs")


def nested_levels(levels: dict) -> list[str]:
    """The random-effect levels that can be fitted, outer to inner. ``levels`` maps a level name to the group
    code of every observation (nested: each group lies inside one group of the level above). A level is dropped
    when it has a single group inside every group of the level above (then it is confounded with that level: one
    dataset, or one cell per dataset) or when each of its groups holds a single observation (then it is the
    residual: one seed per cell without folds)."""
    n = len(next(iter(levels.values()))) if levels else 0
    fitted, parent = [], 1
    for name, codes in levels.items():
        k = len(np.unique(codes))
        if parent < k < n:
            fitted.append(name)
        parent = k
    return fitted


def _t_on_means(m: np.ndarray, alpha: float) -> dict:
    """One-sample t-test of the mean of ``m``: estimate, se, t interval, p."""
    k = m.size
    mean, sd = float(m.mean()), float(m.std(ddof=1))
    se = sd / math.sqrt(k)
    t = sps.t.ppf(1 - alpha / 2, k - 1)
    p = 2 * sps.t.sf(abs(mean / se), k - 1) if se > 0 else (1.0 if mean == 0 else 0.0)
    return {"estimate": mean, "se": se, "ci_low": mean - t * se, "ci_high": mean + t * se, "p": float(p)}


def nested_mixed_model(y, levels: dict, alpha: float = 0.05) -> dict:
    """Intercept-only model y = μ + Σ_level u_level + ε with independent normal random intercepts for the nested
    ``levels`` that :func:`nested_levels` keeps, fitted in two stages (the summary-statistics approach):

    1. the observations are averaged within each group of the innermost kept level (a cell without folds, a seed
       of a cell with folds); the pooled within-group variance estimates the residual variance;
    2. statsmodels MixedLM (REML) on those means, the outermost kept level as ``groups`` with a random intercept and
       the levels in between as variance components; the means' own residual is the innermost level plus the
       residual averaged over the group. With a single kept level the means are independent and stage 2 is the
       one-sample t-test of their mean (t interval).

    For groups of equal size (complete seeds) this gives the same μ̂ and standard error as REML on the raw rows
    whenever the innermost variance estimate is positive (the likelihood factorises into the means and the
    within-group contrasts); with a few missing seeds it weighs the groups' means equally. Returns estimate (μ̂),
    se, ci, p (Wald z from MixedLM, t with a single level), the variance of each level, the residual variance,
    what was fitted and notes. With no level kept it is the one-sample t-test of the observations.
    """
    from statsmodels.regression.mixed_linear_model import MixedLM, VCSpec

    y = np.asarray(y, float)
    n = y.size
    names = list(levels)
    codes = {k: np.asarray(v) for k, v in levels.items()}
    fitted = nested_levels(codes) if n else []
    out = {"n_obs": n, "levels": " + ".join([LEVEL_TEXT.get(k, k) for k in fitted] + ["residual"]),
           "estimate": np.nan, "se": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p": np.nan,
           "converged": False, "model": "", "note": "", **{f"var_{k}": np.nan for k in names},
           "var_residual": np.nan}
    z = sps.norm.ppf(1 - alpha / 2)
    if n < 2:
        out.update(model="none", note="fewer than 2 paired differences")
        return out
    if not fitted:
        out.update(_t_on_means(y, alpha), converged=True, model="t-test", var_residual=float(y.var(ddof=1)),
                   note="no random-effect level identifiable: one-sample t-test of the differences")
        return out
    inner = fitted[-1]
    block = pd.factorize(codes[inner])[0]
    nb = np.bincount(block).astype(float)
    means = np.bincount(block, y) / nb
    within = float(((y - means[block]) ** 2).sum() / (n - nb.size)) if n > nb.size else np.nan
    first = np.unique(block, return_index=True)[1]                    # one row per group of the innermost level
    anc = {k: pd.factorize(codes[k][first])[0] for k in fitted}
    n_h = nb.size / np.sum(1.0 / nb)                                  # harmonic mean group size
    out["var_residual"] = within
    if len(fitted) == 1:
        out.update(_t_on_means(means, alpha), converged=True, model="t-test on means")
        out[f"var_{inner}"] = max(0.0, float(means.var(ddof=1)) - within / n_h)
        return out
    grp = anc[fitted[0]]
    middle = fitted[1:-1]
    order = np.argsort(grp, kind="stable")
    vc = None
    if middle:
        mats, colnames = [], []
        for k in middle:
            mk, ck = [], []
            for gi in range(int(grp.max()) + 1):
                rows = order[grp[order] == gi]
                cols, inv = np.unique(anc[k][rows], return_inverse=True)
                m = np.zeros((rows.size, cols.size))
                m[np.arange(rows.size), inv] = 1.0
                mk.append(m)
                ck.append([f"{k}{c}" for c in cols])
            mats.append(mk)
            colnames.append(ck)
        vc = VCSpec(list(middle), colnames, mats)
    fits, errors = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = MixedLM(means[order], np.ones((order.size, 1)), groups=grp[order],
                        exog_re=np.ones((order.size, 1)), exog_vc=vc)
        # each optimiser from statsmodels' default start until one converges (continuing one from where another
        # stopped can stall on a flat REML surface); the best REML likelihood among the converged fits wins
        for method in FIT_METHODS:
            try:
                fit = model.fit(reml=True, method=[method])
            except Exception as exc:  # noqa: BLE001 - a failed optimiser is reported, not raised
                errors.append(f"{method}: {exc}")
                continue
            if np.isfinite(fit.bse_fe[0]):
                fits.append(fit)
                if fit.converged:
                    break
    if not fits:
        out.update(model="mixedlm", note=f"the mixed model failed: {'; '.join(errors) or 'non-finite standard error'}")
        return out
    good = [f for f in fits if f.converged] or fits
    fit = max(good, key=lambda f: f.llf)
    est, se = float(fit.fe_params[0]), float(fit.bse_fe[0])
    out.update(estimate=est, se=se, ci_low=est - z * se, ci_high=est + z * se,
               p=float(2 * sps.norm.sf(abs(est / se))) if se > 0 else np.nan, converged=bool(fit.converged),
               model="mixedlm on means")
    out[f"var_{fitted[0]}"] = float(np.asarray(fit.cov_re)[0, 0])
    for i, k in enumerate(middle):
        out[f"var_{k}"] = float(fit.vcomp[i])
    out[f"var_{inner}"] = max(0.0, float(fit.scale) - within / n_h)
    if not fit.converged:
        out["note"] = f"no optimiser ({', '.join(FIT_METHODS)}) converged: treat with care"
    return out


def hierarchical_assumptions(levels: str, n_datasets: int) -> str:
    """What a fitted hierarchical model assumes, in one line."""
    txt = (f"differences additive and normal; independent normal random intercepts for {levels}; fitted on "
           f"group means (equal weight per group); Wald z interval and p with several datasets")
    if n_datasets < 2:
        return txt + "; one dataset, so the estimate speaks for its cells only"
    if n_datasets < 5:
        return txt + f"; only {n_datasets} datasets, so the dataset variance and the interval are rough"
    return txt


def hierarchical_tests(pairing: Pairing, metrics, baseline: str, alpha: float = 0.05) -> pd.DataFrame:
    """Does each variant beat the baseline across the sweep? One mixed model per (variant, baseline ratio, metric)
    on all its paired differences (method − baseline): :func:`nested_mixed_model` with random intercepts for
    dataset, cell within dataset and seed within cell (levels that cannot be identified are dropped and the
    ``levels`` column says what was fitted). ``p_holm``: Holm over the variants of one metric. Columns:
    ``HIERARCHICAL_COLUMNS``."""
    comps, pairs = pairing.comparisons, pairing.pairs
    if comps.empty or pairs.empty:
        return pd.DataFrame(columns=list(HIERARCHICAL_COLUMNS))
    vkeys = ["generator", "synthetic_ratio", "baseline_ratio"]
    comp_var = comps.groupby(vkeys, sort=False).ngroup().to_numpy()
    variants = comps.drop_duplicates(vkeys)[vkeys].reset_index(drop=True)
    comp_ds = pd.factorize(comps["dataset"])[0]
    cid = pairs["comp_id"].to_numpy(np.int64)
    pv, pds = comp_var[cid], comp_ds[cid]
    unit = pd.factorize(pd.Series(cid).astype(str) + "|" + pairs["seed"].astype(str).to_numpy())[0]
    rows = []
    for metric in metrics:
        hib = higher_is_better(metric)
        d = pairs[f"{metric}_m"].to_numpy(float) - pairs[f"{metric}_b"].to_numpy(float)
        ok = np.isfinite(d)
        for v, (gen, ratio, bratio) in enumerate(variants.itertuples(index=False, name=None)):
            sel = ok & (pv == v)
            res = nested_mixed_model(d[sel], {"dataset": pds[sel], "cell": cid[sel], "seed": unit[sel]}, alpha)
            n_ds = len(np.unique(pds[sel]))
            rows.append({"metric": metric, "higher_is_better": hib, "generator": gen, "synthetic_ratio": ratio,
                         "variant": variant_label(gen, ratio), "baseline": baseline, "baseline_ratio": bratio,
                         "n_datasets": n_ds, "n_cells": len(np.unique(cid[sel])), "n_units": len(np.unique(unit[sel])),
                         "assumes": hierarchical_assumptions(res["levels"], n_ds) if res["model"].endswith(
                             "means") else ("one-sample t-test: differences independent and normal"
                                            if res["model"] == "t-test" else ""), **res})
    out = pd.DataFrame(rows)
    out["p_holm"] = np.nan
    for metric in metrics:
        m = (out["metric"] == metric).to_numpy()
        out.loc[m, "p_holm"] = correct_pvalues(out.loc[m, "p"], "holm", alpha)
    signed = np.where(out["higher_is_better"], out["estimate"], -out["estimate"])
    out["verdict"] = np.where(~(out["p_holm"] < alpha), "n.s.", np.where(signed > 0, "better", "worse"))
    for col in HIERARCHICAL_COLUMNS:
        if col not in out.columns:
            out[col] = np.nan
    return sort_frame(out[list(HIERARCHICAL_COLUMNS)], baseline)


# ----------------------------------------------------------------------------------------------------------------
# Ranks across blocks: Friedman, Iman–Davenport, Nemenyi, Holm vs a control
# ----------------------------------------------------------------------------------------------------------------

def rank_matrix(values, higher_is_better: bool = True) -> np.ndarray:
    """Ranks within each row (block) of an N×k matrix: 1 = best, ties get the average rank."""
    values = np.asarray(values, float)
    return sps.rankdata(-values if higher_is_better else values, axis=1)


@lru_cache(maxsize=None)
def nemenyi_q(k: int, alpha: float = 0.05) -> float:
    """q_α of the Nemenyi test: the studentized range quantile (k groups, ∞ df) divided by √2 (Demšar 2006)."""
    return float(sps.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2))


def nemenyi_cd(k: int, n_blocks: int, alpha: float = 0.05) -> float:
    """Nemenyi critical difference of average ranks: q_α √(k(k+1)/(6N))."""
    return nemenyi_q(k, alpha) * math.sqrt(k * (k + 1) / (6.0 * n_blocks))


def friedman(values, higher_is_better: bool = True, alpha: float = 0.05) -> dict:
    """Friedman test on an N (blocks) × k (methods) matrix, with the Iman–Davenport F and the Nemenyi CD.

    ``chi2`` includes the tie correction (as scipy.stats.friedmanchisquare); ``chi2_uncorrected`` is Demšar's
    (2006, eq. for χ²_F) formula without it. ``F`` (Iman–Davenport) is computed from the tie-corrected χ²;
    ``F_uncorrected`` from the other. Returns a dict with ``avg_ranks`` (array) and the statistics.
    """
    values = np.asarray(values, float)
    N, k = values.shape
    ranks = rank_matrix(values, higher_is_better)
    avg = ranks.mean(axis=0)
    out = {"n_blocks": N, "k": k, "avg_ranks": avg}
    if N < 2 or k < 2:
        return {**out, **dict.fromkeys(("chi2", "p_chi2", "chi2_uncorrected", "F", "df1", "df2", "p_F",
                                        "F_uncorrected", "p_F_uncorrected", "q_alpha", "cd"), np.nan)}
    chi_unc = 12.0 * N / (k * (k + 1)) * (np.sum(avg ** 2) - k * (k + 1) ** 2 / 4.0)
    tie_sum = 0.0
    for row in ranks:
        _, t = np.unique(row, return_counts=True)
        tie_sum += float(np.sum(t ** 3 - t))
    c = 1.0 - tie_sum / (N * k * (k * k - 1))
    chi2 = chi_unc / c if c > 0 else np.nan
    df1, df2 = k - 1, (k - 1) * (N - 1)

    def iman_davenport(x):
        denom = N * (k - 1) - x
        f = (N - 1) * x / denom if denom > 0 else np.inf
        return f, float(sps.f.sf(f, df1, df2)) if np.isfinite(f) else 0.0

    F, pF = iman_davenport(chi2)
    F_unc, pF_unc = iman_davenport(chi_unc)
    q = nemenyi_q(k, alpha)
    return {**out, "chi2": chi2, "p_chi2": float(sps.chi2.sf(chi2, df1)), "chi2_uncorrected": chi_unc,
            "F": F, "df1": df1, "df2": df2, "p_F": pF, "F_uncorrected": F_unc, "p_F_uncorrected": pF_unc,
            "q_alpha": q, "cd": q * math.sqrt(k * (k + 1) / (6.0 * N))}


def holm_vs_control(avg_ranks: pd.Series, control: str, n_blocks: int, alpha: float = 0.05) -> pd.DataFrame:
    """Demšar's post-hoc test against a control: z = (R_i − R_c)/√(k(k+1)/6N), two-sided p, Holm step-down."""
    k = len(avg_ranks)
    se = math.sqrt(k * (k + 1) / (6.0 * n_blocks))
    others = avg_ranks.drop(control)
    z = (others - avg_ranks[control]) / se
    p = 2 * sps.norm.sf(np.abs(z.to_numpy(float)))
    p_holm = correct_pvalues(p, "holm", alpha)
    return pd.DataFrame({"variant": others.index, "avg_rank": others.to_numpy(), "z_vs_control": z.to_numpy(),
                         "p_vs_control": p, "p_holm": p_holm, "significant_vs_control": p_holm < alpha})


def nemenyi_cliques(avg_ranks: pd.Series, cd: float) -> list[list[str]]:
    """Maximal groups of methods (sorted by average rank) whose ranks differ by less than the CD."""
    s = avg_ranks.sort_values()
    names, r = list(s.index), s.to_numpy()
    out, last_end = [], -1
    for i in range(len(r)):
        j = i
        while j + 1 < len(r) and r[j + 1] - r[i] < cd:
            j += 1
        if j > i and j > last_end:
            out.append(names[i:j + 1])
            last_end = j
    return out


def complete_blocks(matrix: pd.DataFrame) -> tuple[pd.DataFrame, list, list]:
    """Drop methods or blocks until no value is missing, greedily losing the fewest values.

    Returns (complete matrix, dropped methods, dropped blocks).
    """
    m = matrix.copy()
    dropped_cols, dropped_rows = [], []
    while m.shape[0] and m.shape[1] and m.isna().to_numpy().any():
        present = m.notna()
        col_missing = (~present).sum(axis=0)
        j = col_missing.idxmax()
        rows = present.index[~present[j].to_numpy()]
        cost_col = int(present[j].sum())
        cost_rows = int(present.loc[rows].to_numpy().sum())
        if cost_col <= cost_rows or m.shape[0] - len(rows) < 2:
            dropped_cols.append(j)
            m = m.drop(columns=[j])
        else:
            dropped_rows.extend(rows)
            m = m.drop(index=rows)
    return m, dropped_cols, dropped_rows


def rank_analysis(df: pd.DataFrame, metric: str, baseline: str, alpha: float = 0.05) -> dict:
    """Rank variants across independent blocks (datasets) on ``metric``; Friedman, Iman–Davenport, Nemenyi, Holm.

    A variant's value in a cell is its mean over seeds. Cells of one dataset share its test set, seeds, rarity
    subsamples and generator banks, so they are not independent blocks: the complete cell × variant matrix
    (:func:`complete_blocks`) is averaged over each dataset's cells and the datasets are the blocks. With fewer
    than ``MIN_RANK_BLOCKS`` datasets no test is made (no p-value, no critical difference): the average ranks are
    still returned, descriptively, over datasets (``avg_rank``) and over cells (``avg_rank_cells``, which treats
    dependent cells as blocks and is therefore never tested). The control for Holm is the baseline variant (the
    best-ranked one when the baseline has several ratios).
    Returns {"summary": dict, "ranks": DataFrame, "cliques": list, "dropped_variants", "dropped_blocks",
    "avg_ranks" (when there are ranks), "tested": bool}.
    """
    hib = higher_is_better(metric)
    means = df.groupby(list(CELL) + list(VARIANT), sort=False)[metric].mean().reset_index()
    means["variant"] = [variant_label(g, r) for g, r in zip(means["generator"], means["synthetic_ratio"])]
    means["block"] = means.groupby(list(CELL), sort=False).ngroup()
    order = sort_frame(means.drop_duplicates("variant")[["generator", "synthetic_ratio", "variant"]], baseline)
    mat = means.pivot(index="block", columns="variant", values=metric)
    mat = mat[[v for v in order["variant"] if v in mat.columns]]
    block_dataset = means.drop_duplicates("block").set_index("block")["dataset"]
    full, dcols, drows = complete_blocks(mat)
    by_ds = full.groupby(block_dataset.reindex(full.index).to_numpy(), sort=False).mean() if len(full) else full
    n_ds_total = int(block_dataset.nunique())
    summary = {"metric": metric, "higher_is_better": hib, "block": "dataset", "n_blocks": int(by_ds.shape[0]),
               "n_cells": int(full.shape[0]), "k": int(full.shape[1]), "n_datasets_total": n_ds_total,
               "n_cells_total": int(mat.shape[0]), "n_variants_total": int(mat.shape[1]),
               "dropped_variants": ", ".join(map(str, dcols)), "n_dropped_cells": len(drows), "tested": False}
    for key in ("chi2", "p_chi2", "chi2_uncorrected", "F", "df1", "df2", "p_F", "F_uncorrected", "p_F_uncorrected",
                "q_alpha", "cd"):
        summary[key] = np.nan
    summary.update(control="", alpha=alpha, note="")
    result = {"summary": summary, "ranks": pd.DataFrame(), "cliques": [], "dropped_variants": dcols,
              "dropped_blocks": drows, "tested": False}
    if full.shape[0] < 1 or full.shape[1] < 2:
        summary["note"] = "fewer than 2 variants with complete values: no ranks"
        return result
    avg = pd.Series(rank_matrix(by_ds.to_numpy(), hib).mean(axis=0), index=full.columns)
    avg_cells = pd.Series(rank_matrix(full.to_numpy(), hib).mean(axis=0), index=full.columns)
    bvars = [v for v in full.columns if order.set_index("variant").loc[v, "generator"] == baseline]
    control = min(bvars, key=lambda v: avg[v]) if bvars else avg.idxmin()
    ranks = pd.DataFrame({"metric": metric, "variant": avg.index, "avg_rank": avg.to_numpy(),
                          "avg_rank_cells": avg_cells.to_numpy(), "mean_value": full.mean(axis=0).to_numpy()})
    ranks["is_control"] = ranks["variant"] == control
    tested = by_ds.shape[0] >= MIN_RANK_BLOCKS
    if tested:
        fr = friedman(by_ds.to_numpy(), hib, alpha)
        fr.pop("avg_ranks")
        holm = holm_vs_control(avg, control, fr["n_blocks"], alpha).set_index("variant")
        for col in ("z_vs_control", "p_vs_control", "p_holm", "significant_vs_control"):
            ranks[col] = ranks["variant"].map(holm[col])
        ranks["nemenyi_diff_vs_control"] = (ranks["avg_rank"] - avg[control]).abs() >= fr["cd"]
        summary.update({k: v for k, v in fr.items() if k != "n_blocks"}, tested=True)
        cliques = nemenyi_cliques(avg, fr["cd"])
    else:
        for col in ("z_vs_control", "p_vs_control", "p_holm"):
            ranks[col] = np.nan
        ranks["significant_vs_control"] = None
        ranks["nemenyi_diff_vs_control"] = None
        summary["note"] = (f"{by_ds.shape[0]} independent block(s) (datasets): a rank test needs at least "
                           f"{MIN_RANK_BLOCKS}, so none was made; average ranks are descriptive")
        cliques = []
    ranks = ranks.sort_values("avg_rank", kind="stable").reset_index(drop=True)
    summary.update(control=control, k=int(full.shape[1]))
    result.update(ranks=ranks, cliques=cliques, avg_ranks=avg, tested=tested)
    result["summary"]["tested"] = tested
    return result


# ----------------------------------------------------------------------------------------------------------------
# Dose-response
# ----------------------------------------------------------------------------------------------------------------

def dose_response_data(df: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, str]:
    """Model data: per (dataset, unit, method, ratio label) the within-cell-centred metric and log2 effective ratio.

    x is log2 of the effective ratio each job trained with (``effective_ratio``: a ``balance`` job at rare count 10
    sits where its ≈ 40 added images per real rare image put it, not at a nominal ratio). Records with effective
    ratio 0 (methods that add nothing: none, class_weight, …) or unknown are left out; a method enters when it has at
    least two ratio labels left. Inside each (cell, method) both y and x are centred on their means, which removes
    every fixed cell × method effect (rare count, backbone, the method's level); the centred values are then averaged
    over the dataset's cells per (unit, method, ratio label), leaving one point per seed, which keeps the model
    small (averaging is exact for a slope common to the cells).
    """
    cols = ["dataset", "unit", "generator", "synthetic_ratio", "effective_ratio", "y", "x", "seed_in_dataset"]
    d = df[df[metric].notna() & (df["effective_ratio"] > 0)]
    nrat = d.groupby("generator")["synthetic_ratio"].nunique()
    d = d[d["generator"].isin(nrat.index[nrat >= 2])]
    if d.empty:
        return pd.DataFrame(columns=cols), "log2"
    keys = [*CELL, "generator"]
    d = d.assign(x=np.log2(d["effective_ratio"].to_numpy(float)))
    g = d.groupby(keys, sort=False)
    d = d[(g["synthetic_ratio"].transform("nunique") >= 2).to_numpy()]
    if d.empty:
        return pd.DataFrame(columns=cols), "log2"
    g = d.groupby(keys, sort=False)
    d = d.assign(y=d[metric] - g[metric].transform("mean"), x=d["x"] - g["x"].transform("mean"),
                 unit=[unit_label(s, f) for s, f in zip(d["seed"], d["fold"])])
    agg = d.groupby(["dataset", "unit", "generator", "synthetic_ratio"], sort=False).agg(
        effective_ratio=("effective_ratio", "mean"), y=("y", "mean"), x=("x", "mean")).reset_index()
    agg["seed_in_dataset"] = agg["dataset"].astype(str) + "|" + agg["unit"].astype(str)
    return agg[cols], "log2"


def dose_response(df: pd.DataFrame, metric: str, alpha: float = 0.05) -> dict:
    """Slope of ``metric`` per doubling of the effective ratio, for each method with at least two ratio forms.

    Model (statsmodels MixedLM, REML) on the within-cell-centred seed means of :func:`dose_response_data`:
    y ~ 0 + C(method) + C(method):x with a random intercept for each seed within each dataset (groups =
    dataset × seed). If it raises or does not converge: OLS with cluster-robust (dataset × seed) standard errors
    (ordinary ones with fewer than ``MIN_CLUSTERS`` clusters), and a warning. Returns {"coef": DataFrame, "model",
    "warning", "scale", "data"}.
    """
    import statsmodels.formula.api as smf

    data, scale = dose_response_data(df, metric)
    cols = ["metric", "generator", "slope", "se", "ci_low", "ci_high", "p", "p_holm", "n_obs", "n_ratios",
            "ratios", "model", "scale"]
    if data.empty or data["x"].nunique() < 2:
        return {"coef": pd.DataFrame(columns=cols), "model": "none", "scale": scale,
                "warning": "", "data": data}
    formula = "y ~ 0 + C(generator) + C(generator):x" if data["generator"].nunique() > 1 else "y ~ 1 + x"
    warning, model, fit = "", "mixedlm", None
    try:
        if data["unit"].nunique() < 2:
            raise ValueError("fewer than two seeds")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = smf.mixedlm(formula, data, groups="seed_in_dataset", re_formula="1").fit(
                reml=True, method=["powell", "lbfgs"])
        if not fit.converged:
            raise RuntimeError("no optimiser (powell, lbfgs) converged")
        if not np.all(np.isfinite(fit.bse_fe)):
            raise RuntimeError("non-finite standard errors")
    except Exception as exc:  # noqa: BLE001 - any failure of the mixed model falls back to OLS
        model = "ols"
        clusters = pd.factorize(data["seed_in_dataset"])[0]
        if clusters.max() + 1 >= MIN_CLUSTERS:
            fit = smf.ols(formula, data).fit(cov_type="cluster", cov_kwds={"groups": clusters})
            se_kind = "cluster-robust (dataset × seed)"
        else:
            fit = smf.ols(formula, data).fit()
            se_kind = f"ordinary (fewer than {MIN_CLUSTERS} dataset × seed clusters)"
        warning = (f"{metric}: the mixed model did not converge ({exc}); fell back to OLS with {se_kind} "
                   f"standard errors")
    params, bse, pvals = fit.params, fit.bse, fit.pvalues
    z = sps.norm.ppf(1 - alpha / 2)
    rows = []
    gens = list(dict.fromkeys(data["generator"]))
    for g in gens:
        name = f"C(generator)[{g}]:x" if len(gens) > 1 else "x"
        sub = data[data["generator"] == g]
        labels = sorted(sub["synthetic_ratio"].unique(), key=ratio_sort_key)
        rows.append({"metric": metric, "generator": g, "slope": params[name], "se": bse[name],
                     "ci_low": params[name] - z * bse[name], "ci_high": params[name] + z * bse[name],
                     "p": pvals[name], "n_obs": len(sub), "n_ratios": len(labels), "ratios": ", ".join(labels),
                     "model": model, "scale": scale})
    coef = pd.DataFrame(rows, columns=[c for c in cols if c != "p_holm"])
    coef.insert(7, "p_holm", correct_pvalues(coef["p"], "holm", alpha))
    return {"coef": coef[cols], "model": model, "scale": scale, "warning": warning, "data": data}


def dose_curves(df: pd.DataFrame, metric: str, alpha: float = 0.05, n_boot: int = N_BOOT,
                seed: int = 0) -> pd.DataFrame:
    """Plot data: per (dataset, variant) the mean of ``metric`` over seed-level means, with its interval
    (:func:`mean_intervals`), and the variant's effective ratio on the dataset (the geometric mean over its jobs
    when positive; 0 for variants that add nothing, which the plot draws as horizontal reference lines).

    Seed-level means average over the dataset's cells (rare counts, backbones); the interval is across seeds.
    """
    cols = ["metric", "dataset", "generator", "synthetic_ratio", "variant", "effective_ratio", "mean", "sd", "n",
            "ci_low", "ci_high", "ci_method"]
    d = df[df[metric].notna()]
    if d.empty:
        return pd.DataFrame(columns=cols)
    d = d.assign(unit=[unit_label(s, f) for s, f in zip(d["seed"], d["fold"])],
                 _logeff=np.log2(d["effective_ratio"].where(d["effective_ratio"] > 0)))
    keys = ["dataset", "generator", "synthetic_ratio"]
    per = d.groupby([*keys, "unit"], sort=False)[metric].mean().reset_index()
    codes = per.groupby(keys, sort=False).ngroup().to_numpy()
    g = per.groupby(keys, sort=False)[metric]
    out = pd.DataFrame({"mean": g.mean(), "sd": g.std(), "n": g.size()}).reset_index()
    lo, hi, how = mean_intervals(codes, per[metric].to_numpy(), len(out), metric, 1 - alpha, n_boot, seed)
    out["ci_low"], out["ci_high"], out["ci_method"] = lo, hi, how
    eff = d.groupby(keys, sort=False).agg(_mean=("effective_ratio", "mean"), _log=("_logeff", "mean"))
    eff = eff.reindex(pd.MultiIndex.from_frame(out[keys]))
    out["effective_ratio"] = np.where(eff["_mean"].to_numpy() > 0, np.exp2(eff["_log"].to_numpy()),
                                      eff["_mean"].to_numpy())
    out["variant"] = [variant_label(a, b) for a, b in zip(out["generator"], out["synthetic_ratio"])]
    out.insert(0, "metric", metric)
    return out[cols]


# ----------------------------------------------------------------------------------------------------------------
# Leaderboard and audit table
# ----------------------------------------------------------------------------------------------------------------

def leaderboard(df: pd.DataFrame, metrics, tests: pd.DataFrame, baseline: str, alpha: float = 0.05,
                n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """One row per (cell, variant): runs, mean effective ratio, compute hours and, per metric, n, mean, std, 95 %
    interval of the mean (percentile bootstrap over seeds for metrics bounded to [0, 1], so inside the range by
    construction; t-interval for others), whether that interval rests on at least ``MIN_SEEDS_CI`` seeds, rank in
    the cell, adjusted p and verdict vs the baseline (``baseline`` on the baseline's rows; with several baseline
    ratios the largest adjusted p is shown and a verdict needs every comparison to agree)."""
    keys = list(CELL) + list(VARIANT)
    g = df.groupby(keys, sort=False)
    out = g.agg(n_runs=("seed", "size"), effective_ratio=("effective_ratio", "mean"),
                compute_hours=("compute_hours", lambda s: s.sum(min_count=1)))
    out = out.reset_index()
    out.insert(len(keys), "variant", [variant_label(a, b) for a, b in zip(out["generator"], out["synthetic_ratio"])])
    codes = g.ngroup().to_numpy()
    for m in metrics:
        hib = higher_is_better(m)
        stat = g[m].agg(["count", "mean", "std"]).reset_index(drop=True)
        out[f"{m}_n"] = stat["count"].to_numpy()
        out[f"{m}_mean"] = stat["mean"].to_numpy()
        out[f"{m}_std"] = stat["std"].to_numpy()
        lo, hi, _ = mean_intervals(codes, df[m].to_numpy(float), len(out), m, 1 - alpha, n_boot, seed)
        out[f"{m}_ci_low"], out[f"{m}_ci_high"] = lo, hi
        out[f"{m}_ci_reliable"] = stat["count"].to_numpy() >= MIN_SEEDS_CI
        out[f"{m}_rank"] = out.groupby(list(CELL), sort=False)[f"{m}_mean"].rank(ascending=not hib, method="min")
        t = tests[tests["metric"] == m]
        if len(t):
            agg = t.groupby(keys, sort=False).agg(p_adj=("p_adj", "max"), first=("verdict", "first"),
                                                  kinds=("verdict", "nunique"))
            agg["verdict"] = agg["first"].where(agg["kinds"] == 1, "n.s.")
            agg = agg[["p_adj", "verdict"]].rename(columns={"p_adj": f"{m}_p_adj", "verdict": f"{m}_vs_baseline"})
            out = out.merge(agg, left_on=keys, right_index=True, how="left")
        else:
            out[f"{m}_p_adj"], out[f"{m}_vs_baseline"] = np.nan, np.nan
        out[f"{m}_vs_baseline"] = out[f"{m}_vs_baseline"].astype(object)
        out.loc[out["generator"] == baseline, f"{m}_vs_baseline"] = "baseline"
        out[f"{m}_vs_baseline"] = out[f"{m}_vs_baseline"].fillna("no baseline")
    return sort_frame(out, baseline)


def gap_closed(tests: pd.DataFrame, upper: str = UPPER_BOUND) -> pd.DataFrame:
    """How much of the real-data gain each method recovers, per cell and metric: gain = mean paired difference of
    the method vs the baseline; upper_gain = the same for ``upper`` (``real_extra``) at the same ratio form in the
    same cell; gap_closed = gain / upper_gain (1 = as good as adding the same number of real images, 0 = no gain).
    Undefined (NaN, with a note) when the upper bound has no gain (upper_gain ≤ 0) or is not in the cell."""
    t = tests[tests["n_pairs"] >= 2]
    if t.empty or upper not in set(t["generator"]):
        return pd.DataFrame(columns=list(GAP_COLUMNS))
    keys = ["metric", *CELL, "synthetic_ratio"]
    up = t[t["generator"] == upper][[*keys, "variant", "mean_diff", "verdict"]].rename(
        columns={"variant": "upper_variant", "mean_diff": "upper_gain", "verdict": "upper_verdict"})
    m = t[t["generator"] != upper].merge(up, on=keys, how="inner")
    if m.empty:
        return pd.DataFrame(columns=list(GAP_COLUMNS))
    sign = np.where(m["higher_is_better"].astype(bool), 1.0, -1.0)
    gain, upper_gain = m["mean_diff"].to_numpy(float) * sign, m["upper_gain"].to_numpy(float) * sign
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(upper_gain > 0, gain / upper_gain, np.nan)
    out = m.assign(gain=gain, upper_gain=upper_gain, gain_ci_low=m["ci_boot_low"], gain_ci_high=m["ci_boot_high"],
                   gap_closed=frac,
                   note=np.where(upper_gain > 0, np.where(m["upper_verdict"] == "better", "",
                                                          f"{upper} gain not significant: fraction is noisy"),
                                 f"{upper} has no gain here: fraction undefined"))
    return out[list(GAP_COLUMNS)].reset_index(drop=True)


def audit_table(df: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Mean of each ``audit_*`` column per (dataset, image_size, rare_class, rare_count, generator); empty if none."""
    cols = [c for c in df.columns if str(c).startswith("audit_")]
    if not cols:
        return pd.DataFrame()
    d = df.assign(**{c: pd.to_numeric(df[c], errors="coerce") for c in cols})
    d = d[d[cols].notna().any(axis=1)]
    if d.empty:
        return pd.DataFrame()
    keys = ["dataset", "image_size", "rare_class", "rare_count", "generator"]
    out = d.groupby(keys, sort=False)[cols].mean().reset_index()
    out.insert(len(keys), "n_runs", d.groupby(keys, sort=False).size().to_numpy())
    return sort_frame(out, baseline)


# ----------------------------------------------------------------------------------------------------------------
# Everything at once
# ----------------------------------------------------------------------------------------------------------------

@dataclass
class Analysis:
    records: pd.DataFrame
    metrics: list
    baseline: str
    options: dict
    tests: pd.DataFrame
    missing_baseline: pd.DataFrame
    seed_mismatch: pd.DataFrame
    nan_rows: pd.DataFrame
    duplicates: pd.DataFrame
    leaderboard: pd.DataFrame
    friedman: pd.DataFrame
    ranks: pd.DataFrame
    rank_results: dict
    dose: pd.DataFrame
    dose_curves: pd.DataFrame
    audit: pd.DataFrame
    warnings: list = field(default_factory=list)
    hierarchical: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(HIERARCHICAL_COLUMNS)))
    gap: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(GAP_COLUMNS)))


def _default_metrics_present(records: pd.DataFrame, metrics) -> tuple[list, list]:
    """With the default metrics, leave out those the records lack (records written before the harness computed
    them) rather than refuse the table; returns (metrics to use, left out). Explicit metrics are never dropped."""
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    if tuple(m.strip() for m in names) != DEFAULT_METRICS or not isinstance(records, pd.DataFrame):
        return names, []
    present = [m for m in DEFAULT_METRICS if m in records.columns and pd.to_numeric(
        records[m], errors="coerce").notna().any()]
    return (present, [m for m in DEFAULT_METRICS if m not in present]) if present else (names, [])


def power_summary(tests: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Per metric: the family sizes of its comparisons, the corrected threshold the smallest p must pass (α/m),
    the fewest non-zero pairs at which an exact two-sided Wilcoxon test can pass it, the pairs the comparisons
    have, and how many of them cannot reach significance."""
    cols = ["metric", "family_size", "alpha_family", "min_pairs_wilcoxon", "median_pairs", "max_pairs",
            "n_comparisons", "n_cannot_reach"]
    t = tests[tests["n_pairs"] >= 2]
    if t.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for m, sub in t.groupby("metric", sort=False):
        fam = int(sub["family_size"].max())
        rows.append({"metric": m, "family_size": fam, "alpha_family": alpha / fam if fam else np.nan,
                     "min_pairs_wilcoxon": wilcoxon_min_pairs(alpha / fam) if fam else np.nan,
                     "median_pairs": float(sub["n_pairs"].median()), "max_pairs": int(sub["n_pairs"].max()),
                     "n_comparisons": len(sub),
                     "n_cannot_reach": int((~sub["wilcoxon_can_reach_alpha"].astype(bool)).sum())})
    return pd.DataFrame(rows, columns=cols)


def analyse(records: pd.DataFrame, metrics=DEFAULT_METRICS, baseline: str = "none", correction: str = "holm",
            alpha: float = 0.05, family: str = "metric", zero_method: str = "zsplit", test: str = "t",
            n_boot: int = N_BOOT, seed: int = 0, source: str = "the records table") -> Analysis:
    """Validate the records and compute every statistic: paired tests, the hierarchical model across the sweep,
    leaderboard, ranks, dose-response, audit."""
    metrics, left_out = _default_metrics_present(records, metrics)
    df, metrics, duplicates = prepare_records(records, metrics, baseline, source)
    nan_rows = nan_metric_rows(df, metrics)
    tests, pairing = paired_tests(df, metrics, baseline, None, correction, alpha, family, zero_method, test,
                                  n_boot, seed)
    mismatch = pairing.seed_mismatch.drop(columns="comp_id") if len(pairing.seed_mismatch) else \
        pairing.seed_mismatch
    board = leaderboard(df, metrics, tests, baseline, alpha, n_boot, seed)
    gap = gap_closed(tests)
    if len(gap):  # the leaderboard shows, per method, the fraction of the real-data gain it recovers
        for m in metrics:
            g = gap[gap["metric"] == m][[*CELL, *VARIANT, "gap_closed"]].rename(columns={"gap_closed": f"{m}_gap_closed"})
            board = board.merge(g, on=[*CELL, *VARIANT], how="left")
    hier = hierarchical_tests(pairing, metrics, baseline, alpha)
    fr_rows, rank_frames, rank_results, dose_frames, curve_frames, notes = [], [], {}, [], [], []
    if left_out:
        notes.append(f"default metric(s) {', '.join(left_out)} not in {source} (records written before the harness "
                     f"computed them): left out; re-run the jobs to get them")
    for m in metrics:
        rr = rank_analysis(df, m, baseline, alpha)
        rank_results[m] = rr
        fr_rows.append(rr["summary"])
        rank_frames.append(rr["ranks"])
        dr = dose_response(df, m, alpha)
        dose_frames.append(dr["coef"])
        if dr["warning"]:
            notes.append(dr["warning"])
        curve_frames.append(dose_curves(df, m, alpha, n_boot, seed))
    fr = pd.DataFrame(fr_rows)
    ranks = pd.concat([r for r in rank_frames if len(r)], ignore_index=True) if any(len(r) for r in rank_frames) \
        else pd.DataFrame()
    dose = pd.concat([d for d in dose_frames if len(d)], ignore_index=True) if any(len(d) for d in dose_frames) \
        else dose_frames[0]
    if len(duplicates):
        notes.append(f"{len(duplicates)} duplicate record(s) (same cell, method, ratio, seed, fold) ignored; the "
                     f"first of each was kept (stats/duplicates.csv)")
    if len(nan_rows):
        n_rec = nan_rows.drop(columns="metric").drop_duplicates().shape[0]
        notes.append(f"{len(nan_rows)} NaN metric value(s) in {n_rec} record(s) excluded from the statistics "
                     f"(stats/nan_metrics.csv)")
    unknown_eff = df["effective_ratio"].isna()
    if unknown_eff.any():
        labels = sorted(df.loc[unknown_eff, "synthetic_ratio"].unique(), key=ratio_sort_key)
        notes.append(f"{int(unknown_eff.sum())} record(s) (ratio {', '.join(labels)}) have no effective ratio (no "
                     f"effective_ratio, n_train_synthetic or n_rare_train column): left out of the dose-response")
    if len(pairing.missing_baseline):
        cells = pairing.missing_baseline[list(CELL)].drop_duplicates().shape[0]
        notes.append(f"{len(pairing.missing_baseline)} variant(s) in {cells} cell(s) have no {baseline!r} run to "
                     f"compare with (stats/missing_baseline.csv)")
    if len(mismatch):
        notes.append(f"{len(mismatch)} comparison(s) have different seed sets on the two sides; only common seeds "
                     f"were paired (stats/seed_mismatch.csv)")
    first = tests[tests["metric"] == metrics[0]]
    unreachable = first[(first["n_pairs"] >= 2) & ~first["wilcoxon_can_reach_alpha"].astype(bool)]
    if len(unreachable):
        ns = sorted(set(unreachable["wilcoxon_n_nonzero"]))
        fam = int(unreachable["family_size"].max())
        need = wilcoxon_min_pairs(alpha / fam)
        notes.append(f"the Wilcoxon test cannot reach p<{alpha:g} after {correction} correction in "
                     f"{len(unreachable)} of {int((first['n_pairs'] >= 2).sum())} comparison(s) of {metrics[0]} "
                     f"(non-zero pairs: {', '.join(map(str, ns))}; with {fam} tests in the family the smallest p "
                     f"must be below {alpha / fam:.3g}, which an exact two-sided test reaches only with at least "
                     f"{need} non-zero pairs): add seeds, or rely on the paired t-test")
    few = first[first["n_pairs"] < 2]
    if len(few):
        notes.append(f"{len(few)} comparison(s) of {metrics[0]} have fewer than 2 pairs: no test")
    failed = hier[hier["note"].astype(str).str.startswith("the mixed model failed")] if len(hier) else hier
    if len(failed):
        notes.append(f"the hierarchical model failed for {len(failed)} variant × metric fit(s) (stats/"
                     f"hierarchical.csv, column note)")
    options = {"correction": correction, "alpha": alpha, "family": family, "zero_method": zero_method,
               "test": test, "n_boot": n_boot, "bootstrap_seed": seed, "power": POWER}
    notes = list(dict.fromkeys(notes))
    return Analysis(df, metrics, baseline, options, tests, pairing.missing_baseline, mismatch, nan_rows, duplicates,
                    board, fr, ranks, rank_results, dose, pd.concat(curve_frames, ignore_index=True),
                    audit_table(df, baseline), notes, hier, gap)
