"""Summary tables: the leaderboard (per cell and variant), the fraction of the real-data gain each method closes
(:func:`gap_closed`) and the audit table."""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmark.stats.inference import N_BOOT, mean_intervals
from benchmark.stats.prepare import sort_frame
from benchmark.stats.vocabulary import CELL, VARIANT, higher_is_better, variant_label

MIN_SEEDS_CI = 5  # leaderboard intervals over fewer seeds are marked unreliable ("n<5")
UPPER_BOUND = "real_extra"  # the real-data upper bound: its gain over the baseline is the gap others try to close
GAP_COLUMNS = ("metric", *CELL, "generator", "synthetic_ratio", "variant", "effective_ratio", "gain", "gain_ci_low",
               "gain_ci_high", "upper_variant", "upper_gain", "upper_verdict", "gap_closed", "note")


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
