"""Statistics on GenMed-Rare records: paired tests vs a baseline, a hierarchical model across the sweep, rank tests
across independent blocks, dose-response on the effective ratio, power under correction.

Everything here is pure pandas / numpy / scipy / statsmodels and returns DataFrames; nothing writes files
(``benchmark.collect.report`` does). The methods, the columns of every table and the references are documented in
``docs/statistics.md``. Entry point: :func:`analyse`. Every name below is importable from ``benchmark.stats``.

Modules, in the order a records table flows through them
    vocabulary    metric names (from benchmark.run.metrics), cell / variant / unit keys, directions, ratio labels
    prepare       validation and normalisation of a records table, table order (sort_frame)
    inference     per-group statistics of paired differences: t, Wilcoxon, power, bootstrap, corrections
    paired        pairing each variant with its baseline and the paired tests
    hierarchical  the mixed model of the paired differences across the sweep
    ranks         Friedman, Iman–Davenport, Nemenyi and Holm across datasets
    dose          dose-response on the effective ratio
    tables        leaderboard, gap closed, audit table
    analysis      Analysis and analyse: everything at once
"""

from __future__ import annotations

from benchmark.stats.analysis import Analysis, analyse, power_summary
from benchmark.stats.dose import MIN_CLUSTERS, dose_curves, dose_response, dose_response_data
from benchmark.stats.hierarchical import (
    FIT_METHODS,
    HIERARCHICAL_COLUMNS,
    LEVEL_TEXT,
    hierarchical_assumptions,
    hierarchical_tests,
    nested_levels,
    nested_mixed_model,
)
from benchmark.stats.inference import (
    CORRECTIONS,
    EXACT_WILCOXON_MAX_N,
    N_BOOT,
    POWER,
    ZERO_METHODS,
    average_ranks,
    bootstrap_ci,
    bootstrap_mean_intervals,
    bootstrap_resample_weights,
    correct_pvalues,
    describe_differences,
    mde_dz,
    mean_intervals,
    metric_bounds,
    t_ci,
    wilcoxon_min_pairs,
    wilcoxon_signed_rank,
)
from benchmark.stats.paired import FAMILIES, PAIRED_COLUMNS, TESTS, Pairing, pair_records, paired_tests
from benchmark.stats.prepare import (
    BOOKKEEPING,
    OPTIONAL_DEFAULTS,
    REQUIRED_COLUMNS,
    STALE_COLUMNS,
    check_not_stale,
    effective_ratios,
    metric_choices,
    nan_metric_rows,
    prepare_records,
    resolve_metrics,
    sort_frame,
)
from benchmark.stats.ranks import (
    MIN_RANK_BLOCKS,
    complete_blocks,
    friedman,
    holm_vs_control,
    nemenyi_cd,
    nemenyi_cliques,
    nemenyi_q,
    rank_analysis,
    rank_matrix,
)
from benchmark.stats.tables import GAP_COLUMNS, MIN_SEEDS_CI, UPPER_BOUND, audit_table, gap_closed, leaderboard
from benchmark.stats.vocabulary import (
    BOUNDED_METRICS,
    CELL,
    DEFAULT_METRICS,
    KNOWN_METRIC_COLUMNS,
    LOWER_IS_BETTER,
    METRICS,
    RATIO_FORMS,
    SPLITS,
    UNIT,
    VARIANT,
    _natural_key,  # benchmark.collect.report sorts axis values with it (stats._natural_key)
    higher_is_better,
    ratio_label,
    ratio_problem,
    ratio_sort_key,
    ratio_value,
    unit_label,
    variant_label,
)

__all__ = [
    # vocabulary
    "BOUNDED_METRICS", "CELL", "DEFAULT_METRICS", "KNOWN_METRIC_COLUMNS", "LOWER_IS_BETTER", "METRICS", "RATIO_FORMS",
    "SPLITS", "UNIT", "VARIANT", "_natural_key", "higher_is_better", "ratio_label", "ratio_problem", "ratio_sort_key",
    "ratio_value", "unit_label", "variant_label",
    # prepare
    "BOOKKEEPING", "OPTIONAL_DEFAULTS", "REQUIRED_COLUMNS", "STALE_COLUMNS", "check_not_stale", "effective_ratios",
    "metric_choices", "nan_metric_rows", "prepare_records", "resolve_metrics", "sort_frame",
    # inference
    "CORRECTIONS", "EXACT_WILCOXON_MAX_N", "N_BOOT", "POWER", "ZERO_METHODS", "average_ranks", "bootstrap_ci",
    "bootstrap_mean_intervals", "bootstrap_resample_weights", "correct_pvalues", "describe_differences", "mde_dz",
    "mean_intervals", "metric_bounds", "t_ci", "wilcoxon_min_pairs", "wilcoxon_signed_rank",
    # paired
    "FAMILIES", "PAIRED_COLUMNS", "TESTS", "Pairing", "pair_records", "paired_tests",
    # hierarchical
    "FIT_METHODS", "HIERARCHICAL_COLUMNS", "LEVEL_TEXT", "hierarchical_assumptions", "hierarchical_tests",
    "nested_levels", "nested_mixed_model",
    # ranks
    "MIN_RANK_BLOCKS", "complete_blocks", "friedman", "holm_vs_control", "nemenyi_cd", "nemenyi_cliques", "nemenyi_q",
    "rank_analysis", "rank_matrix",
    # dose
    "MIN_CLUSTERS", "dose_curves", "dose_response", "dose_response_data",
    # tables
    "GAP_COLUMNS", "MIN_SEEDS_CI", "UPPER_BOUND", "audit_table", "gap_closed", "leaderboard",
    # analysis
    "Analysis", "analyse", "power_summary",
]
