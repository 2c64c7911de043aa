"""benchmark.collect.fidelity_utility: the paired gain over duplication, Spearman's ρ against scipy, the bootstrap
interval's coverage by simulation, the few-banks rule, and the collector's CSV and report section."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from benchmark import stats
from benchmark.collect import fidelity_utility as fu
from benchmark.collect import report
from tests.test_stats import make_records

VARIANTS = (("none", 0), ("oversample", 1), ("oversample", 2), ("dcgan", 1), ("dcgan", 2), ("ddpm", 1), ("ddpm", 2))
METRICS = ["test_auroc", "test_ece"]


def planted(seeds=6, datasets=("ds0", "ds1"), generators=("dcgan", "ddpm"), slope=-2.0, seed=0) -> pd.DataFrame:
    """Records where each bank (dataset, generator, seed) has an in-domain KID and its jobs gain
    ``slope`` × KID + noise in AUROC over the oversample job of the same cell, seed and ratio."""
    rng = np.random.default_rng(seed)
    variants = tuple(v for v in VARIANTS if v[0] in ("none", "oversample", *generators))
    df = make_records(datasets=datasets, rare_counts=(20,), variants=variants, seeds=seeds, seed=seed)
    df = df.drop(columns=[c for c in df.columns if c.startswith("audit_")])
    dup = df[df["generator"] == "oversample"].set_index(["dataset", "synthetic_ratio", "seed"])
    banks = df[df["generator"].isin(generators)].groupby(["dataset", "generator", "seed"]).groups
    for (ds, gen, s), idx in banks.items():
        kid = rng.uniform(0.0, 0.05)
        df.loc[idx, "audit_domain_kid"] = kid
        df.loc[idx, "audit_copy_rate"] = 0.0
        for i in idx:
            twin = dup.loc[(ds, df.at[i, "synthetic_ratio"], s)]
            df.at[i, "test_auroc"] = twin["test_auroc"] + slope * kid + rng.normal(0, 0.01)
    return df


def independent_gains(df, metric, sign=1.0):
    """{(dataset, generator, ratio, seed): gain} by a plain loop over the rows."""
    out = {}
    for _, r in df[df["generator"].isin(["dcgan", "ddpm"])].iterrows():
        twin = df[(df["generator"] == "oversample") & (df["dataset"] == r["dataset"]) & (df["seed"] == r["seed"])
                  & (df["synthetic_ratio"] == r["synthetic_ratio"])]
        out[(r["dataset"], r["generator"], r["synthetic_ratio"], r["seed"])] = sign * (r[metric] - twin[metric].item())
    return out


def test_gains_are_paired_with_duplication_at_the_same_ratio_cell_and_seed():
    df = planted()
    pairs = fu.paired_gains(df, METRICS)
    assert len(pairs) == 2 * 2 * 2 * 6  # datasets × generators × ratios × seeds
    for metric, sign in (("test_auroc", 1.0), ("test_ece", -1.0)):  # ECE: lower is better, the gain is negated
        expected = independent_gains(df, metric, sign)
        got = {(r.dataset, r.generator, r.synthetic_ratio, r.seed): getattr(r, f"gain_{metric}")
               for r in pairs.itertuples()}
        assert got.keys() == expected.keys()
        np.testing.assert_allclose([got[k] for k in expected], list(expected.values()), rtol=0, atol=1e-12)
    assert pairs["bank"].nunique() == 2 * 2 * 6


def test_rho_matches_scipy_spearmanr_and_finds_the_planted_relation():
    df = planted()
    table = fu.fidelity_utility(df, METRICS, n_boot=999)
    row = table[(table["metric"] == "test_auroc") & (table["audit_metric"] == "audit_domain_kid")
                & (table["scope"] == fu.ALL_RATIOS)].iloc[0]
    banks = df[df["generator"].isin(["dcgan", "ddpm"])].copy()
    gains = independent_gains(df, "test_auroc")
    banks["gain"] = [gains[(r.dataset, r.generator, r.synthetic_ratio, r.seed)] for r in banks.itertuples()]
    per_bank = banks.groupby(["dataset", "generator", "seed"]).agg(kid=("audit_domain_kid", "first"),
                                                                    gain=("gain", "mean"))
    rho, p = sps.spearmanr(per_bank["kid"], per_bank["gain"])
    assert row["n_banks"] == 24 and row["n_pairs"] == 48 and row["n_datasets"] == 2
    assert row["rho"] == pytest.approx(rho, abs=1e-12) and row["p_spearman"] == pytest.approx(p, rel=1e-9)
    assert row["rho"] < -0.5 and row["ci_low"] < row["rho"] < row["ci_high"] < 0
    assert row["reading"] == "better fidelity, larger gain"  # lower KID (better), larger gain
    assert set(table["scope"]) == {fu.ALL_RATIOS, "ratio 1", "ratio 2"}
    copy = table[table["audit_metric"] == "audit_copy_rate"]
    assert copy["rho"].isna().all() and copy["note"].str.contains("same for all").all()
    ece = table[(table["metric"] == "test_ece") & (table["scope"] == fu.ALL_RATIOS)
                & (table["audit_metric"] == "audit_domain_kid")].iloc[0]
    assert ece["reading"] in ("no clear relation", "better fidelity, larger gain", "better fidelity, smaller gain")


def test_vectorised_spearman_equals_scipy_with_ties():
    rng = np.random.default_rng(5)
    x = rng.integers(0, 5, (7, 12)).astype(float)
    y = rng.normal(size=(7, 12))
    expected = [sps.spearmanr(a, b)[0] for a, b in zip(x, y)]
    np.testing.assert_allclose(fu.spearman(x, y), expected, rtol=1e-12)


def test_the_bootstrap_interval_covers_the_true_rho_about_as_often_as_it_claims():
    rho, n, sims = 0.6, 25, 200
    true_spearman = 6 / math.pi * math.asin(rho / 2)  # Spearman's ρ of a bivariate normal with correlation ρ
    rng = np.random.default_rng(11)
    hits = 0
    for s in range(sims):
        xy = rng.multivariate_normal([0, 0], [[1, rho], [rho, 1]], size=n)
        low, high, method = fu.spearman_interval(xy[:, 0], xy[:, 1], n_resamples=500, seed=s)
        assert method == "BCa"
        hits += low <= true_spearman <= high
    assert 0.86 <= hits / sims <= 0.99


def test_too_few_banks_say_so_plainly():
    two = fu.fidelity_utility(planted(seeds=2, datasets=("ds0",), generators=("dcgan",)), ["test_auroc"])
    assert (two["n_banks"] == 2).all() and two["rho"].isna().all()
    assert two["reading"].eq("too few banks to tell").all() and two["note"].str.contains("too few banks").all()
    four = fu.fidelity_utility(planted(seeds=4, datasets=("ds0",), generators=("dcgan",)), ["test_auroc"])
    kid = four[(four["audit_metric"] == "audit_domain_kid") & (four["scope"] == fu.ALL_RATIOS)].iloc[0]
    assert kid["n_banks"] == 4 and np.isfinite(kid["rho"]) and math.isnan(kid["ci_low"])
    assert kid["reading"] == "too few banks to tell" and "interval needs ≥ 6" in kid["note"]


def test_an_external_bank_counts_once_however_many_seeds_used_it():
    df = planted(seeds=3, datasets=("ds0",), generators=("dcgan",))
    df.loc[df["generator"] == "dcgan", "audit_audit_key"] = "abc123"
    pairs = fu.paired_gains(df, ["test_auroc"])
    assert pairs["bank"].nunique() == 1 and len(pairs) == 6


def test_no_pairs_give_an_empty_table_with_its_columns():
    df = make_records(seeds=3)  # dcgan with audit columns but no oversample twin
    table = fu.fidelity_utility(df, ["test_auroc"])
    assert table.empty and list(table.columns) == list(fu.COLUMNS)


@pytest.mark.parametrize("kwargs, phrase", [({"seeds": 6}, "better fidelity, larger gain"),
                                            ({"seeds": 2, "generators": ("dcgan",)}, "Too few banks to tell")])
def test_the_collector_writes_the_csv_and_the_report_section(tmp_path, kwargs, phrase):
    a = stats.analyse(planted(**kwargs), n_boot=200)
    paths = report.write_all(a, tmp_path, plots=False)
    csv = pd.read_csv(paths["stats/fidelity_utility.csv"])
    assert list(csv.columns) == list(fu.COLUMNS) and len(csv)
    text = (tmp_path / "report.md").read_text()
    assert "## Does fidelity predict utility?" in text and phrase in text


def test_cells_of_different_budgets_are_never_pooled():
    """The same banks trained under two budgets: one scope per budget, each ρ equal to the table of that budget's
    records alone (the scope names the budget)."""
    a, b = planted(seed=0), planted(seed=1, slope=2.0)
    df = pd.concat([a.assign(budget="epochs=3", key=[f"e-{k}" for k in a["key"]]),
                    b.assign(budget="match_real_epochs=20", key=[f"m-{k}" for k in b["key"]])], ignore_index=True)
    table = fu.fidelity_utility(df, ["test_auroc"], n_boot=199)
    kid = table[table["audit_metric"] == "audit_domain_kid"].set_index("scope")
    assert set(kid.index) == {f"{s}, {budget}" for s in (fu.ALL_RATIOS, "ratio 1", "ratio 2")
                              for budget in ("epochs=3", "match_real_epochs=20")}
    for budget, alone in (("epochs=3", a), ("match_real_epochs=20", b)):
        own = fu.fidelity_utility(alone, ["test_auroc"], n_boot=199)
        own = own[own["audit_metric"] == "audit_domain_kid"].set_index("scope")
        assert kid.loc[f"{fu.ALL_RATIOS}, {budget}", "rho"] == pytest.approx(own.loc[fu.ALL_RATIOS, "rho"])
        assert kid.loc[f"{fu.ALL_RATIOS}, {budget}", "n_banks"] == own.loc[fu.ALL_RATIOS, "n_banks"] == 24
    assert kid.loc[f"{fu.ALL_RATIOS}, epochs=3", "rho"] < 0 < kid.loc[f"{fu.ALL_RATIOS}, match_real_epochs=20", "rho"]
