"""Per-group statistics of paired differences: t intervals, the exact Wilcoxon signed-rank test, power (MDE, the
fewest pairs a Wilcoxon test needs), BCa bootstrap intervals of means, Holm / Benjamini–Hochberg correction, and
:func:`describe_differences`, which computes them all for every comparison at once."""

from __future__ import annotations

import math
import warnings
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy import stats as sps

from benchmark.core.errors import unknown_name_error
from benchmark.stats.vocabulary import BOUNDED_METRICS, SPLITS

CORRECTIONS = ("holm", "fdr_bh")
ZERO_METHODS = ("zsplit", "pratt", "wilcox")
EXACT_WILCOXON_MAX_N = 50
N_BOOT = 2000
POWER = 0.8


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


def clip_difference_interval(low, high, metrics) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clip intervals of differences of a metric bounded to [0, 1] to [−1, 1], the range such a difference can
    take; returns (low, high, clipped) — ``clipped`` says which interval was cut (the caller says so). ``metrics``
    is one name or one per interval; intervals of other metrics are left alone."""
    low, high = np.asarray(low, float).copy(), np.asarray(high, float).copy()
    names = [metrics] * low.size if isinstance(metrics, str) else list(metrics)
    bounded = np.array([metric_bounds(m) is not None for m in names], bool).reshape(low.shape)
    clipped = bounded & ((low < -1) | (high > 1))
    low = np.where(bounded, np.maximum(low, -1.0), low)
    high = np.where(bounded, np.minimum(high, 1.0), high)
    return low, high, clipped


def _bca_rows(mat: np.ndarray, confidence: float, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """BCa bootstrap interval of the mean of each row of ``mat`` (scipy.stats.bootstrap, one resampling of the k
    columns shared by every row, seeded by (seed, k)); a constant row gets (value, value)."""
    k = mat.shape[1]
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore")
        res = sps.bootstrap((mat,), np.mean, axis=-1, vectorized=True, method="BCa", n_resamples=n_boot,
                            confidence_level=confidence, rng=np.random.default_rng([seed, k]))
    lo = np.atleast_1d(np.asarray(res.confidence_interval.low, float))
    hi = np.atleast_1d(np.asarray(res.confidence_interval.high, float))
    const = mat.max(axis=1) == mat.min(axis=1)
    lo, hi = np.where(const, mat[:, 0], lo), np.where(const, mat[:, 0], hi)
    return np.maximum(lo, mat.min(axis=1)), np.minimum(hi, mat.max(axis=1))


def bootstrap_mean_intervals(codes: np.ndarray, values: np.ndarray, n_groups: int, confidence: float = 0.95,
                             n_boot: int = N_BOOT, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """BCa bootstrap interval (bias-corrected and accelerated; scipy's ``bootstrap(method='BCa')``) of the mean of
    each group's values (NaN values and groups of < 2 ignored). Over 8 seeds both a percentile and a BCa interval
    cover only about 89 % for a nominal 95 % (tests/test_stats_answer.py): the harness's primary intervals are t
    intervals; BCa is the secondary one, for skewed metrics at larger n.

    Vectorised: groups of equal size k are bootstrapped together with one resampling seeded by (seed, k), so a
    group's interval depends only on its values in their order. Every resampled mean is a mean of observed values,
    so the interval lies inside [min, max] of the group and hence inside the metric's range, by construction
    (clamped there against floating-point rounding).
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
    for k in np.unique(n[n >= 2]).astype(int):
        sel = np.flatnonzero(n == k)
        for chunk in np.array_split(sel, max(1, len(sel) // 2000 + 1)):
            if chunk.size == 0:
                continue
            mat = values[starts[chunk][:, None] + np.arange(k)]                  # (c × k)
            lo[chunk], hi[chunk] = _bca_rows(mat, confidence, n_boot, seed)
    return lo, hi


def mean_intervals(codes, values, n_groups: int, metric: str, confidence: float = 0.95, n_boot: int = N_BOOT,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """Interval of each group's mean for ``metric``: the t interval (over 8 seeds it covers ≥ 93 % where
    percentile and BCa bootstrap intervals cover about 89 %), clipped to the metric's range for a bounded metric
    (so never an impossible value; with 2–3 seeds it may span most of [0, 1], which is what so few seeds justify).
    ``n_boot`` and ``seed`` are kept for callers. Returns (low, high, method name)."""
    codes = np.asarray(codes, np.int64)
    values = np.asarray(values, float)
    ok = np.isfinite(values)
    s = pd.DataFrame({"g": codes[ok], "v": values[ok]}).groupby("g")["v"].agg(["mean", "std", "count"])
    s = s.reindex(range(n_groups))
    lo, hi = t_ci(s["mean"], s["std"], s["count"].fillna(0), confidence)
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    bounds = metric_bounds(metric)
    if bounds is None:
        return lo, hi, "t"
    return np.clip(lo, *bounds), np.clip(hi, *bounds), f"t, clipped to [{bounds[0]:g}, {bounds[1]:g}]"


def bootstrap_ci(d, n_boot: int = N_BOOT, seed: int = 0, confidence: float = 0.95) -> tuple[float, float]:
    """BCa bootstrap interval of the mean of ``d`` (deterministic: depends only on d, n_boot, seed; the interval
    :func:`bootstrap_mean_intervals` gives a group with these values)."""
    d = np.asarray(d, float)
    if d.size < 2:
        return np.nan, np.nan
    lo, hi = _bca_rows(d[None, :], confidence, n_boot, seed)
    return float(lo[0]), float(hi[0])


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
        "ties": ties, "losses": losses, "mde_dz": mde, "mde": np.where(sd > 0, mde * sd, np.nan),
        "min_p_wilcoxon": w_min,
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
