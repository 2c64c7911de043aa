"""The test set's own noise, from the jobs' per-image predictions: for every image source against `none` and against
duplication in a cell, on test AUROC, an interval that also resamples the test images (stratified by class, the
same images for both members of each pair), per-seed DeLong tests of the paired AUROC difference, and which source
of variance (seeds or test images) dominates (benchmark.stats.evaluation_noise)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchmark import stats
from benchmark.run.run_dir import CorruptRecord
from benchmark.stats.evaluation_noise import N_BOOT_IMAGES

METRIC = "test_auroc"
COLUMNS = (*stats.CELL, "source", "reference_variant", "n_seeds", "mean_diff", "seed_ci_low", "seed_ci_high",
           "test_ci_low", "test_ci_high", "delong_p_median", "delong_n_significant", "var_seeds", "var_test_set",
           "test_set_share", "dominant", "note")


def _rare_scores(run_dir: Path, rare_class: int) -> tuple[np.ndarray, np.ndarray]:
    from benchmark.collect.records import read_predictions

    p = read_predictions(run_dir)
    return (np.asarray(p["test_labels"]).ravel() == rare_class).astype(int), np.asarray(p["test_probs"])[:, rare_class]


def _pairs(records: pd.DataFrame, row: pd.Series, runs_dir: Path) -> dict:
    """seed unit → (labels, scores of the source, scores of the reference) for one per-cell answer row."""
    cell = records
    for c in stats.CELL:
        cell = cell[cell[c].astype(str) == str(row[c])]
    variants = cell.assign(variant=[stats.variant_label(g, r) for g, r in zip(cell["generator"],
                                                                            cell["synthetic_ratio"])])
    side = {name: variants[variants["variant"] == name].set_index(["seed", "fold"])
            for name in (row["source"], row["reference_variant"])}
    data = {}
    for unit in side[row["source"]].index.intersection(side[row["reference_variant"]].index):
        a, b = side[row["source"]].loc[unit], side[row["reference_variant"]].loc[unit]
        rare = int(float(a["rare_class"]))
        labels, scores_a = _rare_scores(runs_dir / str(a["key"]), rare)
        labels_b, scores_b = _rare_scores(runs_dir / str(b["key"]), rare)
        if not np.array_equal(labels, labels_b):
            raise ValueError(f"{a['key']} and {b['key']} were not scored on the same test images")
        data[stats.unit_label(*unit)] = (labels, scores_a, scores_b)
    return data


def noise_table(a: stats.Analysis, runs_dir, n_boot: int = N_BOOT_IMAGES, seed: int = 0) -> pd.DataFrame:
    """One row per per-cell answer row on test AUROC whose jobs kept their predictions; a row whose predictions are
    missing or unreadable says why in ``note`` (and has no interval)."""
    rows = []
    answer = a.answer
    if answer is None or answer.empty or "key" not in a.records.columns:
        return pd.DataFrame(columns=list(COLUMNS))
    cells = answer[(answer["scope"] == stats.CELL_SCOPE) & (answer["metric"] == METRIC)]
    alpha = a.options["alpha"]
    for _, row in cells.iterrows():
        out = {**{c: row[c] for c in stats.CELL}, "source": row["source"],
               "reference_variant": row["reference_variant"], "mean_diff": row["mean_diff"],
               "seed_ci_low": row["ci_low"], "seed_ci_high": row["ci_high"], "note": ""}
        try:
            data = _pairs(a.records, row, Path(runs_dir))
        except (ValueError, OSError, CorruptRecord) as exc:  # no predictions (older records), unreadable or altered ones
            rows.append({**out, "n_seeds": 0, "note": str(exc)})
            continue
        if len(data) < 2:
            rows.append({**out, "n_seeds": len(data), "note": "fewer than 2 paired seeds with predictions"})
            continue
        boot = stats.paired_auroc_bootstrap(data, n_boot=n_boot, seed=seed, confidence=1 - alpha)
        delong = stats.delong_per_seed(data)
        sources = stats.variance_sources(data, n_boot=n_boot, seed=seed)
        rows.append({**out, "n_seeds": len(data), "test_ci_low": boot["ci_low"], "test_ci_high": boot["ci_high"],
                     "delong_p_median": float(delong["p"].median()),
                     "delong_n_significant": int((delong["p"] < alpha).sum()),
                     **{k: sources[k] for k in ("var_seeds", "var_test_set", "test_set_share", "dominant")}})
    return pd.DataFrame(rows, columns=list(COLUMNS))
