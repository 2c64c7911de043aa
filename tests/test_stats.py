"""benchmark.stats: every statistic against scipy / statsmodels computed here, plus Demšar (2006)'s worked examples.

Reference: J. Demšar, "Statistical Comparisons of Classifiers over Multiple Data Sets", JMLR 7:1–30, 2006.
Table 2 (AUC of C4.5 vs C4.5+m on 14 data sets; Wilcoxon example) and Table 6 (four C4.5 variants; Friedman,
Iman–Davenport, Nemenyi and Holm example), transcribed below.
"""

import itertools
import math
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.stats as sps
import statsmodels.formula.api as smf
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower

from benchmark import stats
from benchmark.errors import UserError


def make_records(datasets=("ds0", "ds1"), rare_counts=(10, "all"), backbones=("bb0",),
                 variants=(("none", 0), ("class_weight", 0), ("dcgan", 1), ("dcgan", 2), ("dcgan", 4)),
                 seeds=6, effects=None, slopes=None, noise=0.01, seed=0) -> pd.DataFrame:
    """A records table like records.csv: a cell effect, a shared seed effect (what makes pairing pay off), a
    method effect and a slope per doubling of the ratio."""
    rng = np.random.default_rng(seed)
    effects, slopes = effects or {}, slopes or {}
    rows = []
    for ds, rc, bb in itertools.product(datasets, rare_counts, backbones):
        cell = 0.75 + rng.normal(0, 0.03)
        seed_eff = rng.normal(0, 0.02, seeds)
        for gen, ratio in variants:
            for s in range(seeds):
                v = cell + seed_eff[s] + effects.get(gen, 0.0) + slopes.get(gen, 0.0) * (
                    math.log2(ratio) if ratio > 0 else 0.0)
                row = {"key": f"k{len(rows)}", "name": f"{ds}-{rc}-{gen}-{ratio}-{bb}-{s}", "grid": "t",
                       "dataset": ds, "image_size": 28, "rare_class": "minority", "rare_count": rc,
                       "generator": gen, "synthetic_ratio": ratio, "backbone": bb, "seed": s}
                for split in ("val", "test"):
                    row[f"{split}_auroc"] = v + rng.normal(0, noise)
                    row[f"{split}_balanced_accuracy"] = v - 0.1 + rng.normal(0, noise)
                    row[f"{split}_rare_sensitivity"] = v - 0.2 + rng.normal(0, 2 * noise)
                    row[f"{split}_ece"] = 0.05 + rng.normal(0, 0.005)
                row.update(wall_s=360.0, compute_hours=0.1, n_train_real=500, n_train_synthetic=int(100 * ratio))
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

def test_bootstrap_ci_is_the_documented_deterministic_percentile_interval():
    x = np.random.default_rng(4).normal(0.01, 0.02, 10)
    lo, hi = stats.bootstrap_ci(x, n_boot=2000, seed=0)
    idx = np.random.default_rng([0, 10]).integers(0, 10, size=(2000, 10))
    means = x[idx].mean(axis=1)
    assert (lo, hi) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])), rel=1e-12)
    assert stats.bootstrap_ci(x) == (lo, hi)
    ref = sps.bootstrap((x,), np.mean, method="percentile", n_resamples=20000, rng=1).confidence_interval
    assert lo == pytest.approx(ref.low, abs=0.15 * (hi - lo)) and hi == pytest.approx(ref.high, abs=0.15 * (hi - lo))
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
    # 4 cells × 4 non-baseline variants × 3 metrics
    assert len(t) == 4 * 4 * 3 and set(t["baseline_ratio"]) == {0.0}
    row = t[(t.metric == "test_balanced_accuracy") & (t.dataset == "ds1") & (t.rare_count == "all")
            & (t.variant == "dcgan@4")].iloc[0]
    cell = df[(df.dataset == "ds1") & (df.rare_count == "all")]
    m = cell[cell.generator.eq("dcgan") & cell.synthetic_ratio.eq(4)].sort_values("seed")["test_balanced_accuracy"]
    b = cell[cell.generator.eq("none")].sort_values("seed")["test_balanced_accuracy"]
    ref = sps.ttest_rel(m.to_numpy(), b.to_numpy())
    assert row["n_pairs"] == 6 and row["p_t"] == pytest.approx(ref.pvalue)
    assert row["p_wilcoxon"] == pytest.approx(sps.wilcoxon(m.to_numpy() - b.to_numpy()).pvalue)
    fam = t[t.metric == "test_balanced_accuracy"]
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
    mm = a.seed_mismatch[a.seed_mismatch.synthetic_ratio == 2].iloc[0]
    assert (mm["only_method"], mm["only_baseline"], mm["n_common"]) == ("5", "0", 4)
    cw = a.tests[a.tests.variant == "class_weight"].iloc[0]
    assert (cw["n_pairs"], cw["n_only_baseline"], cw["n_only_method"]) == (5, 0, 1)


def test_baseline_with_several_ratios_pairs_on_the_same_ratio():
    variants = (("none", 0), ("oversample", 1), ("oversample", 2), ("dcgan", 1), ("dcgan", 2), ("dcgan", 4))
    a = stats.analyse(make_records(datasets=("ds0",), rare_counts=(10,), variants=variants), ["test_auroc"],
                      baseline="oversample")
    pairs = set(zip(a.tests["variant"], a.tests["baseline_ratio"]))
    # dcgan pairs on its own ratio; `none` (one ratio) is compared with every oversample ratio
    assert pairs == {("dcgan@1", 1.0), ("dcgan@2", 2.0), ("none", 1.0), ("none", 2.0)}
    miss = a.missing_baseline
    assert len(miss) == 1 and miss.iloc[0]["synthetic_ratio"] == 4
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

def test_leaderboard_numbers_match_pandas_and_scipy(analysis):
    df, a = analysis
    lb = a.leaderboard
    row = lb[(lb.dataset == "ds0") & (lb.rare_count == "10") & (lb.variant == "dcgan@2")].iloc[0]
    x = df[(df.dataset == "ds0") & (df.rare_count == 10) & (df.generator == "dcgan") & (df.synthetic_ratio == 2)]
    v = x["test_rare_sensitivity"]
    lo, hi = sps.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=sps.sem(v))
    assert row["test_rare_sensitivity_mean"] == pytest.approx(v.mean())
    assert row["test_rare_sensitivity_std"] == pytest.approx(v.std(ddof=1))
    assert (row["test_rare_sensitivity_ci_low"], row["test_rare_sensitivity_ci_high"]) == pytest.approx((lo, hi))
    assert row["n_runs"] == 6 and row["compute_hours"] == pytest.approx(0.6)
    cell = lb[(lb.dataset == "ds0") & (lb.rare_count == "10")]
    assert sorted(cell["test_auroc_rank"]) == [1, 2, 3, 4, 5]
    assert cell.loc[cell.test_auroc_mean.idxmax(), "test_auroc_rank"] == 1
    assert (cell.loc[cell.generator == "none", "test_auroc_vs_baseline"] == "baseline").all()
    t = a.tests[(a.tests.metric == "test_auroc") & (a.tests.dataset == "ds0") & (a.tests.rare_count == "10")]
    merged = cell.merge(t, on=["generator", "synthetic_ratio"])
    assert (merged["test_auroc_vs_baseline"] == merged["verdict"]).all()


def test_rank_analysis_matches_scipy_and_drops_incomplete_variants():
    df = make_records(datasets=("ds0", "ds1", "ds2"), rare_counts=(10, 20), seeds=3, effects={"dcgan": 0.02})
    df = df[~((df.dataset == "ds2") & (df.generator == "class_weight"))]     # class_weight missing in 2 blocks
    rr = stats.rank_analysis(stats.prepare_records(df, ["test_auroc"], "none")[0], "test_auroc", "none")
    assert rr["dropped_variants"] == ["class_weight"] and rr["dropped_blocks"] == []
    means = df[df.generator != "class_weight"].groupby(["dataset", "rare_count", "generator", "synthetic_ratio"])[
        "test_auroc"].mean().unstack(["generator", "synthetic_ratio"])
    ref = sps.friedmanchisquare(*means.to_numpy().T)
    s = rr["summary"]
    assert (s["n_blocks"], s["k"], s["control"]) == (6, 4, "none")
    assert s["chi2"] == pytest.approx(ref.statistic) and s["p_chi2"] == pytest.approx(ref.pvalue)
    ranks = sps.rankdata(-means.to_numpy(), axis=1).mean(axis=0)
    got = rr["ranks"].set_index("variant")["avg_rank"]
    labels = [stats.variant_label(g, r) for g, r in means.columns]
    np.testing.assert_allclose(got[labels].to_numpy(), ranks)


def test_complete_blocks_prefers_dropping_the_cheaper_side():
    m = pd.DataFrame({"a": [1, 2, 3, 4], "b": [1, 2, 3, 4], "c": [np.nan, 2, 3, 4]}, dtype=float)
    full, cols, rows = stats.complete_blocks(m)
    assert cols == [] and rows == [0] and full.shape == (3, 3)
    m.loc[[1, 2], "c"] = np.nan
    full, cols, rows = stats.complete_blocks(m)
    assert cols == ["c"] and rows == [] and full.shape == (4, 2)


def test_dose_response_recovers_the_slope_and_matches_statsmodels(analysis):
    df, a = analysis
    coef = a.dose[a.dose.metric == "test_balanced_accuracy"].set_index("generator")
    assert coef.loc["dcgan", "model"] == "mixedlm" and coef.loc["dcgan", "scale"] == "log2"
    assert coef.loc["dcgan", "ci_low"] < 0.01 < coef.loc["dcgan", "ci_high"]
    # independently: centre by cell, average per (dataset, seed, ratio), fit the same model
    d = df[df.generator == "dcgan"].copy()
    d["y"] = d["test_balanced_accuracy"] - d.groupby(["dataset", "rare_count"])["test_balanced_accuracy"].transform(
        "mean")
    agg = d.groupby(["dataset", "seed", "synthetic_ratio"])["y"].mean().reset_index()
    agg["x"] = np.log2(agg["synthetic_ratio"])
    agg["g"] = agg["dataset"] + "|" + agg["seed"].astype(str)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = smf.mixedlm("y ~ 1 + x", agg, groups="g").fit(reml=True, method=["powell", "lbfgs"])
    assert coef.loc["dcgan", "slope"] == pytest.approx(fit.params["x"], rel=1e-4)
    assert coef.loc["dcgan", "se"] == pytest.approx(fit.bse["x"], rel=1e-3)


def test_dose_response_falls_back_to_ols_with_a_warning(monkeypatch):
    import statsmodels.regression.mixed_linear_model as mlm

    def no_convergence(self, *args, **kwargs):
        raise np.linalg.LinAlgError("Singular matrix")

    monkeypatch.setattr(mlm.MixedLM, "fit", no_convergence)
    df = make_records(datasets=("ds0", "ds1"), rare_counts=(10,), slopes={"dcgan": 0.02},
                      variants=(("none", 0), ("dcgan", 1), ("dcgan", 2), ("dcgan", 4), ("ddpm", 1), ("ddpm", 4)))
    prepared = stats.prepare_records(df, ["test_auroc"], "none")[0]
    res = stats.dose_response(prepared, "test_auroc")
    assert res["model"] == "ols" and "did not converge (Singular matrix); fell back to OLS" in res["warning"]
    data = res["data"]
    clusters = pd.factorize(data["seed_in_dataset"])[0]
    ref = smf.ols("y ~ 0 + C(generator) + C(generator):x", data).fit(cov_type="cluster",
                                                                    cov_kwds={"groups": clusters})
    coef = res["coef"].set_index("generator")
    assert coef.loc["dcgan", "slope"] == pytest.approx(ref.params["C(generator)[dcgan]:x"])
    assert coef.loc["ddpm", "se"] == pytest.approx(ref.bse["C(generator)[ddpm]:x"])
    assert set(coef["model"]) == {"ols"}


def test_audit_table_averages_audit_columns(analysis):
    df, a = analysis
    au = a.audit
    assert set(au["generator"]) == {"dcgan"} and len(au) == 4
    assert au["audit_fid"].tolist() == pytest.approx([32.5] * 4)   # 30 + mean(seed 0..5)
