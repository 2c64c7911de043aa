"""Statistics on GenMed-Rare records: paired tests vs a baseline, the answer table (image sources vs `none` and vs
duplication with equivalence margins), a model across the sweep, rank tests across independent blocks,
dose-response on the effective ratio, the test set's noise (DeLong, bootstrap), power under correction.

Everything here is pure pandas / numpy / scipy / statsmodels and returns DataFrames; nothing writes files
(``benchmark.collect.report`` does). The methods, the columns of every table and the references are documented in
``docs/statistics.md``. Entry point: :func:`analyse`. Every name below is importable from ``benchmark.stats``.

Modules, in the order a records table flows through them
    vocabulary    metric names (from benchmark.run.metrics), cell / variant / unit keys, directions, ratio labels
    prepare       validation and normalisation of a records table, table order (sort_frame)
    inference     per-group statistics of paired differences: t, Wilcoxon, power, bootstrap, corrections
    paired        pairing each variant with its baseline and the paired tests
    answer        the primary contrast: every image source vs none and vs duplication, TOST margins, verdicts
    hierarchical  the paired differences across the sweep: seeds crossed with cells, small-sample t
    ranks         Friedman, Iman–Davenport, Nemenyi and Holm across datasets
    dose          dose-response on the effective ratio (per-seed slopes, t over seeds)
    evaluation_noise  the test set's noise: DeLong test, bootstrap over seeds and test images, variance sources
    tables        leaderboard, gap closed, audit table
    analysis      Analysis and analyse: everything at once
"""

from __future__ import annotations

from benchmark.stats.analysis import Analysis, analyse, power_summary
from benchmark.stats.answer import (
    ANSWER_COLUMNS, DEFAULT_BOUNDED_MARGIN, DEFAULT_MARGINS, ALL_CELLS_SCOPE, CELL_SCOPE, DUPLICATION, VERDICTS,
    answer_table, image_sources, margin_for, tost_pvalue, verdicts
)
from benchmark.stats.dose import (
    DOSE_COLUMNS, DOSE_MODEL, MIN_CLUSTERS, dose_curves, dose_response, dose_response_data, seed_slopes
)
from benchmark.stats.evaluation_noise import delong_per_seed, delong_test, paired_auroc_bootstrap, variance_sources
from benchmark.stats.hierarchical import (
    HIERARCHICAL_COLUMNS, MIN_RANDOM_DATASETS, crossed_seed_model, hierarchical_assumptions,
    hierarchical_tests
)
from benchmark.stats.inference import (
    CORRECTIONS, EXACT_WILCOXON_MAX_N, N_BOOT, POWER, ZERO_METHODS, average_ranks, bootstrap_ci,
    bootstrap_mean_intervals, bootstrap_resample_weights, clip_difference_interval, correct_pvalues,
    describe_differences, mde_dz, mean_intervals, metric_bounds, t_ci, wilcoxon_min_pairs, wilcoxon_signed_rank
)
from benchmark.stats.paired import (
    FAMILIES, PAIRED_COLUMNS, TESTS, Pairing, comparison_steps_differ, pair_records, paired_tests, steps_differ
)
from benchmark.stats.prepare import (
    BOOKKEEPING, OPTIONAL_DEFAULTS, REQUIRED_COLUMNS, STALE_COLUMNS, check_not_stale, effective_ratios, metric_choices,
    nan_metric_rows, prepare_records, resolve_metrics, sort_frame
)
from benchmark.stats.ranks import (
    MIN_RANK_BLOCKS, complete_blocks, friedman, holm_vs_control, nemenyi_cd, nemenyi_cliques, nemenyi_q, rank_analysis,
    rank_matrix
)
from benchmark.stats.tables import GAP_COLUMNS, MIN_SEEDS_CI, UPPER_BOUND, audit_table, gap_closed, leaderboard
from benchmark.stats.vocabulary import (
    ARGMAX_METRICS,
    BOUNDED_METRICS,
    CELL,
    DEFAULT_METRICS,
    KNOWN_METRIC_COLUMNS,
    LOWER_IS_BETTER,
    METRICS,
    RATIO_FORMS,
    SPLITS,
    UNIT,
    UNPOOLED,
    VARIANT,
    _natural_key,  # benchmark.collect.report sorts axis values with it (stats._natural_key)
    higher_is_better,
    ratio_label,
    ratio_problem,
    ratio_sort_key,
    ratio_value,
    several_budgets,
    unit_label,
    variant_label,
)

__all__ = [
    # vocabulary
    "ARGMAX_METRICS", "BOUNDED_METRICS", "CELL", "DEFAULT_METRICS", "KNOWN_METRIC_COLUMNS", "LOWER_IS_BETTER",
    "METRICS", "RATIO_FORMS", "SPLITS", "UNIT", "UNPOOLED", "VARIANT", "_natural_key", "higher_is_better",
    "ratio_label", "ratio_problem", "ratio_sort_key", "ratio_value", "several_budgets", "unit_label", "variant_label",
    # prepare
    "BOOKKEEPING", "OPTIONAL_DEFAULTS", "REQUIRED_COLUMNS", "STALE_COLUMNS", "check_not_stale", "effective_ratios",
    "metric_choices", "nan_metric_rows", "prepare_records", "resolve_metrics", "sort_frame",
    # inference
    "CORRECTIONS", "EXACT_WILCOXON_MAX_N", "N_BOOT", "POWER", "ZERO_METHODS", "average_ranks", "bootstrap_ci",
    "bootstrap_mean_intervals", "bootstrap_resample_weights", "clip_difference_interval", "correct_pvalues",
    "describe_differences", "mde_dz", "mean_intervals", "metric_bounds", "t_ci", "wilcoxon_min_pairs",
    "wilcoxon_signed_rank",
    # paired
    "FAMILIES", "PAIRED_COLUMNS", "TESTS", "Pairing", "comparison_steps_differ", "pair_records", "paired_tests",
    "steps_differ",
    # answer
    "ALL_CELLS_SCOPE", "ANSWER_COLUMNS", "CELL_SCOPE", "DEFAULT_BOUNDED_MARGIN", "DEFAULT_MARGINS", "DUPLICATION", "VERDICTS", "answer_table",
    "image_sources", "margin_for", "tost_pvalue", "verdicts",
    # hierarchical
    "HIERARCHICAL_COLUMNS", "MIN_RANDOM_DATASETS", "crossed_seed_model",
    "hierarchical_assumptions", "hierarchical_tests",
    # ranks
    "MIN_RANK_BLOCKS", "complete_blocks", "friedman", "holm_vs_control", "nemenyi_cd", "nemenyi_cliques", "nemenyi_q",
    "rank_analysis", "rank_matrix",
    # dose
    "DOSE_COLUMNS", "DOSE_MODEL", "MIN_CLUSTERS", "dose_curves", "dose_response", "dose_response_data", "seed_slopes",
    # evaluation_noise
    "delong_per_seed", "delong_test", "paired_auroc_bootstrap", "variance_sources",
    # tables
    "GAP_COLUMNS", "MIN_SEEDS_CI", "UPPER_BOUND", "audit_table", "gap_closed", "leaderboard",
    # analysis
    "Analysis", "analyse", "power_summary",
]
