"""benchmark.stats: every statistic against scipy / statsmodels computed here, plus Demšar (2006)'s worked examples.

Reference: J. Demšar, "Statistical Comparisons of Classifiers over Multiple Data Sets", JMLR 7:1–30, 2006.
Table 2 (AUC of C4.5 vs C4.5+m on 14 data sets; Wilcoxon example) and Table 6 (four C4.5 variants; Friedman,
Iman–Davenport, Nemenyi and Holm example), transcribed below.
"""

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats as sps
import statsmodels.formula.api as smf
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower

from benchmark import stats
from benchmark.core.errors import UserError

N_MAJORITY = 399          # BreastMNIST-like training split: 399 benign (majority), 147 malignant (rare)
N_RARE_ALL = 147


def added_images(ratio, n_rare: int, n_majority: int = N_MAJORITY) -> int:
    """Rare images a job adds for a ratio form, as benchmark.generators.base.synthetic_count counts them."""
    from benchmark.core.training_set import synthetic_count

    return synthetic_count(ratio, n_rare, np.array([n_majority, n_rare]))


def make_records(datasets=("ds0", "ds1"), rare_counts=(10, "all"), backbones=("bb0",),
                 variants=(("none", 0), ("class_weight", 0), ("dcgan", 1), ("dcgan", 2), ("dcgan", 4)),
                 seeds=6, effects=None, slopes=None, noise=0.01, seed=0) -> pd.DataFrame:
    """A records table with records.csv's columns: a cell effect, a shared seed effect (what makes pairing pay
    off), a method effect and a slope per doubling of the effective ratio. Ratios may be numbers, "balance" or
    "real_percentage=P"; the counts (n_rare_train, n_train_synthetic, effective_ratio) follow from them as the
    harness computes them for a 399 / 147 training split."""
    rng = np.random.default_rng(seed)
    effects, slopes = effects or {}, slopes or {}
    rows = []
    for ds, rc, bb in itertools.product(datasets, rare_counts, backbones):
        cell = 0.75 + rng.normal(0, 0.03)
        seed_eff = rng.normal(0, 0.02, seeds)
        n_rare = N_RARE_ALL if rc == "all" else int(rc)
        for gen, ratio in variants:
            added = added_images(ratio, n_rare)
            eff = added / n_rare
            for s in range(seeds):
                v = cell + seed_eff[s] + effects.get(gen, 0.0) + slopes.get(gen, 0.0) * (
                    math.log2(eff) if eff > 0 else 0.0)
                row = {"key": f"k{len(rows)}", "name": f"{ds}-{rc}-{gen}-{ratio}-{bb}-{s}", "grid": "t",
                       "dataset": ds, "image_size": 28, "rare_class": "minority", "rare_count": rc,
                       "n_rare_train": n_rare, "generator": gen, "synthetic_ratio": ratio, "backbone": bb, "seed": s,
                       "fold": 0, "results_version": 1, "dataset_sha256": f"sha-{ds}"}
                for split in ("val", "test"):
                    row[f"{split}_auroc"] = v + rng.normal(0, noise)
                    row[f"{split}_balanced_accuracy"] = v - 0.1 + rng.normal(0, noise)
                    row[f"{split}_rare_sensitivity"] = v - 0.2 + rng.normal(0, 2 * noise)
                    row[f"{split}_thr_balanced_accuracy"] = v - 0.05 + rng.normal(0, noise)
                    row[f"{split}_thr_rare_sensitivity"] = v - 0.1 + rng.normal(0, 2 * noise)
                    row[f"{split}_ece"] = 0.05 + rng.normal(0, 0.005)
                row.update(wall_s=360.0, compute_hours=0.1, n_train_real=N_MAJORITY + n_rare,
                           n_train_synthetic=added, n_real_extra=0, effective_ratio=eff)
                if gen == "dcgan":
                    row.update(audit_fid=30.0 + s, audit_copy_rate=0.01)
                rows.append(row)
    return pd.DataFrame(rows)


def groups_of(samples):
    """(group ids, concatenated values) for describe_differences."""
    g = np.concatenate([np.full(len(s), i) for i, s in enumerate(samples)])
    return g, np.concatenate(samples)


# ---------------------------------------------------------------------------------------------------------------
# Paired t-test, CIs, effect size, wins/ties/losses
# ---------------------------------------------------------------------------------------------------------------

def test_paired_t_test_ci_and_effect_size_match_scipy():
    rng = np.random.default_rng(1)
    pairs = [(rng.normal(0.8, 0.02, n), rng.normal(0.79, 0.02, n)) for n in (2, 3, 5, 8, 12)]
    g, d = groups_of([m - b for m, b in pairs])
    out = stats.describe_differences(g, d, len(pairs))
    for i, (m, b) in enumerate(pairs):
        ref = sps.ttest_rel(m, b)
        ci = ref.confidence_interval(0.95)
        row = out.iloc[i]
        assert row["n_pairs"] == len(m)
        assert row["mean_diff"] == pytest.approx(np.mean(m - b), abs=1e-15)
        assert row["sd_diff"] == pytest.approx(np.std(m - b, ddof=1), rel=1e-12)
        assert row["t_stat"] == pytest.approx(ref.statistic, rel=1e-10)
        assert row["p_t"] == pytest.approx(ref.pvalue, rel=1e-10)
        assert (row["ci_t_low"], row["ci_t_high"]) == pytest.approx((ci.low, ci.high), rel=1e-10)
        assert row["cohens_dz"] == pytest.approx(np.mean(m - b) / np.std(m - b, ddof=1), rel=1e-12)


def test_wins_ties_losses_follow_the_metric_direction():
    d = np.array([0.02, 0.0, -0.01, 0.03, 0.0])
    g = np.zeros(5, int)
    hi = stats.describe_differences(g, d, 1, higher_better=True).iloc[0]
    lo = stats.describe_differences(g, d, 1, higher_better=False).iloc[0]
    assert (hi["wins"], hi["ties"], hi["losses"]) == (2, 2, 1)
    assert (lo["wins"], lo["ties"], lo["losses"]) == (1, 2, 2)
    assert stats.higher_is_better("test_auroc") and not stats.higher_is_better("test_ece")


def test_degenerate_differences_are_documented_values():
    """All-zero differences: t = 0, p = 1 (scipy gives NaN); constant non-zero: t = ±inf, p = 0 (as scipy)."""
    g, d = groups_of([np.zeros(4), np.full(4, 0.01), np.array([0.5])])
    out = stats.describe_differences(g, d, 3)
    assert out.loc[0, "p_t"] == 1.0 and out.loc[0, "t_stat"] == 0.0 and out.loc[0, "p_wilcoxon"] == 1.0
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        ref = sps.ttest_rel(np.full(4, 0.01), np.zeros(4))
    assert out.loc[1, "p_t"] == ref.pvalue == 0.0 and np.isinf(out.loc[1, "t_stat"])
    assert out.loc[2, "n_pairs"] == 1 and np.isnan(out.loc[2, "p_t"]) and np.isnan(out.loc[2, "ci_t_low"])


# ---------------------------------------------------------------------------------------------------------------
# Wilcoxon signed-rank
# ---------------------------------------------------------------------------------------------------------------

def test_wilcoxon_exact_matches_scipy_without_ties():
    rng = np.random.default_rng(2)
    samples = [rng.normal(0.01, 0.02, n) for n in (3, 4, 5, 6, 7, 9, 12, 20)]
    g, d = groups_of(samples)
    fast = stats.describe_differences(g, d, len(samples))          # vectorised path
    for i, x in enumerate(samples):
        ref = sps.wilcoxon(x, method="exact")
        one = stats.wilcoxon_signed_rank(x)                          # per-comparison path
        assert one["method"] == "exact"
        assert one["p"] == pytest.approx(ref.pvalue, rel=1e-12)
        assert one["stat"] == ref.statistic
        assert fast.loc[i, "p_wilcoxon"] == pytest.approx(ref.pvalue, rel=1e-12)
        assert fast.loc[i, "wilcoxon_stat"] == ref.statistic


@pytest.mark.parametrize("zero_method", ["zsplit", "pratt", "wilcox"])
def test_wilcoxon_with_ties_and_zeros_is_the_exact_permutation_test(zero_method):
    """With ties or zeros the exact p is the permutation distribution of R+ (scipy: PermutationMethod, which
    enumerates all 2^n sign flips when n_resamples exceeds 2^n)."""
    d = np.array([0.02, -0.01, 0.02, 0.0, 0.03, 0.01, -0.02, 0.04, 0.0, 0.05, 0.01])
    x = d[d != 0] if zero_method == "wilcox" else d
    ref = sps.wilcoxon(x, zero_method=zero_method, method=sps.PermutationMethod(n_resamples=2**12))
    res = stats.wilcoxon_signed_rank(d, zero_method)
    assert res["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert res["stat"] == pytest.approx(sps.wilcoxon(x, zero_method=zero_method).statistic)
    out = stats.describe_differences(np.zeros(d.size, int), d, 1, zero_method=zero_method)
    assert out.loc[0, "p_wilcoxon"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert out.loc[0, "wilcoxon_n_nonzero"] == 9


def test_wilcoxon_large_n_uses_the_normal_approximation():
    x = np.random.default_rng(3).normal(0.005, 0.02, 60)
    res = stats.wilcoxon_signed_rank(x)
    assert res["method"] == "normal"
    assert res["p"] == pytest.approx(sps.wilcoxon(x, method="asymptotic").pvalue, rel=1e-10)


def test_demsar_wilcoxon_example_table_2():
    """Demšar 2006 §3.1.3, Table 2: C4.5 vs C4.5+m, AUC on 14 data sets. Zero differences are split between the
    sums, giving R+ = 93 and R− = 12; T = min = 12 is below the critical 21 for N = 14 (α = 0.05), so the
    difference is significant. Demšar gives no p; the exact p is checked against a brute-force enumeration."""
    c45 = [0.763, 0.599, 0.954, 0.628, 0.882, 0.936, 0.661, 0.583, 0.775, 1.000, 0.940, 0.619, 0.972, 0.957]
    c45m = [0.768, 0.591, 0.971, 0.661, 0.888, 0.931, 0.668, 0.583, 0.838, 1.000, 0.962, 0.666, 0.981, 0.978]
    d = np.round(np.array(c45m) - np.array(c45), 3)   # the table's 3-decimal differences (exact ties)
    res = stats.wilcoxon_signed_rank(d, "zsplit")
    assert (res["r_plus"], res["r_minus"], res["stat"]) == (93.0, 12.0, 12.0)
    assert res["stat"] <= 21 and res["p"] < 0.05
    ranks = sps.rankdata(np.abs(d))
    nz = d != 0
    const = ranks[~nz].sum() / 2
    sums = [const + sum(r for r, s in zip(ranks[nz], signs) if s) for signs in itertools.product((0, 1), repeat=12)]
    sums = np.array(sums)
    brute = 2 * min((sums <= 93).mean(), (sums >= 93).mean())
    assert res["p"] == pytest.approx(brute, rel=1e-12)


def test_minimum_p_and_reachability_flag():
    five = stats.wilcoxon_signed_rank(np.array([0.01, 0.02, 0.03, 0.04, 0.05]))
    assert five["p"] == five["min_p"] == 0.0625
    six = stats.wilcoxon_signed_rank(np.arange(1, 7) / 100)
    assert six["min_p"] == 0.03125 == six["p"]
    g, d = groups_of([np.arange(1, 6) / 100, np.arange(1, 7) / 100, np.array([0.0, 0.01, 0.02, 0.03, 0.04, 0.05])])
    out = stats.describe_differences(g, d, 3, zero_method="zsplit")
    assert out["wilcoxon_can_reach_alpha"].tolist() == [False, True, False]   # a zero leaves 5 non-zero pairs
    assert out.loc[2, "min_p_wilcoxon"] == 0.0625


# ---------------------------------------------------------------------------------------------------------------
# Bootstrap, power, multiple comparisons
# ---------------------------------------------------------------------------------------------------------------

def test_bootstrap_ci_is_the_documented_deterministic_bca_interval():
    """Issue 18: percentile intervals over 8 seeds under-cover; the bootstrap intervals are BCa (scipy)."""
    x = np.random.default_rng(4).normal(0.01, 0.02, 10)
    lo, hi = stats.bootstrap_ci(x, n_boot=2000, seed=0)
    ref = sps.bootstrap((x,), np.mean, method="BCa", n_resamples=2000, rng=np.random.default_rng([0, 10]))
    assert (lo, hi) == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high), rel=1e-12)
    assert stats.bootstrap_ci(x) == (lo, hi)
    big = sps.bootstrap((x,), np.mean, method="BCa", n_resamples=20000, rng=1).confidence_interval
    assert lo == pytest.approx(big.low, abs=0.15 * (hi - lo)) and hi == pytest.approx(big.high, abs=0.15 * (hi - lo))
    out = stats.describe_differences(np.zeros(10, int), x, 1)
    assert (out.loc[0, "ci_boot_low"], out.loc[0, "ci_boot_high"]) == pytest.approx((lo, hi), rel=1e-12)


@pytest.mark.parametrize("n", [2, 3, 5, 10, 30])
def test_minimal_detectable_effect_matches_statsmodels(n):
    dz = stats.mde_dz(n)
    assert dz == pytest.approx(TTestPower().solve_power(nobs=n, alpha=0.05, power=0.8), rel=1e-6)
    assert TTestPower().power(effect_size=dz, nobs=n, alpha=0.05) == pytest.approx(0.8, abs=1e-6)
    x = np.random.default_rng(n).normal(0, 0.02, n)
    out = stats.describe_differences(np.zeros(n, int), x, 1).iloc[0]
    assert out["mde"] == pytest.approx(dz * np.std(x, ddof=1), rel=1e-12)


@pytest.mark.parametrize("method", ["holm", "fdr_bh"])
def test_correction_matches_statsmodels_within_each_family(method):
    rng = np.random.default_rng(5)
    p = rng.uniform(0, 0.1, 80)
    p[[3, 9]] = p[[5, 11]]          # ties
    p[[0, 40]] = np.nan             # NaN is not counted
    fam = rng.integers(0, 4, 80)
    adj = stats.correct_pvalues(p, method, families=fam)
    for f in range(4):
        sel = (fam == f) & np.isfinite(p)
        np.testing.assert_allclose(adj[sel], multipletests(p[sel], alpha=0.05, method=method)[1], rtol=1e-12)
    assert np.isnan(adj[[0, 40]]).all()
    with pytest.raises(UserError, match="Available: fdr_bh, holm"):
        stats.correct_pvalues(p, "bonferoni")


# ---------------------------------------------------------------------------------------------------------------
# Friedman, Iman–Davenport, Nemenyi, Holm vs a control: Demšar's example
# ---------------------------------------------------------------------------------------------------------------

# Demšar 2006, Table 6: AUC (and rank) of C4.5, C4.5+m, C4.5+cf, C4.5+m+cf on 14 data sets.
DEMSAR_AUC = np.array([
    [0.763, 0.768, 0.771, 0.798], [0.599, 0.591, 0.590, 0.569], [0.954, 0.971, 0.968, 0.967],
    [0.628, 0.661, 0.654, 0.657], [0.882, 0.888, 0.886, 0.898], [0.936, 0.931, 0.916, 0.931],
    [0.661, 0.668, 0.609, 0.685], [0.583, 0.583, 0.563, 0.625], [0.775, 0.838, 0.866, 0.875],
    [1.000, 1.000, 1.000, 1.000], [0.940, 0.962, 0.965, 0.962], [0.619, 0.666, 0.614, 0.669],
    [0.972, 0.981, 0.975, 0.975], [0.957, 0.978, 0.946, 0.970]])
DEMSAR_RANKS = np.array([
    [4, 3, 2, 1], [1, 2, 3, 4], [4, 1, 2, 3], [4, 1, 3, 2], [4, 2, 3, 1], [1, 2.5, 4, 2.5], [3, 2, 4, 1],
    [2.5, 2.5, 4, 1], [4, 3, 2, 1], [2.5, 2.5, 2.5, 2.5], [4, 2.5, 1, 2.5], [3, 2, 4, 1], [4, 1, 2, 3], [3, 1, 4, 2]])
DEMSAR_NAMES = ["C4.5", "C4.5+m", "C4.5+cf", "C4.5+m+cf"]


def test_demsar_friedman_iman_davenport_nemenyi_example():
    """Published: average ranks 3.143, 2.000, 2.893, 1.964; χ²_F = 9.28; F_F = 3.69 > F(3, 39) = 2.85 at α = 0.05;
    Nemenyi q_0.05 = 2.569, CD = 1.25. Demšar's formulas carry no tie correction: the *_uncorrected values."""
    fr = stats.friedman(-DEMSAR_RANKS)          # the published ranks as values: rank 1 = best
    np.testing.assert_allclose(fr["avg_ranks"], [3.143, 2.000, 2.893, 1.964], atol=5e-4)
    assert round(fr["chi2_uncorrected"], 2) == 9.28
    assert round(fr["F_uncorrected"], 2) == 3.69
    assert (fr["df1"], fr["df2"]) == (3, 39)
    assert round(sps.f.ppf(0.95, 3, 39), 2) == 2.85 and fr["p_F_uncorrected"] < 0.05
    assert round(fr["q_alpha"], 3) == 2.569 and round(fr["cd"], 2) == 1.25
    # the tie-corrected χ² is scipy's
    ref = sps.friedmanchisquare(*(-DEMSAR_RANKS).T)
    assert fr["chi2"] == pytest.approx(ref.statistic, rel=1e-12) and fr["p_chi2"] == pytest.approx(ref.pvalue)
    F = (14 - 1) * ref.statistic / (14 * 3 - ref.statistic)
    assert fr["F"] == pytest.approx(F, rel=1e-12) and fr["p_F"] == pytest.approx(sps.f.sf(F, 3, 39), rel=1e-10)


def test_demsar_table_values_reproduce_ranks_except_the_rounded_tie():
    """Ranking the printed AUCs gives the published ranks except for 'voting', where C4.5+cf and C4.5+m+cf both
    print as 0.975 but are ranked 2 and 3 (the unrounded AUCs differed). Ranked from the printed values they tie
    at 2.5, so the last two average ranks become 2.929 and 1.929 instead of 2.893 and 1.964."""
    ranks = stats.rank_matrix(DEMSAR_AUC)
    differs = np.flatnonzero((ranks != DEMSAR_RANKS).any(axis=1))
    assert differs.tolist() == [12]
    np.testing.assert_allclose(ranks.mean(axis=0), [44 / 14, 28 / 14, 41 / 14, 27 / 14])


def test_demsar_holm_against_a_control():
    """Control C4.5+m+cf, SE = √(4·5/(6·14)) = 0.488: z and p from the published ranks; Holm rejects only C4.5
    (p = 0.016 < 0.05/3), then stops at C4.5+cf (p = 0.057 > 0.05/2)."""
    avg = pd.Series(DEMSAR_RANKS.mean(axis=0), index=DEMSAR_NAMES)
    out = stats.holm_vs_control(avg, "C4.5+m+cf", 14).set_index("variant")
    se = math.sqrt(20 / 84)
    for name in ("C4.5", "C4.5+m", "C4.5+cf"):
        z = (avg[name] - avg["C4.5+m+cf"]) / se
        assert out.loc[name, "z_vs_control"] == pytest.approx(z)
        assert out.loc[name, "p_vs_control"] == pytest.approx(2 * sps.norm.sf(abs(z)))
    assert round(out.loc["C4.5", "p_vs_control"], 3) == 0.016 and round(out.loc["C4.5+cf", "p_vs_control"], 3) == 0.057
    np.testing.assert_allclose(out["p_holm"], multipletests(out["p_vs_control"], method="holm")[1])
    assert out["significant_vs_control"].to_dict() == {"C4.5": True, "C4.5+m": False, "C4.5+cf": False}


def test_nemenyi_q_matches_demsar_table_5a():
    """Demšar's Table 5(a) comes from older studentized-range tables and is off in the last digit for some k
    (k = 3: exact 2.3437, printed 2.343; k = 7: exact 2.9483, printed 2.949), so agreement is to within 0.001."""
    published = {2: 1.960, 3: 2.343, 4: 2.569, 5: 2.728, 6: 2.850, 7: 2.949, 8: 3.031, 9: 3.102, 10: 3.164}
    for k, q in published.items():
        assert stats.nemenyi_q(k) == pytest.approx(q, abs=1e-3)
        assert stats.nemenyi_q(k) == pytest.approx(sps.studentized_range.ppf(0.95, k, np.inf) / math.sqrt(2))
    assert stats.nemenyi_cd(4, 14) == pytest.approx(2.569 * math.sqrt(20 / 84), abs=1e-3)


def test_nemenyi_cliques():
    avg = pd.Series({"a": 1.0, "b": 1.5, "c": 2.4, "d": 3.9})
    assert stats.nemenyi_cliques(avg, 1.0) == [["a", "b"], ["b", "c"]]
    assert stats.nemenyi_cliques(avg, 10.0) == [["a", "b", "c", "d"]]


# ---------------------------------------------------------------------------------------------------------------
# Records: validation, pairing, bad input
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def analysis():
    df = make_records(effects={"dcgan": 0.03}, slopes={"dcgan": 0.01})
    df.loc[df.index[(df.generator == "dcgan") & (df.synthetic_ratio == 2) & (df.seed == 1)][0], "test_auroc"] = np.nan
    return df, stats.analyse(df)


def test_paired_tests_numbers_come_from_the_paired_records(analysis):
    df, a = analysis
    t = a.tests
    assert list(t.columns) == list(stats.PAIRED_COLUMNS)
    # 4 cells × 4 non-baseline variants × 3 metrics (stats.DEFAULT_METRICS)
    assert len(t) == 4 * 4 * len(stats.DEFAULT_METRICS) and set(t["baseline_ratio"]) == {"0"}
    row = t[(t.metric == "test_thr_balanced_accuracy") & (t.dataset == "ds1") & (t.rare_count == "all")
            & (t.variant == "dcgan@4")].iloc[0]
    cell = df[(df.dataset == "ds1") & (df.rare_count == "all")]
    m = cell[cell.generator.eq("dcgan") & cell.synthetic_ratio.eq(4)].sort_values("seed")["test_thr_balanced_accuracy"]
    b = cell[cell.generator.eq("none")].sort_values("seed")["test_thr_balanced_accuracy"]
    ref = sps.ttest_rel(m.to_numpy(), b.to_numpy())
    assert row["n_pairs"] == 6 and row["p_t"] == pytest.approx(ref.pvalue)
    assert row["p_wilcoxon"] == pytest.approx(sps.wilcoxon(m.to_numpy() - b.to_numpy()).pvalue)
    fam = t[t.metric == "test_thr_balanced_accuracy"]
    np.testing.assert_allclose(fam["p_t_adj"], multipletests(fam["p_t"], method="holm")[1])
    assert (fam["family_size"] == len(fam)).all()
    assert row["significant"] == (row["p_t_adj"] < 0.05)
    assert row["verdict"] == ("better" if row["significant"] and row["mean_diff"] > 0 else
                              "worse" if row["significant"] else "n.s.")


def test_nan_metrics_are_excluded_counted_and_listed(analysis):
    df, a = analysis
    assert len(a.nan_rows) == 1 and a.nan_rows.iloc[0]["metric"] == "test_auroc"
    assert a.nan_rows.iloc[0]["generator"] == "dcgan" and a.nan_rows.iloc[0]["seed"] == 1
    t = a.tests[(a.tests.metric == "test_auroc") & (a.tests.n_nan_excluded > 0)]
    assert len(t) == 1 and t.iloc[0]["n_pairs"] == 5 and "1 NaN pair(s) excluded" in t.iloc[0]["note"]
    assert any("NaN metric value" in w for w in a.warnings)


def test_pairing_uses_common_seeds_and_reports_mismatches():
    df = make_records(datasets=("ds0",), rare_counts=(10,), seeds=6)
    df = df[~((df.generator == "none") & (df.seed == 5)) & ~((df.generator == "dcgan") & (df.seed == 0))]
    a = stats.analyse(df, metrics=["test_auroc"])
    row = a.tests[a.tests.variant == "dcgan@2"].iloc[0]
    assert (row["n_pairs"], row["n_only_method"], row["n_only_baseline"]) == (4, 1, 1)
    mm = a.seed_mismatch[a.seed_mismatch.synthetic_ratio == "2"].iloc[0]
    assert (mm["only_method"], mm["only_baseline"], mm["n_common"]) == ("5", "0", 4)
    cw = a.tests[a.tests.variant == "class_weight"].iloc[0]
    assert (cw["n_pairs"], cw["n_only_baseline"], cw["n_only_method"]) == (5, 0, 1)


def test_baseline_with_several_ratios_pairs_on_the_same_ratio():
    variants = (("none", 0), ("oversample", 1), ("oversample", 2), ("dcgan", 1), ("dcgan", 2), ("dcgan", 4))
    a = stats.analyse(make_records(datasets=("ds0",), rare_counts=(10,), variants=variants), ["test_auroc"],
                      baseline="oversample")
    pairs = set(zip(a.tests["variant"], a.tests["baseline_ratio"]))
    # dcgan pairs on its own ratio; `none` (one ratio) is compared with every oversample ratio
    assert pairs == {("dcgan@1", "1"), ("dcgan@2", "2"), ("none", "1"), ("none", "2")}
    miss = a.missing_baseline
    assert len(miss) == 1 and miss.iloc[0]["synthetic_ratio"] == "4"
    assert "'oversample' has no run at ratio 4" in miss.iloc[0]["reason"]
    assert a.leaderboard.loc[a.leaderboard.variant == "dcgan@4", "test_auroc_vs_baseline"].item() == "no baseline"


def test_cell_without_its_baseline_is_reported_not_dropped():
    df = make_records(datasets=("ds0", "ds1"), rare_counts=(10,))
    df = df[~((df.dataset == "ds1") & (df.generator == "none"))]
    a = stats.analyse(df, ["test_auroc"])
    miss = a.missing_baseline
    assert set(miss["dataset"]) == {"ds1"} and len(miss) == 4
    assert miss["reason"].str.contains("no 'none' run in this cell").all()
    assert (miss["n_records"] == 6).all()
    assert set(a.tests["dataset"]) == {"ds0"}
    lb = a.leaderboard[a.leaderboard.dataset == "ds1"]
    assert len(lb) == 4 and (lb["test_auroc_vs_baseline"] == "no baseline").all()
    assert any("have no 'none' run" in w for w in a.warnings)


def test_validation_errors_name_the_problem():
    df = make_records(datasets=("ds0",), rare_counts=(10,), seeds=3)
    with pytest.raises(UserError, match="missing required column\\(s\\): backbone, seed"):
        stats.analyse(df.drop(columns=["backbone", "seed"]))
    with pytest.raises(UserError, match="Unknown metric 'test_aurco'. Did you mean 'test_auroc'"):
        stats.analyse(df, metrics=["test_aurco"])
    with pytest.raises(UserError, match="Available: .*test_balanced_accuracy") as exc:
        stats.analyse(df, metrics=["bogus"])
    assert "wall_s" not in str(exc.value)
    with pytest.raises(UserError, match="missing the metric column\\(s\\) test_macro_f1"):
        stats.analyse(df, metrics=["test_macro_f1"])
    with pytest.raises(UserError, match="Unknown baseline method 'oversample'.*Available: class_weight, dcgan, none"):
        stats.analyse(df, baseline="oversample")
    with pytest.raises(UserError, match="has no rows"):
        stats.analyse(df.iloc[:0])
    bad = df.copy()
    bad.loc[3, "seed"] = np.nan
    with pytest.raises(UserError, match="'seed' is empty in 1 row"):
        stats.analyse(bad)


def test_normalisation_duplicates_and_metric_short_names():
    df = make_records(datasets=("ds0",), rare_counts=(10, "all"), seeds=3)
    df["rare_count"] = df["rare_count"].map(lambda v: 10.0 if v == 10 else "all")   # as read back from a CSV
    df["generator"] = df["generator"].replace({"dcgan": "my-gan"})                   # any method names
    df = pd.concat([df, df.iloc[[0]]], ignore_index=True)
    a = stats.analyse(df, metrics=["auroc"])
    assert a.metrics == ["test_auroc"]
    assert set(a.records["rare_count"]) == {"10", "all"}
    assert len(a.duplicates) == 1 and any("duplicate" in w for w in a.warnings)
    assert "my-gan@2" in set(a.tests["variant"])
    assert list(a.leaderboard["rare_count"].drop_duplicates()) == ["10", "all"]


def test_family_choice_changes_the_correction():
    df = make_records(datasets=("ds0",), rare_counts=(10, 20), seeds=5)
    cell = stats.analyse(df, ["test_auroc", "test_ece"], family="cell")
    t = cell.tests
    assert (t["family_size"] == 4).all() and t["family"].nunique() == 4
    sub = t[(t.metric == "test_ece") & (t.rare_count == "20")]
    np.testing.assert_allclose(sub["p_t_adj"], multipletests(sub["p_t"], method="holm")[1])
    allf = stats.analyse(df, ["test_auroc", "test_ece"], family="all", correction="fdr_bh", test="wilcoxon")
    t = allf.tests
    np.testing.assert_allclose(t["p_wilcoxon_adj"], multipletests(t["p_wilcoxon"], method="fdr_bh")[1])
    assert (t["p_adj"] == t["p_wilcoxon_adj"]).all() and (t["test"] == "wilcoxon").all()
    lb = cell.leaderboard[cell.leaderboard.rare_count == "10"]
    assert lb.loc[lb.test_ece_mean.idxmin(), "test_ece_rank"] == 1        # lower ECE is better
    assert lb.loc[lb.test_auroc_mean.idxmax(), "test_auroc_rank"] == 1
    with pytest.raises(UserError, match="Unknown family 'dataset'"):
        stats.analyse(df, family="dataset")


# ---------------------------------------------------------------------------------------------------------------
# Leaderboard, ranks, dose-response
# ---------------------------------------------------------------------------------------------------------------

def test_leaderboard_numbers_match_pandas_and_scipy_t_intervals(analysis):
    df, a = analysis
    lb = a.leaderboard
    row = lb[(lb.dataset == "ds0") & (lb.rare_count == "10") & (lb.variant == "dcgan@2")].iloc[0]
    x = df[(df.dataset == "ds0") & (df.rare_count == 10) & (df.generator == "dcgan") & (df.synthetic_ratio == 2)]
    v = x.sort_values("seed")["test_thr_rare_sensitivity"].to_numpy()
    # issue 18: the t interval over seeds (scipy), clipped to [0, 1]; bootstraps over 6–8 seeds under-cover
    ci = sps.ttest_1samp(v, 0.0).confidence_interval()
    lo, hi = max(0.0, ci.low), min(1.0, ci.high)
    assert row["test_thr_rare_sensitivity_mean"] == pytest.approx(v.mean())
    assert row["test_thr_rare_sensitivity_std"] == pytest.approx(v.std(ddof=1))
    assert (row["test_thr_rare_sensitivity_ci_low"], row["test_thr_rare_sensitivity_ci_high"]) == pytest.approx(
        (lo, hi), rel=1e-12)
    assert row["test_thr_rare_sensitivity_ci_reliable"]                       # 6 seeds ≥ 5
    assert row["n_runs"] == 6 and row["compute_hours"] == pytest.approx(0.6) and row["effective_ratio"] == 2
    cell = lb[(lb.dataset == "ds0") & (lb.rare_count == "10")]
    assert sorted(cell["test_auroc_rank"]) == [1, 2, 3, 4, 5]
    assert cell.loc[cell.test_auroc_mean.idxmax(), "test_auroc_rank"] == 1
    assert (cell.loc[cell.generator == "none", "test_auroc_vs_baseline"] == "baseline").all()
    t = a.tests[(a.tests.metric == "test_auroc") & (a.tests.dataset == "ds0") & (a.tests.rare_count == "10")]
    merged = cell.merge(t, on=["generator", "synthetic_ratio"])
    assert (merged["test_auroc_vs_baseline"] == merged["verdict"]).all()


# Samples that used to give impossible intervals (issue 9): a sensitivity over 3 seeds printed as
# 0.341 ± 0.571 [-1.076, 1.759], a balanced accuracy over 2 seeds as [0.219, 1.457].
SENSITIVITY_3 = np.array([0.0, 0.024, 1.0])
BALANCED_2 = np.array([0.789, 0.887])


@pytest.mark.parametrize("values, metric", [(SENSITIVITY_3, "test_rare_sensitivity"),
                                            (BALANCED_2, "test_balanced_accuracy")])
def test_intervals_stay_inside_the_metric_range_and_few_seeds_are_marked(values, metric):
    """Issue 18: the t interval (it covers at small n; bootstraps over few seeds do not), clipped to [0, 1]."""
    n = len(values)
    lo_t, hi_t = stats.t_ci(values.mean(), values.std(ddof=1), n)
    assert lo_t < 0 or hi_t > 1                                     # the t-interval leaves [0, 1]
    lo, hi, how = stats.mean_intervals(np.zeros(n, int), values, 1, metric)
    assert how == "t, clipped to [0, 1]" and (lo[0], hi[0]) == pytest.approx((max(0, lo_t), min(1, hi_t)))
    assert 0 <= lo[0] <= values.mean() <= hi[0] <= 1
    df = make_records(datasets=("ds0",), rare_counts=(20,), seeds=n, variants=(("none", 0), ("dcgan", 1)))
    df.loc[df.generator == "dcgan", metric] = values
    a = stats.analyse(df, [metric])
    row = a.leaderboard[a.leaderboard.variant == "dcgan@1"].iloc[0]
    assert 0 <= row[f"{metric}_ci_low"] <= row[f"{metric}_ci_high"] <= 1
    assert (row[f"{metric}_ci_low"], row[f"{metric}_ci_high"]) == pytest.approx((lo[0], hi[0]))
    assert not row[f"{metric}_ci_reliable"]                             # fewer than 5 seeds


def test_unbounded_columns_keep_the_t_interval():
    x = np.array([3.0, 5.0, 10.0])
    lo, hi, how = stats.mean_intervals(np.zeros(3, int), x, 1, "wall_s")
    assert how == "t" and (lo[0], hi[0]) == pytest.approx(tuple(sps.t.interval(0.95, 2, x.mean(), sps.sem(x))))
    assert stats.metric_bounds("test_thr_rare_sensitivity") == (0.0, 1.0) and stats.metric_bounds("wall_s") is None


def test_rank_tests_run_over_datasets_with_cells_averaged():
    df = make_records(datasets=("ds0", "ds1", "ds2"), rare_counts=(10, 20), seeds=3, effects={"dcgan": 0.02})
    df = df[~((df.dataset == "ds2") & (df.generator == "class_weight"))]     # class_weight missing in 2 cells
    rr = stats.rank_analysis(stats.prepare_records(df, ["test_auroc"], "none")[0], "test_auroc", "none")
    assert rr["dropped_variants"] == ["class_weight"] and rr["dropped_blocks"] == []
    cells = df[df.generator != "class_weight"].groupby(["dataset", "rare_count", "generator", "synthetic_ratio"])[
        "test_auroc"].mean()
    means = cells.groupby(["dataset", "generator", "synthetic_ratio"]).mean().unstack(["generator", "synthetic_ratio"])
    ref = sps.friedmanchisquare(*means.to_numpy().T)
    s = rr["summary"]
    assert (s["n_blocks"], s["n_cells"], s["k"], s["control"], s["block"], s["tested"]) == (3, 6, 4, "none",
                                                                                             "dataset", True)
    assert s["chi2"] == pytest.approx(ref.statistic) and s["p_chi2"] == pytest.approx(ref.pvalue)
    assert s["cd"] == pytest.approx(stats.nemenyi_cd(4, 3))
    ranks = sps.rankdata(-means.to_numpy(), axis=1).mean(axis=0)
    got = rr["ranks"].set_index("variant")
    labels = [stats.variant_label(g, r) for g, r in means.columns]
    np.testing.assert_allclose(got.loc[labels, "avg_rank"].to_numpy(), ranks)
    cell_ranks = sps.rankdata(-cells.unstack(["generator", "synthetic_ratio"]).to_numpy(), axis=1).mean(axis=0)
    cell_cols = cells.unstack(["generator", "synthetic_ratio"]).columns
    np.testing.assert_allclose(got.loc[[stats.variant_label(g, r) for g, r in cell_cols], "avg_rank_cells"],
                               cell_ranks)
    assert got["p_holm"].notna().sum() == 3                                  # every variant but the control


def test_rank_tests_over_two_datasets_are_refused_but_ranks_are_shown():
    df = make_records(datasets=("ds0", "ds1"), rare_counts=(10, 20, 50), seeds=3, effects={"dcgan": 0.02})
    a = stats.analyse(df, ["test_auroc"])
    s = a.friedman.iloc[0]
    assert s["n_blocks"] == 2 and s["n_cells"] == 6 and not s["tested"]
    assert np.isnan(s["chi2"]) and np.isnan(s["p_F"]) and np.isnan(s["cd"])
    assert "a rank test needs at least 3" in s["note"]
    r = a.ranks.set_index("variant")
    assert r["p_holm"].isna().all() and r["p_vs_control"].isna().all()
    means = df.groupby(["dataset", "rare_count", "generator", "synthetic_ratio"])["test_auroc"].mean().groupby(
        ["dataset", "generator", "synthetic_ratio"]).mean().unstack(["generator", "synthetic_ratio"])
    expect = pd.Series(sps.rankdata(-means.to_numpy(), axis=1).mean(axis=0),
                       index=[stats.variant_label(g, rt) for g, rt in means.columns])
    np.testing.assert_allclose(r.loc[expect.index, "avg_rank"], expect)      # ranks still shown, descriptively
    assert a.rank_results["test_auroc"]["cliques"] == []


def test_complete_blocks_prefers_dropping_the_cheaper_side():
    m = pd.DataFrame({"a": [1, 2, 3, 4], "b": [1, 2, 3, 4], "c": [np.nan, 2, 3, 4]}, dtype=float)
    full, cols, rows = stats.complete_blocks(m)
    assert cols == [] and rows == [0] and full.shape == (3, 3)
    m.loc[[1, 2], "c"] = np.nan
    full, cols, rows = stats.complete_blocks(m)
    assert cols == ["c"] and rows == [] and full.shape == (4, 2)


RATIO_FORMS = (("none", 0), ("class_weight", 0), ("oversample", 1), ("dcgan", 1), ("dcgan", 2), ("dcgan", "balance"),
               ("dcgan", "real_percentage=50"))


@pytest.fixture(scope="module")
def ratio_forms():
    df = make_records(rare_counts=(10, 20, "all"), variants=RATIO_FORMS, slopes={"dcgan": 0.02}, seeds=5)
    return df, stats.analyse(df)


def test_dose_response_uses_the_effective_ratio_and_matches_per_seed_scipy_slopes(ratio_forms):
    """Issue 18: one OLS slope per seed (scipy linregress), t-tested over seeds on n − 1 df (ttest_1samp)."""
    df, a = ratio_forms
    coef = a.dose[a.dose.metric == "test_thr_balanced_accuracy"].set_index("generator")
    assert coef.loc["dcgan", "model"] == stats.DOSE_MODEL and coef.loc["dcgan", "scale"] == "log2"
    assert coef.loc["dcgan", "kind"] == "slope" and coef.loc["dcgan", "n_units"] == 10 and coef.loc["dcgan", "df"] == 9
    assert coef.loc["dcgan", "ratios"] == "1, 2, balance, real_percentage=50" and coef.loc["dcgan", "n_ratios"] == 4
    assert coef.loc["dcgan", "ci_low"] < 0.02 < coef.loc["dcgan", "ci_high"]
    assert "oversample" not in coef.index                      # one ratio form only: no slope
    # independently: x = log2(n_train_synthetic / n_rare_train); centre y and x within each (cell, method), average
    # per (dataset, seed, ratio form), fit the same model
    d = df[df.generator == "dcgan"].copy()
    d["x"] = np.log2(d["n_train_synthetic"] / d["n_rare_train"])
    for col, src in (("y", "test_thr_balanced_accuracy"), ("x", "x")):
        d[col] = d[src] - d.groupby(["dataset", "rare_count"])[src].transform("mean")
    agg = d.groupby(["dataset", "seed", d["synthetic_ratio"].astype(str)])[["y", "x"]].mean().reset_index()
    slopes = [sps.linregress(g["x"], g["y"]).slope for _, g in agg.groupby(["dataset", "seed"])]
    ref = sps.ttest_1samp(slopes, 0.0)
    assert coef.loc["dcgan", "slope"] == pytest.approx(np.mean(slopes), rel=1e-10)
    assert coef.loc["dcgan", "se"] == pytest.approx(np.std(slopes, ddof=1) / np.sqrt(len(slopes)), rel=1e-10)
    assert coef.loc["dcgan", "p"] == pytest.approx(ref.pvalue, rel=1e-8)
    ci = ref.confidence_interval()
    assert (coef.loc["dcgan", "ci_low"], coef.loc["dcgan", "ci_high"]) == pytest.approx((ci.low, ci.high), rel=1e-8)


def test_dose_curves_place_each_ratio_form_at_its_effective_ratio(ratio_forms):
    df, a = ratio_forms
    c = a.dose_curves[(a.dose_curves.metric == "test_auroc") & (a.dose_curves.dataset == "ds0")].set_index("variant")
    for label in ("balance", "real_percentage=50", 2):
        eff = [added_images(label, n) / n for n in (10, 20, N_RARE_ALL)]     # one job per rare count
        assert c.loc[stats.variant_label("dcgan", label), "effective_ratio"] == pytest.approx(
            2 ** np.mean(np.log2(eff)))
    assert c.loc["dcgan@balance", "effective_ratio"] > c.loc["dcgan@2", "effective_ratio"]
    assert c.loc["none", "effective_ratio"] == 0 and c.loc["class_weight", "effective_ratio"] == 0
    assert (c["ci_low"] >= 0).all() and (c["ci_high"] <= 1).all()


def test_every_ratio_form_flows_through_every_table(ratio_forms, tmp_path):
    df, a = ratio_forms
    path = tmp_path / "records.csv"
    df.to_csv(path, index=False)                                   # as the collector reads records.csv back
    from benchmark.collect import report

    back = stats.analyse(report.read_records(path))
    for table in (back.tests, back.leaderboard, back.hierarchical):
        assert {"dcgan@balance", "dcgan@real_percentage=50", "dcgan@2", "oversample@1"} <= set(table["variant"])
    assert set(back.ranks["variant"]) >= {"dcgan@balance", "dcgan@real_percentage=50"}
    lb = back.leaderboard
    row = lb[(lb.variant == "dcgan@balance") & (lb.rare_count == "10")].iloc[0]
    assert row["synthetic_ratio"] == "balance" and row["effective_ratio"] == pytest.approx((N_MAJORITY - 10) / 10)
    order = list(lb[(lb.dataset == "ds0") & (lb.rare_count == "10")]["variant"])
    assert order == ["none", "class_weight", "oversample@1", "dcgan@1", "dcgan@2", "dcgan@balance",
                     "dcgan@real_percentage=50"]
    t = back.tests
    assert t.loc[t.variant == "dcgan@balance", "effective_ratio"].max() == pytest.approx((N_MAJORITY - 10) / 10)
    pd.testing.assert_frame_equal(back.tests, a.tests)


@pytest.mark.parametrize("raw, label", [(2, "2"), (2.0, "2"), ("2.0", "2"), (0.5, "0.5"), ("", "0"), (None, "0"),
                                        (np.nan, "0"), ("balance", "balance"), (" balance ", "balance"),
                                        ("real_percentage=50.0", "real_percentage=50")])
def test_ratio_labels_are_canonical(raw, label):
    assert stats.ratio_label(raw) == label and stats.ratio_problem(label) is None


def test_invalid_ratio_forms_are_refused():
    df = make_records(datasets=("ds0",), rare_counts=(10,), seeds=2)
    df["synthetic_ratio"] = df["synthetic_ratio"].astype(object)
    df.loc[df.generator == "dcgan", "synthetic_ratio"] = ["balanced", "real_percentage=150", -1] * 2
    with pytest.raises(UserError, match=r"synthetic_ratio must be a number ≥ 0, 'balance' or 'real_percentage=P' "
                                        r"\(0 < P ≤ 100\); got \['-1', 'balanced', 'real_percentage=150'\]"):
        stats.prepare_records(df, ["test_auroc"], "none")


def test_effective_ratio_falls_back_to_the_counts_then_the_number():
    df = make_records(datasets=("ds0",), rare_counts=(10,), seeds=2, variants=(("none", 0), ("dcgan", "balance"),
                                                                                ("dcgan", 2)))
    old = df.drop(columns="effective_ratio")                      # records written before the column existed
    eff = stats.prepare_records(old, ["test_auroc"], "none")[0].groupby("synthetic_ratio")["effective_ratio"].first()
    assert eff.to_dict() == {"0": 0.0, "2": 2.0, "balance": (N_MAJORITY - 10) / 10}
    foreign = old.drop(columns=["n_train_synthetic", "n_rare_train"])   # a table without the counts
    prepared = stats.prepare_records(foreign, ["test_auroc"], "none")[0]
    eff = prepared.groupby("synthetic_ratio")["effective_ratio"].first()
    assert eff["2"] == 2.0 and eff["0"] == 0.0 and np.isnan(eff["balance"])
    a = stats.analyse(foreign, ["test_auroc"])
    assert any("have no effective ratio" in w and "balance" in w for w in a.warnings)


# ---------------------------------------------------------------------------------------------------------------
# Stale results are never mixed
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("column, old, what", [("dataset_sha256", "sha-old", "dataset content"),
                                                ("results_version", 0, "harness results version")])
def test_records_of_one_cell_from_other_data_or_results_versions_are_refused(column, old, what):
    df = make_records(datasets=("ds0", "ds1"), rare_counts=(10,), seeds=3)
    stale = (df.dataset == "ds1") & (df.generator == "dcgan") & (df.seed == 0)
    df.loc[stale, column] = old
    with pytest.raises(UserError) as exc:
        stats.analyse(df, ["test_auroc"])
    msg = str(exc.value)
    assert f"{what} ({column}) differs within cell dataset=ds1, image_size=28, rare_class=minority, rare_count=10, " \
           f"backbone=bb0, fold=0" in msg
    new = "sha-ds1" if column == "dataset_sha256" else "1"
    assert f"'{old}' (3 record(s), e.g. key " in msg and f"'{new}' (" in msg
    assert "Re-run the stale jobs" in msg and "collect only one version" in msg


def test_different_hashes_in_different_cells_and_tables_without_the_columns_are_fine():
    df = make_records(datasets=("ds0", "ds1"), rare_counts=(10, 20), seeds=2)
    df.loc[df.rare_count == 20, "dataset_sha256"] = "sha-other"     # another cell: not mixed within a cell
    stats.prepare_records(df, ["test_auroc"], "none")
    stats.prepare_records(df.drop(columns=["dataset_sha256", "results_version"]), ["test_auroc"], "none")
    mixed = df.copy()
    mixed["results_version"] = mixed["results_version"].astype(object)
    mixed.loc[mixed.index[:3], "results_version"] = np.nan          # a record that predates the column
    with pytest.raises(UserError, match="'\\(missing\\)' \\(3 record"):
        stats.prepare_records(mixed, ["test_auroc"], "none")


def test_dose_response_two_point_contrast_and_one_seed():
    """Issue 18: a method with two ratio forms is a two-point contrast; a single seed gets no test (a warning).
    Replaces the test of the mixed model's OLS fallback, which no longer exists."""
    df = make_records(datasets=("ds0", "ds1"), rare_counts=(10,), slopes={"dcgan": 0.02},
                      variants=(("none", 0), ("dcgan", 1), ("dcgan", 2), ("dcgan", 4), ("ddpm", 1), ("ddpm", 4)))
    prepared = stats.prepare_records(df, ["test_auroc"], "none")[0]
    coef = stats.dose_response(prepared, "test_auroc")["coef"].set_index("generator")
    assert coef.loc["dcgan", "kind"] == "slope" and coef.loc["ddpm", "kind"] == "two_point_contrast"
    w = df[df.generator == "ddpm"].pivot_table(index=["dataset", "seed"], columns="synthetic_ratio",
                                               values="test_auroc")
    assert coef.loc["ddpm", "contrast_high_low"] == pytest.approx((w[4] - w[1]).mean(), rel=1e-10)
    assert coef.loc["ddpm", "slope"] == pytest.approx((w[4] - w[1]).mean() / 2, rel=1e-10)   # log2(4) − log2(1)
    one = prepared[(prepared.seed == 0) & (prepared.dataset == "ds0")]
    res = stats.dose_response(one, "test_auroc")
    assert np.isnan(res["coef"]["p"]).all() and "one seed unit: no test" in res["warning"]


def test_audit_table_averages_audit_columns(analysis):
    df, a = analysis
    au = a.audit
    assert set(au["generator"]) == {"dcgan"} and len(au) == 4
    assert au["audit_fid"].tolist() == pytest.approx([32.5] * 4)   # 30 + mean(seed 0..5)


# ---------------------------------------------------------------------------------------------------------------
# Across the sweep: the hierarchical model
# ---------------------------------------------------------------------------------------------------------------

def paired_differences(df: pd.DataFrame, method: str, metric: str, baseline: str = "none") -> pd.DataFrame:
    """method − baseline per (cell, seed, fold), straight from the records table."""
    keys = ["dataset", "image_size", "rare_class", "rare_count", "backbone", "seed", "fold"]
    m = df[df.generator == method].set_index(keys)[metric]
    b = df[df.generator == baseline].set_index(keys)[metric]
    d = (m - b).dropna().rename("d").reset_index()
    d["cell"] = d["dataset"] + "|" + d["rare_count"].astype(str) + "|" + d["backbone"]
    d["cellseed"] = d["cell"] + "|" + d["seed"].astype(str)
    return d


def with_method_effects(df, method, sd_dataset, sd_cell, seed=7):
    """Add a dataset- and a cell-level random shift to one method's rows (the variance the model should find)."""
    rng = np.random.default_rng(seed)
    df = df.copy()
    rows = df.generator == method
    for col in ("test_auroc",):
        ds_eff = {d: rng.normal(0, sd_dataset) for d in df.dataset.unique()}
        cells = df[["dataset", "rare_count", "backbone"]].astype(str).agg("|".join, axis=1)
        cell_eff = {c: rng.normal(0, sd_cell) for c in cells.unique()}
        df.loc[rows, col] += df.loc[rows, "dataset"].map(ds_eff) + cells[rows].map(cell_eff)
    return df


def test_hierarchical_model_over_one_dataset_is_the_t_test_of_seed_means_over_cells():
    """Issue 18: seeds are crossed with cells (a seed's subsample and bank are shared by every cell of its
    dataset). One dataset, 8 cells × 6 seeds: the estimate is the t test of the 6 seed means over cells (5 df);
    the variance components are the cell × seed two-way ANOVA's (statsmodels anova_lm)."""
    from statsmodels.stats.anova import anova_lm

    df = make_records(datasets=("ds0",), rare_counts=(10, 20, 50, "all"), backbones=("bb0", "bb1"), seeds=6,
                      variants=(("none", 0), ("dcgan", 1)), effects={"dcgan": 0.02})
    df = with_method_effects(df, "dcgan", 0.0, 0.015)
    h = stats.analyse(df, ["test_auroc"]).hierarchical.set_index("variant").loc["dcgan@1"]
    d = paired_differences(df, "dcgan", "test_auroc")
    seed_means = d.groupby("seed")["d"].mean()
    ref = sps.ttest_1samp(seed_means, 0.0)
    ci = ref.confidence_interval()
    assert h["levels"] == "seed (crossed with cells)" and h["model"] == "t-test on seed means" and h["converged"]
    assert (h["n_datasets"], h["n_cells"], h["n_units"], h["n_obs"], h["df"]) == (1, 8, 6, 48, 5)
    assert h["estimate"] == pytest.approx(seed_means.mean(), rel=1e-12)
    assert h["se"] == pytest.approx(seed_means.std(ddof=1) / math.sqrt(6), rel=1e-12)
    assert (h["ci_low"], h["ci_high"]) == pytest.approx((ci.low, ci.high), rel=1e-10)
    assert h["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    tab = anova_lm(smf.ols("d ~ C(cell) + C(seed)", d).fit())
    ms = tab["sum_sq"] / tab["df"]
    assert h["var_residual"] == pytest.approx(ms["Residual"], rel=1e-9)
    assert h["var_cell"] == pytest.approx(max(0, (ms["C(cell)"] - ms["Residual"]) / 6), rel=1e-9, abs=1e-12)
    assert h["var_seed"] == pytest.approx(max(0, (ms["C(seed)"] - ms["Residual"]) / 8), rel=1e-9, abs=1e-12)
    assert "one dataset" in h["assumes"]


def test_hierarchical_model_with_few_datasets_fixes_the_dataset_and_uses_t():
    """3 datasets × 3 cells × 5 seeds: fewer than 5 datasets, so dataset is a fixed effect: the equal-weight mean
    of the datasets' seed means, with the pooled within-dataset variance on 3 × (5 − 1) = 12 df."""
    df = make_records(datasets=("ds0", "ds1", "ds2"), rare_counts=(10, 20, 50), seeds=5,
                      variants=(("none", 0), ("dcgan", 1)), effects={"dcgan": 0.02})
    df = with_method_effects(df, "dcgan", 0.01, 0.01)
    h = stats.analyse(df, ["test_auroc"]).hierarchical.set_index("variant").loc["dcgan@1"]
    d = paired_differences(df, "dcgan", "test_auroc")
    m = d.groupby(["dataset", "seed"])["d"].mean().unstack("seed").to_numpy()     # datasets × seeds
    est = m.mean(axis=1).mean()
    pooled = ((m - m.mean(axis=1, keepdims=True)) ** 2).sum() / (3 * 4)
    se = math.sqrt(pooled / 5 / 3)
    t = sps.t.ppf(0.975, 12)
    assert h["levels"] == "seed (crossed with cells) + dataset (fixed)" and h["df"] == 12
    assert h["n_obs"] == len(d) and h["n_datasets"] == 3 and h["n_cells"] == 9 and h["n_units"] == 15
    assert h["estimate"] == pytest.approx(est, rel=1e-10) and h["se"] == pytest.approx(se, rel=1e-10)
    assert (h["ci_low"], h["ci_high"]) == pytest.approx((est - t * se, est + t * se), rel=1e-10)
    assert h["p"] == pytest.approx(2 * sps.t.sf(abs(est / se), 12), rel=1e-8)
    assert "dataset is a fixed effect" in h["assumes"]
    five = make_records(datasets=tuple(f"ds{i}" for i in range(5)), rare_counts=(10, 20), seeds=4,
                        variants=(("none", 0), ("dcgan", 1)), effects={"dcgan": 0.02})
    h5 = stats.analyse(five, ["test_auroc"]).hierarchical.iloc[0]
    dm = paired_differences(five, "dcgan", "test_auroc").groupby("dataset")["d"].mean()
    ref = sps.ttest_1samp(dm, 0.0)
    assert h5["model"] == "t-test on dataset means (datasets random)" and h5["df"] == 4
    assert h5["estimate"] == pytest.approx(dm.mean()) and h5["p"] == pytest.approx(ref.pvalue, rel=1e-9)


def test_hierarchical_model_over_one_cell_is_the_one_sample_t_test():
    df = make_records(datasets=("ds0",), rare_counts=(10,), seeds=6, variants=(("none", 0), ("dcgan", 1)),
                      effects={"dcgan": 0.02})
    h = stats.analyse(df, ["test_auroc"]).hierarchical.iloc[0]
    d = paired_differences(df, "dcgan", "test_auroc")["d"]
    ref = sps.ttest_1samp(d, 0.0)
    ci = ref.confidence_interval()
    assert h["model"] == "t-test on seed means" and h["levels"] == "seed (crossed with cells)"
    assert h["estimate"] == pytest.approx(d.mean()) and h["p"] == pytest.approx(ref.pvalue)
    assert (h["ci_low"], h["ci_high"]) == pytest.approx((ci.low, ci.high))


def test_hierarchical_table_has_one_row_per_variant_and_metric(ratio_forms):
    df, a = ratio_forms
    h = a.hierarchical
    assert list(h.columns) == list(stats.HIERARCHICAL_COLUMNS)
    assert len(h) == 6 * len(stats.DEFAULT_METRICS) and set(h["baseline"]) == {"none"}
    assert (h["levels"] == "seed (crossed with cells) + dataset (fixed)").all() and h["converged"].all()
    assert (h["model"] == "OLS on seed means, dataset fixed").all()
    for metric, sub in h.groupby("metric"):
        np.testing.assert_allclose(sub["p_holm"], multipletests(sub["p"], method="holm")[1])
    row = h[(h.metric == "test_auroc") & (h.variant == "dcgan@balance")].iloc[0]
    assert row["verdict"] == "better" and row["ci_low"] > 0 and "only 2 datasets" in row["assumes"]


# ---------------------------------------------------------------------------------------------------------------
# Power under correction, metric names
# ---------------------------------------------------------------------------------------------------------------

def test_wilcoxon_under_holm_over_520_tests_needs_15_pairs_and_10_cannot_reach_alpha():
    """rare_sweep's shape: 2 datasets × 5 rare counts × 4 backbones = 40 cells, 13 variants besides `none` →
    520 comparisons of a metric in one Holm family; 10 seeds."""
    threshold = 0.05 / 520
    n = 1
    while 2 / 2 ** n >= threshold:                                      # smallest exact two-sided p = 2/2^n
        n += 1
    assert n == 15 and stats.wilcoxon_min_pairs(threshold) == n
    assert stats.wilcoxon_min_pairs(0.05) == 6 and stats.wilcoxon_min_pairs(0.05 / 13) == 10
    variants = (("none", 0), ("class_weight", 0)) + tuple(
        (g, r) for g in ("oversample", "dcgan", "ddpm") for r in (1, 2, 4, "balance"))
    df = make_records(datasets=("ds0", "ds1"), rare_counts=(10, 20, 50, 100, "all"),
                      backbones=("r18", "r50", "d121", "eb0"), variants=variants, seeds=10,
                      effects={"dcgan": 0.05, "ddpm": 0.05})
    a = stats.analyse(df, ["test_auroc"])
    t = a.tests
    assert len(t) == 520 and (t["family_size"] == 520).all()
    assert np.allclose(t["alpha_family"], threshold) and (t["min_pairs_wilcoxon"] == 15).all()
    assert not t["wilcoxon_can_reach_alpha"].any()
    clean = t[t["wins"] == 10]                                          # every pair better: the smallest p there is
    assert len(clean) and (clean["p_wilcoxon"] == 2 / 1024).all() and (clean["p_wilcoxon"] < 0.05).all()
    assert (clean["p_wilcoxon_adj"] >= 0.05).all() and clean["note"].str.contains("needs 15").all()
    ps = stats.power_summary(t).iloc[0]
    assert (ps["family_size"], ps["min_pairs_wilcoxon"], ps["n_cannot_reach"]) == (520, 15, 520)
    assert any("cannot reach p<0.05 after holm correction in 520 of 520" in w and "at least 15" in w
               for w in a.warnings)
    cell = stats.paired_tests(a.records, ["test_auroc"], "none", family="cell")[0]
    assert (cell["family_size"] == 13).all() and (cell["min_pairs_wilcoxon"] == 10).all()
    assert cell.loc[cell["wins"] == 10, "wilcoxon_can_reach_alpha"].all()     # 2/1024 < 0.05/13
    assert cell["mde_dz"].iloc[0] == pytest.approx(TTestPower().solve_power(nobs=10, alpha=0.05 / 13, power=0.8))


def test_metric_names_and_defaults():
    for name in ("thr_balanced_accuracy", "thr_rare_sensitivity", "thr_rare_specificity",
                 "rare_sensitivity_at_90spec", "threshold"):
        assert name in stats.METRICS and f"test_{name}" in stats.KNOWN_METRIC_COLUMNS
    # issue 18: arg-max balanced accuracy left the defaults (it rewards a prior shift); it stays in the records
    assert stats.DEFAULT_METRICS == ("test_auroc", "test_thr_balanced_accuracy", "test_thr_rare_sensitivity")
    assert "balanced_accuracy" in stats.ARGMAX_METRICS and "test_balanced_accuracy" in stats.KNOWN_METRIC_COLUMNS
    old = make_records(datasets=("ds0",), rare_counts=(10,), seeds=3).drop(
        columns=["test_thr_balanced_accuracy", "test_thr_rare_sensitivity"])   # records from before the thr_ metrics
    a = stats.analyse(old)
    assert a.metrics == ["test_auroc"]
    assert any("default metric(s) test_thr_balanced_accuracy, test_thr_rare_sensitivity not in" in w
               for w in a.warnings)
    with pytest.raises(UserError, match="missing the metric column\\(s\\) test_thr_rare_sensitivity"):
        stats.analyse(old, ["test_auroc", "test_thr_rare_sensitivity"])


def test_rare_sweep_description_states_the_seeds_wilcoxon_needs_for_the_grid_as_configured():
    """The grid's own argument for its seed count must hold under Holm over the comparisons it configures."""
    import yaml

    from benchmark.plan.grid import expand, load_grid

    grid = load_grid("rare_sweep", None)
    jobs = expand(grid)
    comps = {(j.dataset, j.image_size, j.rare_class, j.rare_count, j.backbone, j.generator,
              stats.ratio_label(j.synthetic_ratio)) for j in jobs if j.generator != "none"}
    per_cell = pd.Series([c[:5] for c in comps]).value_counts().max()
    seeds = len({j.seed for j in jobs})
    m = len(comps)
    need = stats.wilcoxon_min_pairs(0.05 / m)
    assert need > seeds                                   # 10 seeds cannot reach α with the metric family
    path = Path(__file__).resolve().parents[1] / "registry" / "grids" / "rare_sweep.yaml"
    text = " ".join(yaml.safe_load(path.read_text())["description"].split())
    assert f"Holm over the {m} comparisons of one metric" in text and f"only from n = {need} seeds" in text
    assert f"from n = {stats.wilcoxon_min_pairs(0.05 / per_cell)} within per-cell families" in text
    assert f"at most {per_cell} comparisons" in text and f"{seeds} paired seeds" in text


def test_gap_closed_is_the_method_gain_over_the_real_data_gain():
    """dcgan gains 0.02, real_extra 0.08 at the same ratio over `none`: dcgan closes a quarter of the gap; the
    leaderboard carries the fraction and a cell where real images do not help leaves it undefined."""
    df = make_records(datasets=("ds0",), rare_counts=(10,), variants=(("none", 0), ("dcgan", 1), ("real_extra", 1)),
                      seeds=8, effects={"dcgan": 0.02, "real_extra": 0.08}, noise=0.0)
    a = stats.analyse(df, metrics=["test_auroc"])
    row = a.gap[(a.gap["variant"] == "dcgan@1")].iloc[0]
    by = df.groupby(["generator", "seed"])["test_auroc"].first().unstack(0)
    gain, upper = (by["dcgan"] - by["none"]).mean(), (by["real_extra"] - by["none"]).mean()
    assert row["gain"] == pytest.approx(gain) and row["upper_gain"] == pytest.approx(upper)
    assert row["gap_closed"] == pytest.approx(gain / upper) and row["gap_closed"] == pytest.approx(0.25, abs=1e-9)
    board = a.leaderboard.set_index("variant")
    assert board.loc["dcgan@1", "test_auroc_gap_closed"] == pytest.approx(0.25, abs=1e-9)
    harm = make_records(datasets=("ds0",), rare_counts=(10,), variants=(("none", 0), ("dcgan", 1), ("real_extra", 1)),
                        seeds=8, effects={"dcgan": 0.02, "real_extra": -0.01}, noise=0.0)
    g = stats.analyse(harm, metrics=["test_auroc"]).gap.iloc[0]
    assert np.isnan(g["gap_closed"]) and "undefined" in g["note"]
