"""Dose-response on the effective ratio: the slope per doubling for each method (per-seed OLS slopes, t-tested over
seeds; contrasts with duplication) and the per-dataset curves the plots draw (:func:`dose_response`,
:func:`dose_curves`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

from benchmark.stats.inference import N_BOOT, correct_pvalues, mean_intervals
from benchmark.stats.vocabulary import CELL, MIXING_SEPARATOR, UNPOOLED, ratio_sort_key, unit_label, variant_label

MIN_CLUSTERS = 10  # kept for importers; the per-seed slope test needs no cluster-robust fallback


def method_per_mixing(df: pd.DataFrame) -> pd.DataFrame:
    """Each mixing of a method is its own dose curve: a record of ``dcgan`` at ratio label
    ``balance+pretrain_finetune`` becomes method ``dcgan+pretrain_finetune`` at ``balance``; ``concat`` records
    (labels without the mixing) keep their names. Without this, another mixing would enter a method's curve as one
    more ratio level at the same effective ratio."""
    labels = df["synthetic_ratio"].astype(str)
    if not labels.str.contains(MIXING_SEPARATOR, regex=False).any():
        return df
    parts = labels.str.split(MIXING_SEPARATOR, n=1, expand=True)
    mixing = parts[1].fillna("")
    method = np.where(mixing != "", df["generator"].astype(str) + MIXING_SEPARATOR + mixing, df["generator"])
    return df.assign(generator=method, synthetic_ratio=parts[0])


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
    df = method_per_mixing(df)
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


DOSE_COLUMNS = ("metric", *UNPOOLED, "generator", "slope", "se", "ci_low", "ci_high", "p", "p_holm", "n_obs",
                "n_ratios",
                "ratios", "model", "scale", "kind", "n_units", "df", "contrast_high_low", "vs_duplication_diff",
                "vs_duplication_ci_low", "vs_duplication_ci_high", "vs_duplication_p")
DOSE_MODEL = "per-seed OLS slopes, one-sample t"


def seed_slopes(data: pd.DataFrame) -> pd.DataFrame:
    """One OLS slope of y on x per (seed unit, method) from :func:`dose_response_data`'s points (a unit is a seed
    of a dataset: ``seed_in_dataset``), with the unit's high-minus-low contrast (y at its largest x minus y at its
    smallest). Units with fewer than two distinct x are left out."""
    rows = []
    for (unit, g), sub in data.groupby(["seed_in_dataset", "generator"], sort=False):
        x, y = sub["x"].to_numpy(float), sub["y"].to_numpy(float)
        if np.unique(x).size < 2:
            continue
        xc = x - x.mean()
        rows.append({"seed_in_dataset": unit, "generator": g, "slope": float(xc @ (y - y.mean()) / (xc @ xc)),
                     "contrast": float(y[np.argmax(x)] - y[np.argmin(x)])})
    return pd.DataFrame(rows, columns=["seed_in_dataset", "generator", "slope", "contrast"])


def _t_summary(v: np.ndarray, alpha: float) -> tuple[float, float, float, float, float]:
    """(mean, se, ci_low, ci_high, p) of a one-sample t test of ``v`` against 0 on n − 1 df (NaN below 2 values)."""
    v = v[np.isfinite(v)]
    if v.size < 2:
        return (float(v.mean()) if v.size else np.nan), np.nan, np.nan, np.nan, np.nan
    res = sps.ttest_1samp(v, 0.0)
    ci = res.confidence_interval(1 - alpha)
    se = float(v.std(ddof=1) / np.sqrt(v.size))
    p = float(res.pvalue) if se > 0 else (1.0 if v.mean() == 0 else 0.0)
    return float(v.mean()), se, float(ci.low), float(ci.high), p


def dose_response(df: pd.DataFrame, metric: str, alpha: float = 0.05, duplication: str = "oversample") -> dict:
    """:func:`dose_response_in` separately for the records of each budget (cells of different training budgets are
    never pooled: ``UNPOOLED``), one ``coef`` row per (budget, method); ``p_holm``: Holm over all rows of the metric.
    Returns {"coef", "model", "warning", "scale", "data", "slopes"} (data and slopes carry the budget)."""
    col = UNPOOLED[0]
    budgets = list(dict.fromkeys(df[col])) if col in df.columns else ["-"]
    parts = [(b, dose_response_in(df[df[col] == b] if col in df.columns else df, metric, alpha, duplication))
             for b in budgets]
    frames = [r["coef"].assign(**{col: b}) for b, r in parts if len(r["coef"])]
    coef = (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()).reindex(columns=list(DOSE_COLUMNS))
    if len(coef):
        coef["p_holm"] = correct_pvalues(coef["p"], "holm", alpha)
    warnings = [r["warning"] + (f" ({col} {b})" if len(budgets) > 1 else "") for b, r in parts if r["warning"]]
    return {"coef": coef, "model": DOSE_MODEL, "scale": parts[0][1]["scale"], "warning": "; ".join(warnings),
            "data": pd.concat([r["data"].assign(**{col: b}) for b, r in parts], ignore_index=True),
            "slopes": pd.concat([r["slopes"].assign(**{col: b}) for b, r in parts], ignore_index=True)}


def dose_response_in(df: pd.DataFrame, metric: str, alpha: float = 0.05, duplication: str = "oversample") -> dict:
    """Slope of ``metric`` per doubling of the effective ratio, for each method with at least two ratio forms, in
    records of one budget.

    For every seed unit (a seed of a dataset) and method, the OLS slope of the within-cell-centred metric on the
    centred log2 effective ratio (:func:`dose_response_data`); the method's slope is the mean of those per-seed
    slopes, tested with a one-sample t test on n − 1 df (n = seed units): the seed is the replicate, so the
    residual variance is neither pooled across methods nor treated as known. ``kind`` is ``slope`` with three or
    more ratio forms and ``two_point_contrast`` with two (then the "slope" is the difference of the two forms per
    doubling, and ``contrast_high_low`` the plain difference). ``vs_duplication_*``: the per-seed slope minus
    ``duplication``'s (``oversample``) on the same seed unit, t-tested, where that method has a dose curve.
    ``p_holm``: Holm over the methods of the metric. Returns {"coef", "model", "warning", "scale", "data",
    "slopes"}.
    """
    data, scale = dose_response_data(df, metric)
    slopes = seed_slopes(data) if len(data) else seed_slopes(pd.DataFrame(columns=["seed_in_dataset", "generator",
                                                                                     "x", "y"]))
    if slopes.empty:
        return {"coef": pd.DataFrame(columns=list(DOSE_COLUMNS)), "model": "none", "scale": scale, "warning": "",
                "data": data, "slopes": slopes}
    wide = slopes.pivot(index="seed_in_dataset", columns="generator", values="slope")
    rows, few = [], []
    for g in dict.fromkeys(data["generator"]):
        per = slopes[slopes["generator"] == g]
        if per.empty:
            continue
        sub = data[data["generator"] == g]
        labels = sorted(sub["synthetic_ratio"].unique(), key=ratio_sort_key)
        mean, se, lo, hi, p = _t_summary(per["slope"].to_numpy(float), alpha)
        row = {"metric": metric, "generator": g, "slope": mean, "se": se, "ci_low": lo, "ci_high": hi, "p": p,
               "n_obs": len(sub), "n_ratios": len(labels), "ratios": ", ".join(labels), "model": DOSE_MODEL,
               "scale": scale, "kind": "slope" if len(labels) >= 3 else "two_point_contrast", "n_units": len(per),
               "df": len(per) - 1, "contrast_high_low": float(per["contrast"].mean())}
        if g != duplication and duplication in wide.columns:
            diff = (wide[g] - wide[duplication]).to_numpy(float)
            d_mean, _, d_lo, d_hi, d_p = _t_summary(diff, alpha)
            row.update(vs_duplication_diff=d_mean, vs_duplication_ci_low=d_lo, vs_duplication_ci_high=d_hi,
                       vs_duplication_p=d_p)
        if len(per) < 2:
            few.append(g)
        rows.append(row)
    coef = pd.DataFrame(rows).reindex(columns=list(DOSE_COLUMNS))
    coef["p_holm"] = correct_pvalues(coef["p"], "holm", alpha)
    warning = (f"{metric}: dose-response of {', '.join(few)} rests on one seed unit: no test") if few else ""
    return {"coef": coef, "model": DOSE_MODEL, "scale": scale, "warning": warning, "data": data, "slopes": slopes}


def dose_curves(df: pd.DataFrame, metric: str, alpha: float = 0.05, n_boot: int = N_BOOT,
                seed: int = 0) -> pd.DataFrame:
    """Plot data: per (dataset, budget, variant) the mean of ``metric`` over seed-level means, with its interval
    (:func:`mean_intervals`), and the variant's effective ratio on the dataset (the geometric mean over its jobs
    when positive; 0 for variants that add nothing, which the plot draws as horizontal reference lines).

    Seed-level means average over the dataset's cells of one budget (rare counts, backbones); the interval is across
    seeds.
    """
    cols = ["metric", "dataset", *UNPOOLED, "generator", "synthetic_ratio", "variant", "effective_ratio", "mean", "sd",
            "n", "ci_low", "ci_high", "ci_method"]
    d = df[df[metric].notna()]
    if d.empty:
        return pd.DataFrame(columns=cols)
    d = d.assign(unit=[unit_label(s, f) for s, f in zip(d["seed"], d["fold"])],
                 _logeff=np.log2(d["effective_ratio"].where(d["effective_ratio"] > 0)))
    keys = ["dataset", *UNPOOLED, "generator", "synthetic_ratio"]
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
