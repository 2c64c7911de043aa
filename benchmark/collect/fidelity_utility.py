"""Does fidelity predict utility? Rank correlations between each audit metric of a generator's bank and the paired
utility gain of the same bank over duplication, across cells and seeds, with a bootstrap interval over banks
(stats/fidelity_utility.csv and the report's section of that name; :func:`fidelity_utility`).

Pairs. Every classifier job that mixes a bank in (a record with audit columns, other than ``duplication``) is paired
with the ``duplication`` job (``oversample``: the same real rare images repeated) of the same cell (dataset, image
size, rare class, rare count, backbone, budget), the same ratio label (which carries a mixing
strategy: `1+pretrain_finetune`) and the same unit (seed, fold). Its gain on a metric is the bank's score minus
duplication's, signed so that a positive gain is always better (negated for lower-is-better metrics such as ECE).

Banks. A bank is one generator fit: (dataset, image size, rare class, rare count, generator, seed, fold); an external
bank, identical at every seed, is one bank per audit (``audit_audit_key``). Each bank is one point: its audit value
and the mean gain of its pairs in the scope — ``all ratios`` (every ratio and backbone it was used at) or one ratio
label (``synthetic_ratio``), when the records hold more than one. Cells of different training budgets are never
pooled: with several budgets each scope is per budget (``all ratios, epochs=3``).

Statistic. Spearman's rank correlation ρ over the banks (average ranks for ties: Pearson's r of the ranks, =
``scipy.stats.spearmanr``), its two-sided p from spearmanr (t approximation; the banks of one cell share its real
images, so it is optimistic), and a 95 % interval from ``scipy.stats.bootstrap`` resampling banks (BCa; percentile
when BCa is undefined), ``n_boot`` resamples. Fewer than ``MIN_BANKS_CI`` (6) banks: ρ without an interval and the
note says there are too few to tell; fewer than 3, or an audit value constant across the banks: no ρ at all.

Reading (``reading``): "too few banks to tell" below 6 banks, "not computable" when ρ is undefined (the note says
why); otherwise, with an interval that excludes 0, "better fidelity, larger gain" when the sign of ρ agrees
with the audit metric's fidelity direction (lower KID / FID / copy rate, higher precision / recall / coverage /
C_T are better), "better fidelity, smaller gain" when it does not; "no clear relation" when the interval holds 0.
Banks from several datasets are pooled: a correlation can come from differences between datasets (one dataset's
banks both worse and less useful), so ``n_datasets`` is given and the per-dataset view is the audit table.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

MIN_BANKS_CI = 6    # fewer banks: no interval, "too few banks to tell"
MIN_BANKS_RHO = 3   # fewer banks: no correlation at all
ALL_RATIOS = "all ratios"
# (audit column, label, fidelity direction: +1 = higher is better fidelity / less copying, -1 = lower is better)
AUDIT_METRICS = (
    ("audit_domain_kid", "KID (in-domain)", -1),
    ("audit_domain_fid", "FID (in-domain)", -1),
    ("audit_domain_precision", "precision (in-domain)", 1),
    ("audit_domain_recall", "recall (in-domain)", 1),
    ("audit_domain_coverage", "coverage (in-domain)", 1),
    ("audit_copy_rate", "copy rate", -1),
    ("audit_ct", "C_T (data copying)", 1),
)
COLUMNS = ("metric", "audit_metric", "audit_label", "fidelity_direction", "scope", "n_banks", "n_pairs", "n_cells",
           "n_datasets", "generators", "rho", "ci_low", "ci_high", "ci_method", "p_spearman", "reading", "note")


def _bank_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in ("dataset", "image_size", "rare_class", "rare_count", "generator", "seed", "fold")
            if c in df.columns]


def paired_gains(df: pd.DataFrame, metrics, duplication: str = "oversample") -> pd.DataFrame:
    """One row per bank job paired with its duplication twin: the bank's identity (``bank``), its audit columns,
    ``gain_<metric>`` (positive = better than duplication) and the cell and ratio columns. Empty when none pair."""
    from benchmark.stats.vocabulary import CELL, UNIT, VARIANT, higher_is_better

    audit_cols = [c for c, _, _ in AUDIT_METRICS if c in df.columns]
    if not audit_cols or "generator" not in df.columns:
        return pd.DataFrame()
    has_audit = df[audit_cols].apply(pd.to_numeric, errors="coerce").notna().any(axis=1)
    banks = df[has_audit & (df["generator"] != duplication)]
    twins = df[df["generator"] == duplication]
    keys = [c for c in (*CELL, *VARIANT, *UNIT) if c != "generator" and c in df.columns]
    if banks.empty or twins.empty:
        return pd.DataFrame()
    merged = banks.merge(twins[keys + list(metrics)], on=keys, how="inner", suffixes=("", "__dup"))
    if merged.empty:
        return pd.DataFrame()
    for m in metrics:
        diff = pd.to_numeric(merged[m], errors="coerce") - pd.to_numeric(merged[f"{m}__dup"], errors="coerce")
        merged[f"gain_{m}"] = diff if higher_is_better(m) else -diff
    ident = merged[_bank_columns(merged)].astype(str).agg(" · ".join, axis=1)
    if "audit_audit_key" in merged.columns:  # an external bank: one audit, the same bank at every seed
        key = merged["audit_audit_key"]
        ident = ident.where(key.isna(), merged["generator"].astype(str) + " · audit " + key.astype(str))
    merged["bank"] = ident
    return merged.drop(columns=[f"{m}__dup" for m in metrics])


def spearman(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Spearman's ρ along ``axis`` (vectorised over the others): Pearson's r of average ranks; NaN where x or y
    is constant."""
    from scipy.stats import rankdata

    rx, ry = rankdata(x, axis=axis), rankdata(y, axis=axis)
    rx = rx - rx.mean(axis=axis, keepdims=True)
    ry = ry - ry.mean(axis=axis, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rx * ry).sum(axis=axis) / np.sqrt((rx ** 2).sum(axis=axis) * (ry ** 2).sum(axis=axis))


def spearman_interval(x, y, n_resamples: int = 2000, seed: int = 0, confidence: float = 0.95):
    """(low, high, method) of ρ(x, y) by scipy.stats.bootstrap over the (x, y) points: BCa, else percentile."""
    from scipy.stats import bootstrap

    x, y = np.asarray(x, float), np.asarray(y, float)
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():  # degenerate resamples (a constant x) give NaN: handled below
            warnings.simplefilter("ignore")
            res = bootstrap((x, y), spearman, paired=True, vectorized=True, n_resamples=n_resamples,
                            confidence_level=confidence, method=method, random_state=np.random.default_rng(seed))
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if np.isfinite(low) and np.isfinite(high):
            return max(low, -1.0), min(high, 1.0), method
    return float("nan"), float("nan"), ""


def _reading(rho, low, high, direction, n) -> str:
    if n < MIN_BANKS_CI or not np.isfinite(rho):
        return "too few banks to tell" if n < MIN_BANKS_CI else "not computable"
    if not (np.isfinite(low) and np.isfinite(high)) or low <= 0 <= high:
        return "no clear relation"
    return "better fidelity, larger gain" if np.sign(rho) == direction else "better fidelity, smaller gain"


def _row(points: pd.DataFrame, gain: str, column: str, n_boot: int, seed: int) -> dict:
    """ρ, interval, p and note of one (metric, audit metric, scope) over its banks (one point per bank)."""
    from scipy.stats import spearmanr

    per_bank = points.groupby("bank", sort=True).agg(x=(column, "mean"), y=(gain, "mean")).dropna()
    n = len(per_bank)
    row = {"n_banks": n, "rho": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "ci_method": "",
           "p_spearman": float("nan")}
    if n < MIN_BANKS_RHO:
        row["note"] = f"{n} bank(s): too few banks to tell (a correlation needs ≥ {MIN_BANKS_RHO})"
        return row
    if per_bank["x"].nunique() < 2 or per_bank["y"].nunique() < 2:
        which = "audit value" if per_bank["x"].nunique() < 2 else "gain"
        row["note"] = f"the {which} is the same for all {n} banks: no rank correlation"
        return row
    rho, p = spearmanr(per_bank["x"], per_bank["y"])
    row.update(rho=float(rho), p_spearman=float(p))
    if n < MIN_BANKS_CI:
        row["note"] = (f"{n} banks: too few banks to tell (an interval needs ≥ {MIN_BANKS_CI}); ρ is shown "
                       f"for the record only")
        return row
    low, high, method = spearman_interval(per_bank["x"].to_numpy(), per_bank["y"].to_numpy(), n_boot, seed)
    row.update(ci_low=low, ci_high=high, ci_method=method,
               note="" if method else "the bootstrap interval is undefined (degenerate resamples)")
    return row


def fidelity_utility(df: pd.DataFrame, metrics, duplication: str = "oversample", n_boot: int = 2000,
                     seed: int = 0) -> pd.DataFrame:
    """The fidelity-utility table (columns :data:`COLUMNS`): one row per metric × audit metric present × scope."""
    from benchmark.stats.vocabulary import CELL, several_budgets

    pairs = paired_gains(df, metrics, duplication)
    if pairs.empty:
        return pd.DataFrame(columns=list(COLUMNS))
    scopes = []
    # cells of different training budgets are never pooled (a bank's gain differs with the budget): a scope each
    for suffix, sub in ([(f", {b}", part) for b, part in pairs.groupby("budget", sort=False)]
                        if several_budgets(pairs) else [("", pairs)]):
        ratios = sorted(sub["synthetic_ratio"].astype(str).unique()) if "synthetic_ratio" in sub.columns else []
        scopes += [(ALL_RATIOS + suffix, sub)] + ([(f"ratio {r}{suffix}", sub[sub["synthetic_ratio"].astype(str) == r])
                                                   for r in ratios] if len(ratios) > 1 else [])
    cell_cols = [c for c in CELL if c in pairs.columns]
    rows = []
    for m in metrics:
        for column, label, direction in AUDIT_METRICS:
            if column not in pairs.columns:
                continue
            values = pd.to_numeric(pairs[column], errors="coerce")
            if values.isna().all():
                continue
            for scope, part in scopes:
                part = part.assign(**{column: pd.to_numeric(part[column], errors="coerce")})
                part = part[part[column].notna() & part[f"gain_{m}"].notna()]
                row = {"metric": m, "audit_metric": column, "audit_label": label, "fidelity_direction": direction,
                       "scope": scope, "n_pairs": len(part),
                       "n_cells": part.groupby(cell_cols, dropna=False).ngroups if len(part) else 0,
                       "n_datasets": part["dataset"].nunique() if "dataset" in part.columns else 0,
                       "generators": ", ".join(sorted(part["generator"].astype(str).unique())),
                       **_row(part, f"gain_{m}", column, n_boot, seed)}
                row["reading"] = _reading(row["rho"], row["ci_low"], row["ci_high"], direction, row["n_banks"])
                rows.append(row)
    return pd.DataFrame(rows, columns=list(COLUMNS))
