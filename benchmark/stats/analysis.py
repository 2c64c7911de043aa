"""Everything at once: :func:`analyse` validates a records table and computes every statistic into an
:class:`Analysis`; :func:`power_summary` says, per metric, what the correction leaves the Wilcoxon test able to reach."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from benchmark.stats.answer import ANSWER_COLUMNS, DUPLICATION, answer_table, margin_for
from benchmark.stats.dose import dose_curves, dose_response
from benchmark.stats.hierarchical import HIERARCHICAL_COLUMNS, hierarchical_tests
from benchmark.stats.inference import N_BOOT, POWER, wilcoxon_min_pairs
from benchmark.stats.paired import paired_tests
from benchmark.stats.prepare import nan_metric_rows, prepare_records
from benchmark.stats.ranks import rank_analysis
from benchmark.stats.tables import GAP_COLUMNS, audit_table, gap_closed, leaderboard
from benchmark.stats.vocabulary import CELL, DEFAULT_METRICS, VARIANT, ratio_sort_key


@dataclass
class Analysis:
    records: pd.DataFrame
    metrics: list
    baseline: str
    options: dict
    tests: pd.DataFrame
    missing_baseline: pd.DataFrame
    seed_mismatch: pd.DataFrame
    nan_rows: pd.DataFrame
    duplicates: pd.DataFrame
    leaderboard: pd.DataFrame
    friedman: pd.DataFrame
    ranks: pd.DataFrame
    rank_results: dict
    dose: pd.DataFrame
    dose_curves: pd.DataFrame
    audit: pd.DataFrame
    warnings: list = field(default_factory=list)
    hierarchical: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(HIERARCHICAL_COLUMNS)))
    gap: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(GAP_COLUMNS)))
    # every image source against `none` and against duplication, with TOST against a margin (stats.answer)
    answer: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(ANSWER_COLUMNS)))


def _default_metrics_present(records: pd.DataFrame, metrics) -> tuple[list, list]:
    """With the default metrics, leave out those the records lack (records written before the harness computed
    them) rather than refuse the table; returns (metrics to use, left out). Explicit metrics are never dropped."""
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    if tuple(m.strip() for m in names) != DEFAULT_METRICS or not isinstance(records, pd.DataFrame):
        return names, []
    present = [m for m in DEFAULT_METRICS if m in records.columns and pd.to_numeric(
        records[m], errors="coerce").notna().any()]
    return (present, [m for m in DEFAULT_METRICS if m not in present]) if present else (names, [])


def power_summary(tests: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Per metric: the family sizes of its comparisons, the corrected threshold the smallest p must pass (α/m),
    the fewest non-zero pairs at which an exact two-sided Wilcoxon test can pass it, the pairs the comparisons
    have, and how many of them cannot reach significance."""
    cols = ["metric", "family_size", "alpha_family", "min_pairs_wilcoxon", "median_pairs", "max_pairs",
            "n_comparisons", "n_cannot_reach"]
    t = tests[tests["n_pairs"] >= 2]
    if t.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for m, sub in t.groupby("metric", sort=False):
        fam = int(sub["family_size"].max())
        rows.append({"metric": m, "family_size": fam, "alpha_family": alpha / fam if fam else np.nan,
                     "min_pairs_wilcoxon": wilcoxon_min_pairs(alpha / fam) if fam else np.nan,
                     "median_pairs": float(sub["n_pairs"].median()), "max_pairs": int(sub["n_pairs"].max()),
                     "n_comparisons": len(sub),
                     "n_cannot_reach": int((~sub["wilcoxon_can_reach_alpha"].astype(bool)).sum())})
    return pd.DataFrame(rows, columns=cols)


def _data_notes(df, duplicates, nan_rows, pairing, mismatch, baseline: str) -> list[str]:
    """Warnings about the records: duplicates, NaN values, unknown effective ratios, missing baselines, seeds."""
    notes = []
    if len(duplicates):
        notes.append(f"{len(duplicates)} duplicate record(s) (same cell, method, ratio, seed, fold) ignored; the "
                     f"first of each was kept (stats/duplicates.csv)")
    if len(nan_rows):
        n_rec = nan_rows.drop(columns="metric").drop_duplicates().shape[0]
        notes.append(f"{len(nan_rows)} NaN metric value(s) in {n_rec} record(s) excluded from the statistics "
                     f"(stats/nan_metrics.csv)")
    unknown_eff = df["effective_ratio"].isna()
    if unknown_eff.any():
        labels = sorted(df.loc[unknown_eff, "synthetic_ratio"].unique(), key=ratio_sort_key)
        notes.append(f"{int(unknown_eff.sum())} record(s) (ratio {', '.join(labels)}) have no effective ratio (no "
                     f"effective_ratio, n_train_synthetic or n_rare_train column): left out of the dose-response")
    if len(pairing.missing_baseline):
        cells = pairing.missing_baseline[list(CELL)].drop_duplicates().shape[0]
        notes.append(f"{len(pairing.missing_baseline)} variant(s) in {cells} cell(s) have no {baseline!r} run to "
                     f"compare with (stats/missing_baseline.csv)")
    if len(mismatch):
        notes.append(f"{len(mismatch)} comparison(s) have different seed sets on the two sides; only common seeds "
                     f"were paired (stats/seed_mismatch.csv)")
    return notes


def _test_notes(tests: pd.DataFrame, hier: pd.DataFrame, metric: str, alpha: float, correction: str) -> list[str]:
    """Warnings about the tests of the first metric: unreachable Wilcoxon, unequal optimiser steps, too few pairs,
    across-sweep fits that failed."""
    notes = []
    first = tests[tests["metric"] == metric]
    unreachable = first[(first["n_pairs"] >= 2) & ~first["wilcoxon_can_reach_alpha"].astype(bool)]
    if len(unreachable):
        ns = sorted(set(unreachable["wilcoxon_n_nonzero"]))
        fam = int(unreachable["family_size"].max())
        need = wilcoxon_min_pairs(alpha / fam)
        notes.append(f"the Wilcoxon test cannot reach p<{alpha:g} after {correction} correction in "
                     f"{len(unreachable)} of {int((first['n_pairs'] >= 2).sum())} comparison(s) of {metric} "
                     f"(non-zero pairs: {', '.join(map(str, ns))}; with {fam} tests in the family the smallest p "
                     f"must be below {alpha / fam:.3g}, which an exact two-sided test reaches only with at least "
                     f"{need} non-zero pairs): add seeds, or rely on the paired t-test")
    steps = first[first["optimizer_steps_differ"].map(lambda v: v is True)]
    if len(steps):
        notes.append(f"{len(steps)} paired comparison(s) set jobs with different numbers of optimiser "
                     f"steps against each other (paired_tests.csv, column optimizer_steps_differ): their differences "
                     f"mix the method with more or less training")
    few = first[first["n_pairs"] < 2]
    if len(few):
        notes.append(f"{len(few)} comparison(s) of {metric} have fewer than 2 pairs: no test")
    failed = hier[~hier["converged"].astype(bool)] if len(hier) else hier
    if len(failed):
        notes.append(f"the across-sweep model could not be fitted for {len(failed)} variant × metric (stats/"
                     f"hierarchical.csv, column note: e.g. fewer than 2 seeds)")
    return notes


def analyse(records: pd.DataFrame, metrics=DEFAULT_METRICS, baseline: str = "none", correction: str = "holm",
            alpha: float = 0.05, family: str = "metric", zero_method: str = "zsplit", test: str = "t",
            n_boot: int = N_BOOT, seed: int = 0, source: str = "the records table", margins: dict | None = None,
            duplication: str = DUPLICATION) -> Analysis:
    """Validate the records and compute every statistic: paired tests, the answer table (every image source vs
    ``baseline`` and vs ``duplication`` with equivalence margins: ``margins`` maps metric names — full or without
    ``test_`` — to margins, over :data:`benchmark.stats.answer.DEFAULT_MARGINS`), the hierarchical model across the
    sweep, leaderboard, ranks, dose-response, audit."""
    metrics, left_out = _default_metrics_present(records, metrics)
    df, metrics, duplicates = prepare_records(records, metrics, baseline, source)
    nan_rows = nan_metric_rows(df, metrics)
    tests, pairing = paired_tests(df, metrics, baseline, None, correction, alpha, family, zero_method, test,
                                  n_boot, seed)
    mismatch = pairing.seed_mismatch.drop(columns="comp_id", errors="ignore")
    board = leaderboard(df, metrics, tests, baseline, alpha, n_boot, seed)
    gap = gap_closed(tests, df, n_boot=n_boot, seed=seed, alpha=alpha)
    answer = answer_table(df, metrics, baseline, duplication, margins, alpha, correction)
    if len(gap):  # the leaderboard shows, per method, the fraction of the real-data gain it recovers
        for m in metrics:
            g = gap[gap["metric"] == m][[*CELL, *VARIANT, "gap_closed"]].rename(columns={"gap_closed": f"{m}_gap_closed"})
            board = board.merge(g, on=[*CELL, *VARIANT], how="left")
    hier = hierarchical_tests(pairing, metrics, baseline, alpha)
    fr_rows, rank_frames, rank_results, dose_frames, curve_frames, notes = [], [], {}, [], [], []
    if left_out:
        notes.append(f"default metric(s) {', '.join(left_out)} not in {source} (records written before the harness "
                     f"computed them): left out; re-run the jobs to get them")
    for m in metrics:
        rr = rank_analysis(df, m, baseline, alpha)
        rank_results[m] = rr
        fr_rows.append(rr["summary"])
        rank_frames.append(rr["ranks"])
        dr = dose_response(df, m, alpha)
        dose_frames.append(dr["coef"])
        if dr["warning"]:
            notes.append(dr["warning"])
        curve_frames.append(dose_curves(df, m, alpha, n_boot, seed))
    fr = pd.DataFrame(fr_rows)
    ranks = pd.concat([r for r in rank_frames if len(r)], ignore_index=True) if any(len(r) for r in rank_frames) \
        else pd.DataFrame()
    dose = pd.concat([d for d in dose_frames if len(d)], ignore_index=True) if any(len(d) for d in dose_frames) \
        else dose_frames[0]
    notes += _data_notes(df, duplicates, nan_rows, pairing, mismatch, baseline)
    notes += _test_notes(tests, hier, metrics[0], alpha, correction)
    options = {"correction": correction, "alpha": alpha, "family": family, "zero_method": zero_method,
               "test": test, "n_boot": n_boot, "bootstrap_seed": seed, "power": POWER, "duplication": duplication,
               "margins": {m: margin_for(m, margins) for m in metrics}}
    notes = list(dict.fromkeys(notes))
    return Analysis(df, metrics, baseline, options, tests, pairing.missing_baseline, mismatch, nan_rows, duplicates,
                    board, fr, ranks, rank_results, dose, pd.concat(curve_frames, ignore_index=True),
                    audit_table(df, baseline), notes, hier, gap, answer)
