"""Statistics on GenMed-Rare records: paired tests vs a baseline, rank tests across blocks, dose-response, power.

Everything here is pure pandas / numpy / scipy / statsmodels and returns DataFrames; nothing writes files
(``benchmark.report`` does). The methods, the columns of every table and the references are documented in
``docs/statistics.md``. Entry point: :func:`analyse`.

Vocabulary
    cell      (dataset, image_size, rare_class, rare_count, backbone): the setting a comparison is made in.
    variant   (generator, synthetic_ratio): one method at one ratio; label ``dcgan@2`` (``none`` when ratio is 0).
    unit      (seed, fold): the replicate that pairs a variant with its baseline inside a cell.
    block     a cell, when methods are ranked across cells (Friedman / Nemenyi).
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

METRICS = ("accuracy", "balanced_accuracy", "auroc", "auprc", "macro_f1", "rare_sensitivity", "rare_specificity",
           "rare_precision", "rare_auprc", "ece")
SPLITS = ("val", "test")
KNOWN_METRIC_COLUMNS = tuple(f"{s}_{m}" for s in SPLITS for m in METRICS)
DEFAULT_METRICS = ("test_auroc", "test_balanced_accuracy", "test_rare_sensitivity")
LOWER_IS_BETTER = frozenset({"ece", "loss", "nll", "brier", "error", "wall_s", "compute_hours"})

CELL = ("dataset", "image_size", "rare_class", "rare_count", "backbone")
VARIANT = ("generator", "synthetic_ratio")
UNIT = ("seed", "fold")
REQUIRED_COLUMNS = ("dataset", "rare_count", "generator", "synthetic_ratio", "backbone", "seed")
OPTIONAL_DEFAULTS = {"image_size": "-", "rare_class": "-", "fold": 0}
BOOKKEEPING = frozenset({"key", "name", "grid", "wall_s", "compute_hours", "n_train_real", "n_train_synthetic",
                         "fold", "seed", "image_size", "synthetic_ratio", "rare_count"})

CORRECTIONS = ("holm", "fdr_bh")
ZERO_METHODS = ("zsplit", "pratt", "wilcox")
FAMILIES = ("metric", "cell", "all")
TESTS = ("t", "wilcoxon")
EXACT_WILCOXON_MAX_N = 50
N_BOOT = 2000
POWER = 0.8
MIN_CLUSTERS = 10  # cluster-robust OLS standard errors (dose-response fallback) need enough clusters

PAIRED_COLUMNS = (
    "metric", "higher_is_better", *CELL, "generator", "synthetic_ratio", "variant", "baseline", "baseline_ratio",
    "n_pairs", "n_nan_excluded", "n_only_method", "n_only_baseline", "mean_method", "mean_baseline", "mean_diff",
    "sd_diff", "ci_t_low", "ci_t_high", "ci_boot_low", "ci_boot_high", "t_stat", "p_t", "wilcoxon_stat",
    "wilcoxon_n_nonzero", "p_wilcoxon", "wilcoxon_method", "cohens_dz", "wins", "ties", "losses", "family",
    "family_size", "p_t_adj", "p_wilcoxon_adj", "test", "p_adj", "significant", "verdict", "mde_dz", "mde",
    "min_p_wilcoxon", "wilcoxon_can_reach_alpha", "note",
)


# ----------------------------------------------------------------------------------------------------------------
# Names, directions, labels
# ----------------------------------------------------------------------------------------------------------------

def higher_is_better(metric: str) -> bool:
    """False for metrics where lower is better (``ece``, losses, errors, time); True otherwise."""
    base = metric.split("_", 1)[1] if metric.startswith(tuple(f"{s}_" for s in SPLITS)) else metric
    return not (base in LOWER_IS_BETTER or base.endswith(("_loss", "_error", "_ece")))


def variant_label(generator, ratio) -> str:
    """``dcgan@2`` for a method at ratio 2; just the method name when the ratio is 0."""
    ratio = float(ratio)
    return str(generator) if ratio == 0 else f"{generator}@{ratio:g}"


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


def prepare_records(records: pd.DataFrame, metrics, baseline: str, source: str = "the records table"):
    """Validate and normalise a records table; returns (clean DataFrame, resolved metrics, duplicates DataFrame).

    Identifier columns become strings (``rare_count`` 20 → "20", "all" stays), ``synthetic_ratio`` a float (empty →
    0), ``seed`` an int where numeric, ``fold`` an int (absent → 0), metrics floats (non-numeric → NaN).
    Rows repeating a (cell, variant, seed, fold) are dropped after the first and returned as ``duplicates``.
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
    ratio = pd.to_numeric(df["synthetic_ratio"], errors="coerce")
    bad = df["synthetic_ratio"].notna() & ratio.isna()
    if bad.any():
        got = sorted(map(str, df.loc[bad, "synthetic_ratio"].unique()))[:5]
        problems.append(f"synthetic_ratio must be a number; got {got}")
    fold = pd.to_numeric(df["fold"].fillna(0), errors="coerce")
    if fold.isna().any() or (fold != np.round(fold)).any():
        problems.append("fold must be an integer in every row")
    if problems:
        raise UserError(f"{source} has invalid values: " + "; ".join(problems) + ". Fix or remove those rows.")
    for col in ("dataset", "image_size", "rare_class", "rare_count", "generator", "backbone"):
        df[col] = _as_id_string(df[col])
    df["synthetic_ratio"] = ratio.fillna(0.0).astype(float)
    df["fold"] = fold.astype("int64")
    seed_num = pd.to_numeric(df["seed"], errors="coerce")
    if seed_num.notna().all() and (seed_num == np.round(seed_num)).all():
        df["seed"] = seed_num.astype("int64")
    else:
        df["seed"] = df["seed"].astype(str).astype(object)
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
    ``all`` last."""
    if df.empty:
        return df.reset_index(drop=True)
    order = _ordered(df, baseline) if "generator" in df.columns else {"generator": {}}
    keys = [c for c in ("metric", *CELL, "generator", "synthetic_ratio", "baseline_ratio", *extra) if c in df.columns]

    def key(col):
        if col.name == "generator":
            return col.map(lambda g: order["generator"].get(g, len(order["generator"])))
        if col.name in ("dataset", "backbone", "rare_class"):      # names: the order they first appear in
            return pd.Series(pd.factorize(col)[0], index=col.index)
        if col.name in ("synthetic_ratio", "baseline_ratio") or pd.api.types.is_numeric_dtype(col):
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
    bratios = bv.groupby(ids, sort=False)["synthetic_ratio"].agg(lambda r: ", ".join(f"{x:g}" for x in sorted(r)))
    bratios = bratios.rename("baseline_ratios").reset_index()

    no_base = ov[ov["_nb"].isna()].assign(reason=f"no {baseline!r} run in this cell")
    has = ov[ov["_nb"].notna()]
    cross = has[(has["_nb"] == 1) | (has["_nm"] == 1)].merge(
        bv.rename(columns={"synthetic_ratio": "baseline_ratio"}), on=ids)
    same = has[(has["_nb"] > 1) & (has["_nm"] > 1)].merge(
        bv.assign(baseline_ratio=bv["synthetic_ratio"]), on=ids + ["synthetic_ratio"], how="left")
    no_ratio = same[same["baseline_ratio"].isna()].merge(bratios, on=ids, how="left")
    no_ratio = no_ratio.assign(reason=lambda t: [f"{baseline!r} has no run at ratio {r:g} in this cell (it has "
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


def bootstrap_resample_weights(n: int, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """(n_boot × n) resampling counts for n pairs: ``default_rng([seed, n]).integers(0, n, (n_boot, n))``."""
    idx = np.random.default_rng([seed, n]).integers(0, n, size=(n_boot, n))
    w = np.zeros((n_boot, n))
    np.add.at(w, (np.arange(n_boot)[:, None], idx), 1.0)
    return w


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
    b_lo = np.full(n_groups, np.nan)
    b_hi = np.full(n_groups, np.nan)
    for k in np.unique(n[n >= 2]).astype(int):
        sel = np.flatnonzero(n == k)
        w = bootstrap_resample_weights(k, n_boot, seed).T / k            # (k × B)
        for chunk in np.array_split(sel, max(1, len(sel) // 2000 + 1)):
            if chunk.size == 0:
                continue
            mat = d[starts[chunk][:, None] + np.arange(k)]              # (c × k)
            q = np.quantile(mat @ w, [alpha / 2, 1 - alpha / 2], axis=1)
            b_lo[chunk], b_hi[chunk] = q[0], q[1]

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
        "wilcoxon_can_reach_alpha": w_min <= alpha,
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
    tests["test"] = "paired t" if test == "t" else "wilcoxon"
    tests["p_adj"] = tests["p_t_adj"] if test == "t" else tests["p_wilcoxon_adj"]
    tests["significant"] = tests["p_adj"] < alpha
    signed = np.where(tests["higher_is_better"], tests["mean_diff"], -tests["mean_diff"])
    tests["verdict"] = np.where(~tests["significant"], "n.s.", np.where(signed > 0, "better", "worse"))
    notes = []
    for n, m_, reach, nn, cnt_nan in zip(tests["n_pairs"], tests["wilcoxon_n_nonzero"],
                                         tests["wilcoxon_can_reach_alpha"], tests["n_only_method"] +
                                         tests["n_only_baseline"], tests["n_nan_excluded"]):
        note = []
        if n < 2:
            note.append(f"only {n} pair(s): no test")
        elif not reach:
            note.append(f"Wilcoxon cannot reach p<{alpha:g} with {m_} non-zero pairs")
        if nn:
            note.append(f"{nn} unpaired seed(s) ignored")
        if cnt_nan:
            note.append(f"{cnt_nan} NaN pair(s) excluded")
        notes.append("; ".join(note))
    tests["note"] = notes
    return tests[list(PAIRED_COLUMNS)], pairing


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
    """Rank variants across blocks (cells) on the seed-mean of ``metric``; Friedman, Iman–Davenport, Nemenyi, Holm.

    The control for Holm is the baseline variant (the best-ranked one when the baseline has several ratios).
    Returns {"summary": dict, "ranks": DataFrame, "cliques": list, "dropped_variants", "dropped_blocks"}.
    """
    hib = higher_is_better(metric)
    means = df.groupby(list(CELL) + list(VARIANT), sort=False)[metric].mean().reset_index()
    means["variant"] = [variant_label(g, r) for g, r in zip(means["generator"], means["synthetic_ratio"])]
    means["block"] = means.groupby(list(CELL), sort=False).ngroup()
    order = sort_frame(means.drop_duplicates("variant")[["generator", "synthetic_ratio", "variant"]], baseline)
    mat = means.pivot(index="block", columns="variant", values=metric)
    mat = mat[[v for v in order["variant"] if v in mat.columns]]
    full, dcols, drows = complete_blocks(mat)
    summary = {"metric": metric, "higher_is_better": hib, "n_blocks_total": mat.shape[0],
               "n_variants_total": mat.shape[1], "dropped_variants": ", ".join(map(str, dcols)),
               "n_dropped_blocks": len(drows)}
    result = {"summary": summary, "ranks": pd.DataFrame(), "cliques": [], "dropped_variants": dcols,
              "dropped_blocks": drows}
    if full.shape[0] < 2 or full.shape[1] < 2:
        summary.update(note="fewer than 2 complete blocks or 2 variants: no rank test")
        return result
    fr = friedman(full.to_numpy(), hib, alpha)
    avg = pd.Series(fr.pop("avg_ranks"), index=full.columns)
    bvars = [v for v in full.columns if order.set_index("variant").loc[v, "generator"] == baseline]
    control = min(bvars, key=lambda v: avg[v]) if bvars else avg.idxmin()
    holm = holm_vs_control(avg, control, fr["n_blocks"], alpha).set_index("variant")
    ranks = pd.DataFrame({"metric": metric, "variant": avg.index, "avg_rank": avg.to_numpy(),
                          "mean_value": full.mean(axis=0).to_numpy()})
    ranks["is_control"] = ranks["variant"] == control
    for col in ("z_vs_control", "p_vs_control", "p_holm", "significant_vs_control"):
        ranks[col] = ranks["variant"].map(holm[col])
    ranks["nemenyi_diff_vs_control"] = (ranks["avg_rank"] - avg[control]).abs() >= fr["cd"]
    ranks = ranks.sort_values("avg_rank", kind="stable").reset_index(drop=True)
    summary.update({k: v for k, v in fr.items()}, control=control, alpha=alpha, note="")
    result.update(ranks=ranks, cliques=nemenyi_cliques(avg, fr["cd"]), avg_ranks=avg)
    return result


# ----------------------------------------------------------------------------------------------------------------
# Dose-response
# ----------------------------------------------------------------------------------------------------------------

def dose_response_data(df: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, str]:
    """Rows of methods with ≥ 2 distinct ratios, centred by cell and averaged per (dataset, unit, method, ratio).

    Centring removes fixed cell effects (rare count, backbone, image size); averaging over cells leaves one value
    per seed, which keeps the mixed model small. x = log2(ratio) when every ratio is positive, else the ratio.
    """
    nrat = df.groupby("generator")["synthetic_ratio"].nunique()
    d = df[df["generator"].isin(nrat.index[nrat >= 2]) & df[metric].notna()]
    if d.empty:
        return pd.DataFrame(columns=["dataset", "unit", "generator", "synthetic_ratio", "y", "x",
                                     "seed_in_dataset"]), "none"
    d = d.assign(unit=[unit_label(s, f) for s, f in zip(d["seed"], d["fold"])])
    d = d.assign(y=d[metric] - d.groupby(list(CELL))[metric].transform("mean"))
    agg = d.groupby(["dataset", "unit", "generator", "synthetic_ratio"], sort=False)["y"].mean().reset_index()
    scale = "log2" if (agg["synthetic_ratio"] > 0).all() else "linear"
    agg["x"] = np.log2(agg["synthetic_ratio"]) if scale == "log2" else agg["synthetic_ratio"]
    agg["seed_in_dataset"] = agg["dataset"].astype(str) + "|" + agg["unit"].astype(str)
    return agg, scale


def dose_response(df: pd.DataFrame, metric: str, alpha: float = 0.05) -> dict:
    """Slope of ``metric`` on the synthetic ratio for each method (per doubling on the log2 scale).

    Model (statsmodels MixedLM, REML) on the cell-centred seed means of :func:`dose_response_data`:
    y ~ 0 + C(method) + C(method):x with a random intercept for each seed within each dataset (groups =
    dataset × seed; the dataset's own intercept is already removed by the centring). If it raises or does not
    converge: OLS with cluster-robust (dataset × seed) standard errors (ordinary ones with fewer than
    ``MIN_CLUSTERS`` clusters), and a warning. Returns {"coef": DataFrame, "model", "warning", "scale"}.
    """
    import statsmodels.formula.api as smf

    data, scale = dose_response_data(df, metric)
    cols = ["metric", "generator", "slope", "se", "ci_low", "ci_high", "p", "p_holm", "n_obs", "n_ratios",
            "model", "scale"]
    if data.empty or data["generator"].nunique() < 1 or data["x"].nunique() < 2:
        return {"coef": pd.DataFrame(columns=cols), "model": "none", "scale": scale,
                "warning": "no method with at least two synthetic ratios: no dose-response model", "data": data}
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
        rows.append({"metric": metric, "generator": g, "slope": params[name], "se": bse[name],
                     "ci_low": params[name] - z * bse[name], "ci_high": params[name] + z * bse[name],
                     "p": pvals[name], "n_obs": len(sub), "n_ratios": sub["synthetic_ratio"].nunique(),
                     "model": model, "scale": scale})
    coef = pd.DataFrame(rows, columns=[c for c in cols if c != "p_holm"])
    coef.insert(7, "p_holm", correct_pvalues(coef["p"], "holm", alpha))
    return {"coef": coef[cols], "model": model, "scale": scale, "warning": warning, "data": data}


def dose_curves(df: pd.DataFrame, metric: str, alpha: float = 0.05) -> pd.DataFrame:
    """Plot data: per (dataset, method, ratio) the mean of ``metric`` over seed-level means, with a t-based CI.

    Seed-level means average over the dataset's cells (rare counts, backbones); the CI is across seeds.
    """
    d = df[df[metric].notna()].assign(unit=lambda t: [unit_label(s, f) for s, f in zip(t["seed"], t["fold"])])
    per = d.groupby(["dataset", "generator", "synthetic_ratio", "unit"], sort=False)[metric].mean()
    g = per.groupby(level=[0, 1, 2], sort=False)
    out = pd.DataFrame({"mean": g.mean(), "sd": g.std(), "n": g.size()}).reset_index()
    out["ci_low"], out["ci_high"] = t_ci(out["mean"], out["sd"], out["n"], 1 - alpha)
    out.insert(0, "metric", metric)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Leaderboard and audit table
# ----------------------------------------------------------------------------------------------------------------

def leaderboard(df: pd.DataFrame, metrics, tests: pd.DataFrame, baseline: str, alpha: float = 0.05) -> pd.DataFrame:
    """One row per (cell, variant): runs, compute hours and, per metric, n, mean, std, 95 % CI, rank in the cell,
    adjusted p and verdict vs the baseline (``baseline`` on the baseline's rows; with several baseline ratios the
    largest adjusted p is shown and a verdict needs every comparison to agree)."""
    keys = list(CELL) + list(VARIANT)
    g = df.groupby(keys, sort=False)
    out = g.agg(n_runs=("seed", "size"), compute_hours=("compute_hours", lambda s: s.sum(min_count=1)))
    out = out.reset_index()
    out.insert(len(keys), "variant", [variant_label(a, b) for a, b in zip(out["generator"], out["synthetic_ratio"])])
    for m in metrics:
        hib = higher_is_better(m)
        stat = g[m].agg(["count", "mean", "std"]).reset_index(drop=True)
        out[f"{m}_n"] = stat["count"].to_numpy()
        out[f"{m}_mean"] = stat["mean"].to_numpy()
        out[f"{m}_std"] = stat["std"].to_numpy()
        lo, hi = t_ci(stat["mean"], stat["std"], stat["count"], 1 - alpha)
        out[f"{m}_ci_low"], out[f"{m}_ci_high"] = lo, hi
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


def analyse(records: pd.DataFrame, metrics=DEFAULT_METRICS, baseline: str = "none", correction: str = "holm",
            alpha: float = 0.05, family: str = "metric", zero_method: str = "zsplit", test: str = "t",
            n_boot: int = N_BOOT, seed: int = 0, source: str = "the records table") -> Analysis:
    """Validate the records and compute every statistic: paired tests, leaderboard, ranks, dose-response, audit."""
    df, metrics, duplicates = prepare_records(records, metrics, baseline, source)
    nan_rows = nan_metric_rows(df, metrics)
    tests, pairing = paired_tests(df, metrics, baseline, None, correction, alpha, family, zero_method, test,
                                  n_boot, seed)
    mismatch = pairing.seed_mismatch.drop(columns="comp_id") if len(pairing.seed_mismatch) else \
        pairing.seed_mismatch
    board = leaderboard(df, metrics, tests, baseline, alpha)
    fr_rows, rank_frames, rank_results, dose_frames, curve_frames, notes = [], [], {}, [], [], []
    for m in metrics:
        rr = rank_analysis(df, m, baseline, alpha)
        rank_results[m] = rr
        fr_rows.append(rr["summary"])
        rank_frames.append(rr["ranks"])
        dr = dose_response(df, m, alpha)
        dose_frames.append(dr["coef"])
        if dr["warning"]:
            notes.append(dr["warning"])
        curve_frames.append(dose_curves(df, m, alpha))
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
        notes.append(f"the Wilcoxon test cannot reach p<{alpha:g} in {len(unreachable)} comparison(s) of "
                     f"{metrics[0]} (non-zero pairs: {', '.join(map(str, ns))}; a two-sided exact test needs at "
                     f"least 6): add seeds")
    few = first[first["n_pairs"] < 2]
    if len(few):
        notes.append(f"{len(few)} comparison(s) of {metrics[0]} have fewer than 2 pairs: no test")
    options = {"correction": correction, "alpha": alpha, "family": family, "zero_method": zero_method,
               "test": test, "n_boot": n_boot, "bootstrap_seed": seed, "power": POWER}
    notes = list(dict.fromkeys(notes))
    return Analysis(df, metrics, baseline, options, tests, pairing.missing_baseline, mismatch, nan_rows, duplicates,
                    board, fr, ranks, rank_results, dose, pd.concat(curve_frames, ignore_index=True),
                    audit_table(df, baseline), notes)
