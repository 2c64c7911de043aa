"""Across the sweep: a hierarchical (mixed) model of the paired differences, random intercepts for dataset, cell
within dataset and seed within cell (:func:`nested_mixed_model`, :func:`hierarchical_tests`)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats as sps

from benchmark.stats.inference import correct_pvalues
from benchmark.stats.paired import Pairing
from benchmark.stats.prepare import sort_frame
from benchmark.stats.vocabulary import higher_is_better, variant_label

HIERARCHICAL_COLUMNS = (
    "metric", "higher_is_better", "generator", "synthetic_ratio", "variant", "baseline", "baseline_ratio", "n_obs",
    "n_datasets", "n_cells", "n_units", "levels", "estimate", "se", "ci_low", "ci_high", "p", "p_holm", "verdict",
    "var_dataset", "var_cell", "var_seed", "var_residual", "model", "converged", "assumes", "note",
)

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
