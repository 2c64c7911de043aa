"""The test set's own noise in a paired AUROC difference: the DeLong test of two correlated AUROCs on the same test
images (:func:`delong_test`, fast form of Sun & Xu 2014), a bootstrap over seeds and test images
(:func:`paired_auroc_bootstrap`) and which variance source dominates (:func:`variance_sources`).

Inputs are per-image arrays: ``labels`` (1 = the rare / positive class, 0 = the rest) and the two models' scores
(the probability of the positive class) on the same test images; over seeds a ``dict seed -> (labels, scores_a,
scores_b)``. Differences are a − b.

Why one image resample for every seed: every seed is scored on the same test images, so the noise from drawing
that test set is shared by all seeds (a seed-level interval is conditional on it). A replicate therefore draws one
test set (images resampled with replacement within each class, class counts kept) and scores every seed's pair on
it, then resamples the seeds; resampling images independently per seed would average the shared test-set noise
down by the number of seeds.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as sps

N_BOOT_IMAGES = 2000


def _split(labels, *scores) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    labels = np.asarray(labels)
    pos = labels == 1
    if not set(np.unique(labels)) <= {0, 1}:
        raise ValueError("labels must be 0 / 1 (1 = the rare, positive class)")
    if pos.all() or not pos.any():
        raise ValueError("AUROC needs both classes among the labels")
    arrays = [np.asarray(s, float) for s in scores]
    if any(a.shape != labels.shape for a in arrays):
        raise ValueError("labels and every score array must have the same length")
    return pos, [a[pos] for a in arrays], [a[~pos] for a in arrays]


def delong_test(labels, scores_a, scores_b) -> dict:
    """DeLong's test (DeLong, DeLong & Clarke-Pearson 1988) of AUROC(a) − AUROC(b) on the same images, in the fast
    midrank form of Sun & Xu (2014, IEEE Signal Processing Letters 21:1389): AUROCs and structural components from
    midranks, their covariance S = S10/m + S01/n, var(diff) = S_aa + S_bb − 2 S_ab. Returns auc_a, auc_b, diff,
    se, z and the two-sided normal p (NaN z and p when the SE is 0)."""
    _, pos, neg = _split(labels, scores_a, scores_b)
    m, n = pos[0].size, neg[0].size
    aucs, v10, v01 = [], [], []
    for x, y in zip(pos, neg):
        tx, ty = sps.rankdata(x), sps.rankdata(y)
        tz = sps.rankdata(np.r_[x, y])
        aucs.append((tz[:m].sum() - m * (m + 1) / 2) / (m * n))
        v10.append((tz[:m] - tx) / n)             # per positive: share of negatives it outranks
        v01.append(1.0 - (tz[m:] - ty) / m)       # per negative: share of positives that outrank it
    s = np.cov(np.vstack(v10)) / m + np.cov(np.vstack(v01)) / n
    var = float(s[0, 0] + s[1, 1] - 2 * s[0, 1])
    diff = float(aucs[0] - aucs[1])
    se = math.sqrt(max(var, 0.0))
    z = diff / se if se > 0 else float("nan")
    return {"auc_a": float(aucs[0]), "auc_b": float(aucs[1]), "diff": diff, "se": se, "z": z,
            "p": float(2 * sps.norm.sf(abs(z))) if se > 0 else float("nan")}


def delong_per_seed(data: dict) -> pd.DataFrame:
    """:func:`delong_test` for every seed of ``data`` (seed → (labels, scores_a, scores_b)): one row per seed."""
    return pd.DataFrame([{"seed": s, **delong_test(*v)} for s, v in data.items()],
                        columns=["seed", "auc_a", "auc_b", "diff", "se", "z", "p"])


def _auroc_rows(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """AUROC of each row: ``pos`` (B × m) positive scores, ``neg`` (B × n) negative scores (midranks for ties)."""
    m, n = pos.shape[1], neg.shape[1]
    r = sps.rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    return (r[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * n)


def _image_resamples(data: dict, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(seeds × n_boot) AUROC differences, replicate b scoring every seed on the same stratified image resample
    (needs the same labels for every seed: one test set), else on one resample per seed."""
    seeds = list(data)
    split = {s: _split(*data[s]) for s in seeds}
    labels = [np.asarray(data[s][0]) for s in seeds]
    shared = all(lab.shape == labels[0].shape and np.array_equal(lab, labels[0]) for lab in labels)
    out = np.empty((len(seeds), n_boot))
    idx = None
    for i, s in enumerate(seeds):
        _, pos, neg = split[s]
        if idx is None or not shared:
            m, n = pos[0].size, neg[0].size
            idx = (rng.integers(0, m, (n_boot, m)), rng.integers(0, n, (n_boot, n)))
        a = _auroc_rows(pos[0][idx[0]], neg[0][idx[1]])
        b = _auroc_rows(pos[1][idx[0]], neg[1][idx[1]])
        out[i] = a - b
    return out


def paired_auroc_bootstrap(data: dict, n_boot: int = N_BOOT_IMAGES, seed: int = 0, confidence: float = 0.95) -> dict:
    """Interval for the mean over seeds of the paired AUROC difference (a − b) that includes the test set's noise:
    each replicate resamples the test images within each class (the same images for both models and, with one
    test set, for every seed) and then the seeds, with replacement. Interval: the observed mean ± t_{S−1} × the
    SD of the replicate means (a t quantile, as over few seeds a percentile interval under-covers); the percentile
    interval is beside it. Returns mean, se, ci_low, ci_high, pct_low, pct_high, n_seeds."""
    seeds = list(data)
    if len(seeds) < 2:
        raise ValueError("the bootstrap over seeds needs at least 2 seeds")
    rng = np.random.default_rng(seed)
    observed = np.array([delong_test(*data[s])["diff"] for s in seeds])
    d = _image_resamples(data, n_boot, rng)
    pick = rng.integers(0, len(seeds), (n_boot, len(seeds)))
    means = d[pick, np.arange(n_boot)[:, None]].mean(axis=1)
    se = float(means.std(ddof=1))
    t = sps.t.ppf(0.5 + confidence / 2, len(seeds) - 1)
    mean = float(observed.mean())
    lo, hi = np.quantile(means, [0.5 - confidence / 2, 0.5 + confidence / 2])
    return {"mean": mean, "se": se, "ci_low": max(-1.0, mean - t * se), "ci_high": min(1.0, mean + t * se),
            "pct_low": float(lo), "pct_high": float(hi), "n_seeds": len(seeds)}


def variance_sources(data: dict, n_boot: int = N_BOOT_IMAGES, seed: int = 0) -> dict:
    """Which source of variance dominates the mean paired AUROC difference over seeds: ``var_seeds`` = the
    between-seed variance of the per-seed differences / S (what the seed-level interval uses, conditional on the
    test set) and ``var_test_set`` = the variance of the mean over seeds across stratified image resamples (every
    seed on the same resample). Returns both, the test set's share of their sum and ``dominant``
    ("test set", "seeds", or "none" when both are 0)."""
    seeds = list(data)
    observed = np.array([delong_test(*data[s])["diff"] for s in seeds])
    d = _image_resamples(data, n_boot, np.random.default_rng(seed))
    var_seeds = float(observed.var(ddof=1) / len(seeds)) if len(seeds) > 1 else float("nan")
    var_test = float(d.mean(axis=0).var(ddof=1))
    total = var_seeds + var_test
    return {"var_seeds": var_seeds, "var_test_set": var_test,
            "test_set_share": var_test / total if total > 0 else float("nan"),
            "dominant": "none" if not total > 0 else "test set" if var_test > var_seeds else "seeds",
            "n_seeds": len(seeds)}
