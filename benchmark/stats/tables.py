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
               "gain_ci_high", "upper_variant", "upper_gain", "upper_verdict", "gap_closed", "upper_effective_ratio",
               "upper_capped", "gap_ci_low", "gap_ci_high", "note")


def leaderboard(df: pd.DataFrame, metrics, tests: pd.DataFrame, baseline: str, alpha: float = 0.05,
                n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """One row per (cell, variant): runs, mean effective ratio, compute hours and, per metric, n, mean, std, 95 %
    t interval of the mean over seeds (clipped to [0, 1] for metrics bounded to it: inference.mean_intervals), whether that interval rests on at least ``MIN_SEEDS_CI`` seeds, rank in
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


def _upper_weights(x: float, ux: np.ndarray) -> np.ndarray:
    """Linear-interpolation weights at ``x`` over the points (0, *ux) (ux ascending, x ≥ 0, capped at ux[-1])."""
    pts = np.r_[0.0, ux]
    w = np.zeros(pts.size)
    x = min(x, pts[-1])
    k = int(np.searchsorted(pts, x, side="right")) - 1
    if k >= pts.size - 1:
        w[-1] = 1.0
    else:
        f = (x - pts[k]) / (pts[k + 1] - pts[k])
        w[k], w[k + 1] = 1 - f, f
    return w[1:]                                          # the origin's gain is 0


def _gap_interval(m: np.ndarray, u: np.ndarray, alpha: float, n_boot: int, seed: int) -> tuple[float, float]:
    """BCa bootstrap interval over seeds (pairs resampled together) of mean(m) / mean(u); NaN when it cannot be
    computed (fewer than 3 seeds, constant data)."""
    import warnings

    from scipy import stats as sps

    if m.size < 3 or np.ptp(m) == 0 and np.ptp(u) == 0:
        return np.nan, np.nan
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore")
        try:
            res = sps.bootstrap((m, u), lambda a, b, axis=-1: a.mean(axis=axis) / b.mean(axis=axis), paired=True,
                                vectorized=True, method="BCa", n_resamples=n_boot, confidence_level=1 - alpha,
                                rng=np.random.default_rng([seed, m.size]))
        except Exception:  # noqa: BLE001 - degenerate resamples: no interval
            return np.nan, np.nan
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _seed_gains(df: pd.DataFrame | None, metric: str, cell: tuple, baseline: str, bratio: str) -> pd.DataFrame | None:
    """Per (seed, fold) of one cell: each variant's ``metric`` minus the baseline's (columns: variant labels)."""
    if df is None:
        return None
    sel = np.ones(len(df), bool)
    for k, v in zip(CELL, cell):
        sel &= (df[k] == v).to_numpy()
    d = df[sel]
    wide = d.assign(_v=[variant_label(g, r) for g, r in zip(d["generator"], d["synthetic_ratio"])]).pivot_table(
        index=["seed", "fold"], columns="_v", values=metric, aggfunc="first")
    base = variant_label(baseline, bratio)
    return wide.sub(wide[base], axis=0) if base in wide.columns else None


def gap_closed(tests: pd.DataFrame, df: pd.DataFrame | None = None, upper: str = UPPER_BOUND, n_boot: int = N_BOOT,
               seed: int = 0, alpha: float = 0.05) -> pd.DataFrame:
    """How much of the real-data gain each method recovers, per cell and metric, at the method's effective ratio.

    gain = mean paired difference of the method vs the baseline (signed so that > 0 is better); upper_gain = the
    gain ``upper`` (``real_extra``) reaches at the same effective ratio, linearly interpolated in log2(1 + effective
    ratio) between the origin (no image added: gain 0) and the ``upper`` variants of the cell. Where the method adds
    more than the real pool let ``upper`` add, the curve is held at its last point and ``upper_capped`` is True
    (then the fraction overstates what the method closes). gap_closed = gain / upper_gain (1 = as good as the same
    number of real images); undefined (NaN, with a note) when upper_gain ≤ 0. gap_ci_low/high: BCa bootstrap over
    seeds (method and upper gains resampled together; needs ``df``, the prepared records, and ≥ 3 seeds)."""
    t = tests[tests["n_pairs"] >= 2]
    if t.empty or upper not in set(t["generator"]):
        return pd.DataFrame(columns=list(GAP_COLUMNS))
    rows = []
    for key, sub in t.groupby(["metric", *CELL, "baseline", "baseline_ratio"], sort=False):
        up = sub[sub["generator"] == upper].sort_values("effective_ratio")
        others = sub[(sub["generator"] != upper) & (sub["effective_ratio"] > 0)]    # methods that add images
        if up.empty or others.empty:
            continue
        metric, cell, (baseline, bratio) = key[0], key[1:1 + len(CELL)], key[-2:]
        ux = np.log2(1 + up["effective_ratio"].to_numpy(float))
        sign = 1.0 if bool(sub["higher_is_better"].iloc[0]) else -1.0
        ug = sign * up["mean_diff"].to_numpy(float)
        seeds = _seed_gains(df, metric, cell, baseline, bratio) if n_boot else None
        for _, r in others.iterrows():
            x = float(np.log2(1 + r["effective_ratio"]))
            w = _upper_weights(x, ux)
            near = up.iloc[int(np.argmax(w))]
            row = {**r.to_dict(), "gain": sign * r["mean_diff"], "upper_gain": float(w @ ug),
                   "upper_variant": ", ".join(up["variant"]), "upper_effective_ratio": float(
                       2 ** min(x, ux[-1]) - 1), "upper_capped": bool(x > ux[-1] + 1e-9),
                   "upper_verdict": near["verdict"], "gain_ci_low": r["ci_boot_low"], "gain_ci_high": r["ci_boot_high"]}
            row["gap_ci_low"] = row["gap_ci_high"] = np.nan
            if seeds is not None and r["variant"] in seeds.columns and set(up["variant"]) <= set(seeds.columns):
                s = seeds[[r["variant"], *up["variant"]]].dropna()
                lo, hi = _gap_interval(s[r["variant"]].to_numpy(float), s[list(up["variant"])].to_numpy(float) @ w,
                                       alpha, n_boot, seed)
                row["gap_ci_low"], row["gap_ci_high"] = lo, hi
            rows.append(row)
    if not rows:
        return pd.DataFrame(columns=list(GAP_COLUMNS))
    out = pd.DataFrame(rows)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["gap_closed"] = np.where(out["upper_gain"] > 0, out["gain"] / out["upper_gain"], np.nan)
    bad = ~(out["upper_gain"] > 0)
    out.loc[bad, ["gap_ci_low", "gap_ci_high"]] = np.nan
    notes = np.where(bad, f"{upper} has no gain here: fraction undefined",
                     np.where(out["upper_verdict"] == "better", "", f"{upper} gain not significant: fraction is noisy"))
    out["note"] = [("; ".join(p for p in (n, f"{upper} capped by the real pool at effective ratio {e:.3g} "
                                          f"(the method adds {m:.3g})" if c else "") if p))
                   for n, c, e, m in zip(notes, out["upper_capped"], out["upper_effective_ratio"],
                                         out["effective_ratio"])]
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
