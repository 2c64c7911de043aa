"""Across the sweep: does a method beat the baseline over all cells (of one budget)? :func:`hierarchical_tests` with
:func:`crossed_seed_model` (seeds crossed with cells, small-sample t intervals, dataset fixed while there are fewer
than five). It replaced a nested mixed model (random intercepts for dataset, cell and seed nested in cell, Wald z)
that treated seeds as nested and whose z interval was too narrow with two datasets."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as sps

from benchmark.stats.inference import clip_difference_interval, correct_pvalues
from benchmark.stats.paired import Pairing
from benchmark.stats.prepare import sort_frame
from benchmark.stats.vocabulary import UNPOOLED, higher_is_better, variant_label

HIERARCHICAL_COLUMNS = (
    "metric", "higher_is_better", *UNPOOLED, "generator", "synthetic_ratio", "variant", "baseline", "baseline_ratio",
    "n_obs",
    "n_datasets", "n_cells", "n_units", "levels", "estimate", "se", "ci_low", "ci_high", "p", "p_holm", "verdict",
    "var_dataset", "var_cell", "var_seed", "var_residual", "model", "converged", "assumes", "note", "df",
)

MIN_RANDOM_DATASETS = 5  # below this many datasets, dataset is a fixed effect (too few to estimate its variance)


def _t_on_means(m: np.ndarray, alpha: float) -> dict:
    """One-sample t-test of the mean of ``m``: estimate, se, t interval, p."""
    k = m.size
    mean, sd = float(m.mean()), float(m.std(ddof=1))
    se = sd / math.sqrt(k)
    t = sps.t.ppf(1 - alpha / 2, k - 1)
    p = 2 * sps.t.sf(abs(mean / se), k - 1) if se > 0 else (1.0 if mean == 0 else 0.0)
    return {"estimate": mean, "se": se, "ci_low": mean - t * se, "ci_high": mean + t * se, "p": float(p)}


def _two_way_components(d: pd.DataFrame) -> dict:
    """Descriptive variance components of the differences ``d`` (columns dataset, cell, unit, y) from the
    cell × seed two-way ANOVA within each dataset, pooled over datasets (complete seeds only): var_cell =
    (MS_cell − MS_res)/seeds, var_seed = (MS_seed − MS_res)/cells, var_residual = MS_res (cell × seed interaction
    and noise); with one cell per dataset only the seed-to-seed variance (var_residual) is defined."""
    ss = {"cell": 0.0, "seed": 0.0, "res": 0.0}
    dfs = {"cell": 0, "seed": 0, "res": 0}
    sizes = []
    for _, sub in d.groupby("dataset", sort=False):
        y = sub.pivot_table(index="cell", columns="unit", values="y", aggfunc="mean").dropna(axis=1).to_numpy()
        c, n = y.shape
        if n < 2:
            continue
        grand = y.mean()
        ss["cell"] += n * ((y.mean(axis=1) - grand) ** 2).sum()
        ss["seed"] += c * ((y.mean(axis=0) - grand) ** 2).sum()
        ss["res"] += ((y - y.mean(axis=1, keepdims=True) - y.mean(axis=0, keepdims=True) + grand) ** 2).sum()
        dfs["cell"], dfs["seed"], dfs["res"] = dfs["cell"] + c - 1, dfs["seed"] + n - 1, dfs["res"] + (c - 1) * (n - 1)
        sizes.append((c, n))
    out = {"var_cell": np.nan, "var_seed": np.nan, "var_residual": np.nan}
    if not sizes:
        return out
    ms = {k: ss[k] / dfs[k] if dfs[k] else np.nan for k in ss}
    c_h, n_h = np.mean([c for c, _ in sizes]), np.mean([n for _, n in sizes])
    if dfs["res"] == 0:                                   # one cell per dataset: seeds are the residual
        out["var_residual"] = ms["seed"]
        return out
    out.update(var_cell=max(0.0, (ms["cell"] - ms["res"]) / n_h), var_seed=max(0.0, (ms["seed"] - ms["res"]) / c_h),
               var_residual=ms["res"])
    return out


def crossed_seed_model(y, dataset, cell, unit, alpha: float = 0.05) -> dict:
    """The mean paired difference across the sweep with seeds crossed with cells (a seed's rarity subsample and
    generator bank are shared by every backbone and rare count of its dataset), small-sample t inference:

    1. average the differences of each seed unit over the dataset's cells (cells are fixed: the estimate speaks
       for the cells of the sweep, each weighted equally);
    2. one dataset: one-sample t test over those seed means (n − 1 df). Fewer than ``MIN_RANDOM_DATASETS``
       datasets: dataset as a fixed effect — OLS of the seed means on dataset indicators, the estimate the equal-
       weight mean of the dataset means, tested with the pooled within-dataset variance on Σ(n_d − 1) df
       (statsmodels ``t_test``). More: the datasets are a sample, one-sample t test over the dataset means (D − 1 df).
    Variance components are descriptive (:func:`_two_way_components`). Returns the columns of
    ``HIERARCHICAL_COLUMNS`` that a fit sets."""
    import statsmodels.formula.api as smf

    d = pd.DataFrame({"y": np.asarray(y, float), "dataset": np.asarray(dataset), "cell": np.asarray(cell),
                      "unit": np.asarray(unit)})
    d = d[np.isfinite(d["y"])]
    means = d.groupby(["dataset", "unit"], sort=False)["y"].mean().reset_index()
    n_ds = means["dataset"].nunique()
    out = {"n_obs": len(d), "estimate": np.nan, "se": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p": np.nan,
           "df": np.nan, "converged": True, "note": "", "var_dataset": np.nan, **_two_way_components(d)}
    if len(means) < 2:
        return {**out, "converged": False, "model": "none", "levels": "", "note": "fewer than 2 seed units"}
    if n_ds == 1 or n_ds >= MIN_RANDOM_DATASETS:
        v = means["y"].to_numpy() if n_ds == 1 else means.groupby("dataset", sort=False)["y"].mean().to_numpy()
        if n_ds > 1:
            within = means.groupby("dataset")["y"].agg(lambda s: s.var(ddof=1) / s.size).mean()
            out["var_dataset"] = max(0.0, float(np.var(v, ddof=1) - within))
        mean, se, lo, hi, p = _t_interval(v, alpha)
        what = "seed means" if n_ds == 1 else "dataset means (datasets random)"
        return {**out, "estimate": mean, "se": se, "ci_low": lo, "ci_high": hi, "p": p, "df": v.size - 1,
                "model": f"t-test on {what}", "levels": "seed (crossed with cells)" + (
                    "" if n_ds == 1 else " + dataset (random)")}
    fit = smf.ols("y ~ 0 + C(dataset)", means).fit()
    if fit.df_resid < 1:
        return {**out, "converged": False, "model": "none", "levels": "", "note": "one seed unit per dataset"}
    res = fit.t_test(np.full((1, len(fit.params)), 1.0 / len(fit.params)))
    ci = np.asarray(res.conf_int(alpha)).ravel()
    est, se = float(np.ravel(res.effect)[0]), float(np.ravel(res.sd)[0])
    p = float(np.ravel(res.pvalue)[0]) if se > 0 else (1.0 if est == 0 else 0.0)
    return {**out, "estimate": est, "se": se, "ci_low": float(ci[0]), "ci_high": float(ci[1]), "p": p,
            "df": float(fit.df_resid), "model": "OLS on seed means, dataset fixed",
            "levels": "seed (crossed with cells) + dataset (fixed)"}


def _t_interval(v: np.ndarray, alpha: float) -> tuple[float, float, float, float, float]:
    """(mean, se, ci_low, ci_high, p) of a one-sample t test of ``v`` against 0 on n − 1 df."""
    r = _t_on_means(np.asarray(v, float), alpha)
    return r["estimate"], r["se"], r["ci_low"], r["ci_high"], r["p"]


def hierarchical_assumptions(levels: str, n_datasets: int) -> str:
    """What a fitted across-sweep model assumes, in one line."""
    txt = ("differences additive; seeds independent and the seed means normal; cells fixed (each weighted "
           "equally, the estimate speaks for the sweep's cells); t interval and p")
    if n_datasets < 2:
        return txt + "; one dataset, so the estimate speaks for its cells only"
    if n_datasets < MIN_RANDOM_DATASETS:
        return txt + (f"; only {n_datasets} datasets: dataset is a fixed effect (too few to estimate its variance), "
                      f"so the interval speaks for these datasets, not for datasets like them")
    return txt + "; datasets a random sample (t over dataset means)"


def hierarchical_tests(pairing: Pairing, metrics, baseline: str, alpha: float = 0.05) -> pd.DataFrame:
    """Does each variant beat the baseline across the sweep? One model per (budget, variant, baseline ratio, metric)
    on all its paired differences (method − baseline) in the cells of that budget: :func:`crossed_seed_model` (seed
    units crossed with cells, small-sample t intervals, dataset fixed below ``MIN_RANDOM_DATASETS`` datasets).
    Intervals of [0, 1] metrics are clipped to [−1, 1] (``note`` says so). ``p_holm``: Holm over the variants of
    one metric (and budgets). Columns: ``HIERARCHICAL_COLUMNS``."""
    comps, pairs = pairing.comparisons, pairing.pairs
    if comps.empty or pairs.empty:
        return pd.DataFrame(columns=list(HIERARCHICAL_COLUMNS))
    vkeys = [*UNPOOLED, "generator", "synthetic_ratio", "baseline_ratio"]
    comp_var = comps.groupby(vkeys, sort=False).ngroup().to_numpy()
    variants = comps.drop_duplicates(vkeys)[vkeys].reset_index(drop=True)
    comp_ds = pd.factorize(comps["dataset"])[0]
    cid = pairs["comp_id"].to_numpy(np.int64)
    pv, pds = comp_var[cid], comp_ds[cid]
    unit = pd.factorize(pd.Series(pds).astype(str) + "|" + pairs["seed"].astype(str).to_numpy() + "|" +
                        pairs["fold"].astype(str).to_numpy())[0]
    rows = []
    for metric in metrics:
        hib = higher_is_better(metric)
        d = pairs[f"{metric}_m"].to_numpy(float) - pairs[f"{metric}_b"].to_numpy(float)
        ok = np.isfinite(d)
        for v, values in enumerate(variants.itertuples(index=False, name=None)):
            unpooled, (gen, ratio, bratio) = dict(zip(UNPOOLED, values)), values[len(UNPOOLED):]
            sel = ok & (pv == v)
            res = crossed_seed_model(d[sel], pds[sel], cid[sel], unit[sel], alpha)
            n_ds = len(np.unique(pds[sel]))
            lo, hi, clipped = clip_difference_interval([res["ci_low"]], [res["ci_high"]], metric)
            res.update(ci_low=float(lo[0]), ci_high=float(hi[0]))
            if clipped[0]:
                res["note"] = "; ".join(filter(None, [res["note"], "interval clipped to [−1, 1]"]))
            rows.append({"metric": metric, "higher_is_better": hib, **unpooled, "generator": gen,
                         "synthetic_ratio": ratio,
                         "variant": variant_label(gen, ratio), "baseline": baseline, "baseline_ratio": bratio,
                         "n_datasets": n_ds, "n_cells": len(np.unique(cid[sel])), "n_units": len(np.unique(unit[sel])),
                         "assumes": hierarchical_assumptions(res["levels"], n_ds) if res["model"] != "none" else "",
                         **res})
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
