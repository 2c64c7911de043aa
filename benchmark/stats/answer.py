"""The primary contrast: every method that adds rare images against `none` and against duplication (`oversample`
at the same ratio label), paired over seeds, with a t interval, two one-sided tests (TOST) against a per-metric
equivalence margin and one verdict per comparison (:func:`answer_table`; margins: :data:`DEFAULT_MARGINS`).

Verdict rule (α = ``alpha``; p-values Holm-corrected within a family = one metric × one reference × one scope):
    equivalent    TOST p_adj < α: the mean paired difference lies within ±margin (at α = 0.05 and without a
                  correction: the 90 % t interval lies inside ±margin). If the two-sided t test is significant as
                  well, ``verdict_detail`` says "equivalent (better, within margin)" / "(worse, within margin)".
    better        not equivalent, two-sided paired t test p_adj < α and the mean difference favours the source.
    worse         not equivalent, p_adj < α and the mean difference favours the reference.
    inconclusive  neither: the interval is compatible with a difference larger than the margin and with none.
    no test       fewer than 2 pairs (or no reference run: ``note`` says which).
The interval printed is the (1 − α) t interval of the mean paired difference, conditional on the test set (every
seed is scored on the same test images); for a metric bounded to [0, 1] it is clipped to [−1, 1]
(``ci_clipped``). A metric without a margin (unbounded, not in ``margins``) gets no equivalence test.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

from benchmark.stats.inference import clip_difference_interval, correct_pvalues
from benchmark.stats.paired import steps_differ
from benchmark.stats.vocabulary import CELL, SPLITS, UNPOOLED, higher_is_better, variant_label

DUPLICATION = "oversample"  # duplicating the real rare images: what an image source must beat to add information
# The equivalence margin per metric (by base name, without test_/val_; a full column name given in ``margins``
# wins). ±0.02 on a [0, 1] score is the example for AUROC; a rare-class sensitivity or specificity on a
# test split with ~40 rare images moves in steps of ~0.025 per image, so its margin is two images' worth.
DEFAULT_MARGINS = {
    "auroc": 0.02, "auprc": 0.02, "rare_auprc": 0.02, "balanced_accuracy": 0.02, "thr_balanced_accuracy": 0.02,
    "accuracy": 0.02, "macro_f1": 0.02, "thr_rare_sensitivity": 0.05, "thr_rare_specificity": 0.05,
    "rare_sensitivity": 0.05, "rare_specificity": 0.05, "rare_precision": 0.05, "rare_sensitivity_at_90spec": 0.05,
    "ece": 0.02,
}
DEFAULT_BOUNDED_MARGIN = 0.02  # a [0, 1] metric missing from the dict
VERDICTS = ("better", "equivalent", "worse", "inconclusive", "no test")
ANSWER_COLUMNS = (
    "metric", "higher_is_better", "scope", *CELL, "source", "generator", "synthetic_ratio", "reference",
    "reference_variant", "n_cells", "n_pairs", "mean_source", "mean_reference", "mean_diff", "sd_diff", "ci_low",
    "ci_high", "ci_clipped", "t_stat", "df", "p_t", "p_t_adj", "margin", "p_tost", "p_tost_adj", "verdict",
    "verdict_detail", "effective_ratio", "reference_effective_ratio", "effective_ratio_differs",
    "optimizer_steps_differ", "note",
)
ALL_CELLS = "*"  # the pooled cell columns of an across-cells row (its UNPOOLED columns, the budget, keep their value)
CELL_SCOPE, ALL_CELLS_SCOPE = "cell", "all cells"  # the scope column: one cell, or averaged over the cells of a budget


def margin_for(metric: str, margins: dict | None = None) -> float:
    """The equivalence margin of ``metric``: ``margins[metric]``, else ``margins[base name]`` (``auroc`` for
    ``test_auroc``), else :data:`DEFAULT_MARGINS`, else ``DEFAULT_BOUNDED_MARGIN`` for a [0, 1] metric; NaN (no
    equivalence test) for anything else."""
    from benchmark.stats.inference import metric_bounds

    base = metric.split("_", 1)[1] if metric.startswith(tuple(f"{s}_" for s in SPLITS)) else metric
    for table in (margins or {}, DEFAULT_MARGINS):
        for name in (metric, base):
            if name in table and table[name] is not None:
                return float(table[name])
    return DEFAULT_BOUNDED_MARGIN if metric_bounds(metric) is not None else float("nan")


def tost_pvalue(mean, sd, n, margin):
    """p of two one-sided t tests of H0: |μ| ≥ margin against |μ| < margin (the larger of the two one-sided p's,
    n − 1 df; = statsmodels' ``ttost_paired`` on the pairs). Arrays allowed; a zero SD gives 0 when |mean| <
    margin, else 1; NaN when n < 2 or the margin is NaN."""
    mean, sd, n, margin = (np.asarray(v, float) for v in (mean, sd, n, margin))
    with np.errstate(divide="ignore", invalid="ignore"):
        se = sd / np.sqrt(n)
        p_low = sps.t.sf((mean + margin) / se, n - 1)       # H0: μ ≤ −margin
        p_upp = sps.t.cdf((mean - margin) / se, n - 1)      # H0: μ ≥ +margin
        p = np.maximum(p_low, p_upp)
    p = np.where(sd == 0, np.where(np.abs(mean) < margin, 0.0, 1.0), p)
    return np.where((n >= 2) & np.isfinite(margin), p, np.nan)


def verdicts(signed_mean, p_t_adj, p_tost_adj, n, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """(verdict, verdict_detail) by the rule in the module docstring; ``signed_mean`` > 0 favours the source."""
    out, detail = [], []
    for s, pt, pe, k in zip(np.asarray(signed_mean, float), np.asarray(p_t_adj, float),
                            np.asarray(p_tost_adj, float), np.asarray(n)):
        sig = pt < alpha
        if k < 2:
            v, d = "no test", "no test"
        elif pe < alpha:
            v, d = "equivalent", ("equivalent (better, within margin)" if sig and s > 0 else
                                  "equivalent (worse, within margin)" if sig and s < 0 else "equivalent")
        elif sig:
            v = d = "better" if s > 0 else "worse"
        else:
            v = d = "inconclusive"
        out.append(v)
        detail.append(d)
    return np.array(out, dtype=object), np.array(detail, dtype=object)


def image_sources(df: pd.DataFrame, baseline: str = "none", duplication: str = DUPLICATION) -> pd.DataFrame:
    """The (cell, generator, synthetic_ratio) variants whose method adds rare images (mean effective ratio > 0),
    other than duplication itself and the baseline: generators, external banks, ``real_extra``."""
    keys = [*CELL, "generator", "synthetic_ratio"]
    eff = df.groupby(keys, sort=False)["effective_ratio"].mean().rename("effective_ratio").reset_index()
    return eff[(eff["effective_ratio"] > 0) & ~eff["generator"].isin([baseline, duplication])].reset_index(drop=True)


def _reference_pairs(df, sources, metrics, reference: str, same_ratio: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Runs of each source paired by (cell, seed, fold) with the reference's runs (at the same ratio label when
    ``same_ratio``); returns (pairs, sources without a reference run)."""
    unit = [*CELL, "seed", "fold"]
    cols = [*metrics, "effective_ratio"] + (["optimizer_steps"] if "optimizer_steps" in df.columns else [])
    src = df.merge(sources[[*CELL, "generator", "synthetic_ratio"]], on=[*CELL, "generator", "synthetic_ratio"])
    ref = df[df["generator"] == reference]
    on = unit + (["synthetic_ratio"] if same_ratio else [])
    ref = ref[on + cols] if same_ratio else ref.drop_duplicates(unit)[unit + cols]
    pairs = src[[*unit, "generator", "synthetic_ratio", *cols]].merge(ref, on=on, suffixes=("_s", "_r"))
    have = pairs[[*CELL, "generator", "synthetic_ratio"]].drop_duplicates()
    missing = sources.merge(have, how="left", indicator=True)
    return pairs, missing[missing["_merge"] == "left_only"].drop(columns="_merge")


def _summaries(group_keys: pd.DataFrame, d: np.ndarray, s: np.ndarray, r: np.ndarray, alpha: float) -> pd.DataFrame:
    """Per group (rows of ``group_keys`` with a ``_g`` code): n, means, mean difference, SD, t interval, t test."""
    g = pd.DataFrame({"_g": group_keys["_g"].to_numpy(), "d": d, "s": s, "r": r})
    agg = g.groupby("_g").agg(n_pairs=("d", "size"), mean_source=("s", "mean"), mean_reference=("r", "mean"),
                              mean_diff=("d", "mean"), sd_diff=("d", "std"))
    n = agg["n_pairs"].to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        se = agg["sd_diff"].to_numpy() / np.sqrt(n)
        t = agg["mean_diff"].to_numpy() / se
        half = sps.t.ppf(1 - alpha / 2, n - 1) * se
        p = 2 * sps.t.sf(np.abs(t), n - 1)
    zero = agg["sd_diff"].to_numpy() == 0
    p = np.where(zero, np.where(agg["mean_diff"].to_numpy() == 0, 1.0, 0.0), p)
    agg["ci_low"], agg["ci_high"] = agg["mean_diff"] - half, agg["mean_diff"] + half
    agg["t_stat"], agg["df"], agg["p_t"] = t, n - 1, np.where(n >= 2, p, np.nan)
    return agg.reset_index()


def _scope_rows(pairs, metric, cell_scope: bool, alpha: float) -> pd.DataFrame:
    """One row per (cell, source) or, across cells, per (budget, source): the paired summary of ``metric``. Across
    cells the differences are first averaged per seed unit (dataset, seed, fold) over the cells of one budget they
    share, so a seed — whose rarity subsample and bank every cell of the dataset shares — counts once."""
    p = pairs[pairs[f"{metric}_s"].notna() & pairs[f"{metric}_r"].notna()]
    p = p.assign(_d=p[f"{metric}_s"] - p[f"{metric}_r"])
    if not cell_scope:
        p = p.groupby(["dataset", "seed", "fold", *UNPOOLED, "generator", "synthetic_ratio"], sort=False).agg(
            **{f"{metric}_s": (f"{metric}_s", "mean"), f"{metric}_r": (f"{metric}_r", "mean"), "_d": ("_d", "mean")}
        ).reset_index()
    keys = _scope_keys(cell_scope)
    if p.empty:
        return pd.DataFrame(columns=keys)
    p = p.assign(_g=p.groupby(keys, sort=False).ngroup())
    out = _summaries(p, p["_d"].to_numpy(float), p[f"{metric}_s"].to_numpy(float), p[f"{metric}_r"].to_numpy(float),
                     alpha)
    first = p.drop_duplicates("_g")[["_g", *keys]]
    return first.merge(out, on="_g").drop(columns="_g")


def _scope_keys(cell_scope: bool) -> list[str]:
    """What one answer row summarises: a (cell, source), or across cells a (budget, source)."""
    return [*CELL, "generator", "synthetic_ratio"] if cell_scope else [*UNPOOLED, "generator", "synthetic_ratio"]


def _pair_facts(pairs: pd.DataFrame, cell_scope: bool, same_ratio: bool) -> pd.DataFrame:
    """Per (cell, source) or per (budget, source): cells, effective ratios on both sides, whether they or the
    optimiser steps differ."""
    keys = _scope_keys(cell_scope)
    g = pairs.groupby(keys, sort=False)
    out = g.agg(effective_ratio=("effective_ratio_s", "mean"), reference_effective_ratio=("effective_ratio_r", "mean"))
    cells = pairs[list(dict.fromkeys([*keys, *CELL]))].drop_duplicates()
    out["n_cells"] = cells.groupby(keys, sort=False).size()
    differs = ~np.isclose(pairs["effective_ratio_s"], pairs["effective_ratio_r"], rtol=1e-6, atol=1e-9)
    out["effective_ratio_differs"] = pd.Series(differs & same_ratio, index=pairs.index).groupby(
        [pairs[k] for k in keys], sort=False).any()
    if "optimizer_steps_s" in pairs.columns:
        out["optimizer_steps_differ"] = steps_differ(pairs["optimizer_steps_s"], pairs["optimizer_steps_r"],
                                                     [pairs[k] for k in keys])
    else:
        out["optimizer_steps_differ"] = None
    return out.reset_index()


def answer_table(df: pd.DataFrame, metrics, baseline: str = "none", duplication: str = DUPLICATION,
                 margins: dict | None = None, alpha: float = 0.05, correction: str = "holm") -> pd.DataFrame:
    """Every image source (:func:`image_sources`) against ``baseline`` and against ``duplication`` at the same
    ratio label, per cell and across the cells of each budget (``scope``), per metric: Δ, its t interval, t test,
    TOST against :func:`margin_for` and the verdict (module docstring). Columns: ``ANSWER_COLUMNS``."""
    sources = image_sources(df, baseline, duplication)
    frames = []
    for reference, same in ((baseline, False), (duplication, True)):
        if sources.empty:
            break
        pairs, missing = _reference_pairs(df, sources, metrics, reference, same)
        for cell_scope in (True, False):
            facts = _pair_facts(pairs, cell_scope, same) if len(pairs) else None
            for metric in metrics:
                rows = _scope_rows(pairs, metric, cell_scope, alpha)
                if facts is not None and len(rows):
                    rows = rows.merge(facts, on=[c for c in facts.columns if c in rows.columns and c in (
                        *CELL, "generator", "synthetic_ratio")], how="left")
                if not cell_scope:
                    rows = rows.assign(**{c: ALL_CELLS for c in CELL if c not in UNPOOLED})
                elif len(missing):
                    what = f"no {reference!r} run at this ratio in this cell" if same else \
                        f"no {reference!r} run in this cell"
                    rows = pd.concat([rows, missing.assign(n_pairs=0, n_cells=1, note=what)], ignore_index=True)
                frames.append(rows.assign(metric=metric, reference=reference, scope=CELL_SCOPE if cell_scope else
                                          ALL_CELLS_SCOPE, _same=same))
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=list(ANSWER_COLUMNS))
    return _finish(pd.concat(frames, ignore_index=True), alpha, correction, margins)


def _finish(out: pd.DataFrame, alpha: float, correction: str, margins: dict | None) -> pd.DataFrame:
    """Margins, TOST, corrections, verdicts, clipped intervals, labels, column order."""
    for col in ANSWER_COLUMNS:
        if col not in out.columns:
            out[col] = np.nan
    out["note"] = [n if isinstance(n, str) else "" for n in out["note"]]
    out["higher_is_better"] = [higher_is_better(m) for m in out["metric"]]
    out["source"] = [variant_label(g, r) for g, r in zip(out["generator"], out["synthetic_ratio"])]
    out["reference_variant"] = [variant_label(ref, r) if same else ref for ref, r, same in zip(
        out["reference"], out["synthetic_ratio"], out["_same"])]
    out["margin"] = [margin_for(m, margins) for m in out["metric"]]
    out["p_tost"] = tost_pvalue(out["mean_diff"], out["sd_diff"], out["n_pairs"].fillna(0), out["margin"])
    family = out["metric"] + "|" + out["reference"] + "|" + out["scope"]
    out["p_t_adj"] = correct_pvalues(out["p_t"], correction, alpha, family)
    out["p_tost_adj"] = correct_pvalues(out["p_tost"], correction, alpha, family)
    signed = np.where(out["higher_is_better"], out["mean_diff"], -out["mean_diff"].astype(float))
    out["verdict"], out["verdict_detail"] = verdicts(signed, out["p_t_adj"], out["p_tost_adj"],
                                                     out["n_pairs"].fillna(0), alpha)
    lo, hi, clipped = clip_difference_interval(out["ci_low"], out["ci_high"], out["metric"])
    out["ci_low"], out["ci_high"], out["ci_clipped"] = lo, hi, clipped
    out["note"] = [n + ("; " if n else "") + "interval clipped to [−1, 1]" if c else n
                   for n, c in zip(out["note"], clipped)]
    differs = out["effective_ratio_differs"].fillna(False).astype(bool)
    out["note"] = [n + ("; " if n else "") + f"effective ratios differ ({e:.3g} vs {r:.3g})" if d else n
                   for n, d, e, r in zip(out["note"], differs, out["effective_ratio"],
                                         out["reference_effective_ratio"])]
    order = {CELL_SCOPE: 0, ALL_CELLS_SCOPE: 1}
    out = out.assign(_o=out["scope"].map(order), _m=pd.factorize(out["metric"])[0],
                     _r=pd.factorize(out["reference"])[0])
    out = out.sort_values(["_m", "_o", "_r"], kind="stable")
    return out[list(ANSWER_COLUMNS)].reset_index(drop=True)
