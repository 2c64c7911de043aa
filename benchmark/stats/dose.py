"""Dose-response on the effective ratio: the slope per doubling for each method (mixed model, OLS fallback) and
the per-dataset curves the plots draw (:func:`dose_response`, :func:`dose_curves`)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats as sps

from benchmark.stats.inference import N_BOOT, correct_pvalues, mean_intervals
from benchmark.stats.vocabulary import CELL, ratio_sort_key, unit_label, variant_label

MIN_CLUSTERS = 10  # cluster-robust OLS standard errors (dose-response fallback) need enough clusters


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
