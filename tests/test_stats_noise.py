"""benchmark.stats.evaluation_noise against independent computations: DeLong's test against the O(m·n)
Mann–Whitney placement-value form written here (and sklearn's AUROC), the bootstrap over seeds and test images
against DeLong's standard error, and which variance source dominates."""

import numpy as np
import pytest
import scipy.stats as sps
from sklearn.metrics import roc_auc_score

from benchmark import stats


def delong_by_placements(labels, a, b):
    """DeLong et al. (1988) directly: ψ(x, y) = 1 if x > y, ½ if tied, 0 otherwise over every (positive,
    negative) pair; V10 / V01 the placement values; var = S10/m + S01/n for the contrast (1, −1)."""
    pos, neg = labels == 1, labels == 0
    v10, v01, aucs = [], [], []
    for s in (a, b):
        x, y = s[pos][:, None], s[neg][None, :]
        psi = (x > y) + 0.5 * (x == y)
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
        aucs.append(psi.mean())
    m, n = pos.sum(), neg.sum()
    c = np.array([1.0, -1.0])
    var = c @ np.cov(np.vstack(v10)) @ c / m + c @ np.cov(np.vstack(v01)) @ c / n
    diff = aucs[0] - aucs[1]
    z = diff / np.sqrt(var)
    return aucs, diff, np.sqrt(var), z, 2 * sps.norm.sf(abs(z))


def make_test_set(seed, n_pos=42, n_neg=114, shift=0.0, ties=False):
    """A BreastMNIST-sized test split (42 malignant, 114 benign) and two correlated models' probabilities."""
    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
    latent = rng.normal(0, 1, labels.size) + 1.2 * labels
    a = 1 / (1 + np.exp(-(latent + rng.normal(0, 0.6, labels.size) + shift * labels)))
    b = 1 / (1 + np.exp(-(latent + rng.normal(0, 0.6, labels.size))))
    if ties:
        a, b = np.round(a, 1), np.round(b, 1)
    return labels, a, b


@pytest.mark.parametrize("seed, ties", [(0, False), (1, True), (2, False)])
def test_delong_matches_the_placement_value_form_and_sklearn(seed, ties):
    labels, a, b = make_test_set(seed, shift=0.3 * seed, ties=ties)
    out = stats.delong_test(labels, a, b)
    aucs, diff, se, z, p = delong_by_placements(labels, a, b)
    assert out["auc_a"] == pytest.approx(roc_auc_score(labels, a), rel=1e-12) == pytest.approx(aucs[0])
    assert out["auc_b"] == pytest.approx(roc_auc_score(labels, b), rel=1e-12)
    assert out["diff"] == pytest.approx(diff, rel=1e-12) and out["se"] == pytest.approx(se, rel=1e-10)
    assert out["z"] == pytest.approx(z, rel=1e-10) and out["p"] == pytest.approx(p, rel=1e-9)


def test_delong_degenerate_and_invalid_inputs():
    labels, a, _ = make_test_set(3)
    same = stats.delong_test(labels, a, a)
    assert same["diff"] == 0 and same["se"] == 0 and np.isnan(same["p"])
    with pytest.raises(ValueError, match="both classes"):
        stats.delong_test(np.ones(5, int), a[:5], a[:5])
    with pytest.raises(ValueError, match="0 / 1"):
        stats.delong_test(np.r_[0, 1, 2], a[:3], a[:3])
    per = stats.delong_per_seed({s: make_test_set(s) for s in range(3)})
    assert list(per["seed"]) == [0, 1, 2] and per["p"].between(0, 1).all()


def test_with_identical_seeds_the_test_set_dominates_and_the_bootstrap_se_is_delongs():
    """Eight seeds that are the same pair of models: no seed variance; the replicate mean's SD over stratified
    image resamples is the test set's noise, which DeLong's SE estimates independently."""
    one = make_test_set(4, shift=0.2)
    data = {s: one for s in range(8)}
    boot = stats.paired_auroc_bootstrap(data, n_boot=2000, seed=1)
    dl = stats.delong_test(*one)
    assert boot["mean"] == pytest.approx(dl["diff"]) and boot["se"] == pytest.approx(dl["se"], rel=0.15)
    assert -1 <= boot["ci_low"] < boot["mean"] < boot["ci_high"] <= 1 and boot["n_seeds"] == 8
    src = stats.variance_sources(data, n_boot=1000)
    assert src["var_seeds"] == 0 and src["dominant"] == "test set" and src["test_set_share"] == 1
    assert src["var_test_set"] == pytest.approx(dl["se"] ** 2, rel=0.3)


def test_with_a_large_test_set_and_noisy_seeds_the_seeds_dominate():
    data = {s: make_test_set(10 + s, n_pos=1000, n_neg=1000, shift=0.8 * (s % 2)) for s in range(6)}
    src = stats.variance_sources(data, n_boot=100)
    assert src["dominant"] == "seeds" and src["test_set_share"] < 0.2
    diffs = [stats.delong_test(*v)["diff"] for v in data.values()]
    assert src["var_seeds"] == pytest.approx(np.var(diffs, ddof=1) / 6, rel=1e-12)


def test_bootstrap_is_deterministic_and_allows_different_test_sets_per_seed():
    data = {0: make_test_set(5), 1: make_test_set(6, n_pos=40, n_neg=100), 2: make_test_set(7)}
    first = stats.paired_auroc_bootstrap(data, n_boot=300, seed=2)
    assert first == stats.paired_auroc_bootstrap(data, n_boot=300, seed=2)
    assert first["pct_low"] <= first["pct_high"] and first["se"] > 0
    with pytest.raises(ValueError, match="at least 2 seeds"):
        stats.paired_auroc_bootstrap({0: make_test_set(5)})
    labels, a, _ = make_test_set(8)
    same = stats.variance_sources({0: (labels, a, a), 1: (labels, a, a)})
    assert same["dominant"] == "none"
