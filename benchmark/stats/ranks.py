"""Ranks across independent blocks (datasets): Friedman, Iman–Davenport, Nemenyi critical difference and cliques,
Holm against a control (Demšar 2006), and :func:`rank_analysis`, which applies them to one metric."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy import stats as sps

from benchmark.stats.inference import correct_pvalues
from benchmark.stats.prepare import sort_frame
from benchmark.stats.vocabulary import CELL, UNPOOLED, VARIANT, higher_is_better, several_budgets, variant_label

MIN_RANK_BLOCKS = 3  # rank tests need at least this many independent blocks (datasets)


def rank_matrix(values, higher_is_better: bool = True) -> np.ndarray:
    """Ranks within each row (block) of an N×k matrix: 1 = best, ties get the average rank."""
    values = np.asarray(values, float)
    return sps.rankdata(-values if higher_is_better else values, axis=1)


@lru_cache(maxsize=None)
def nemenyi_q(k: int, alpha: float = 0.05) -> float:
    """q_α of the Nemenyi test: the studentized range quantile (k groups, ∞ df) divided by √2 (Demšar 2006)."""
    return float(sps.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2))


def nemenyi_cd(k: int, n_blocks: int, alpha: float = 0.05) -> float:
    """Nemenyi critical difference of average ranks: q_α √(k(k+1)/(6N))."""
    return nemenyi_q(k, alpha) * math.sqrt(k * (k + 1) / (6.0 * n_blocks))


def friedman(values, higher_is_better: bool = True, alpha: float = 0.05) -> dict:
    """Friedman test on an N (blocks) × k (methods) matrix, with the Iman–Davenport F and the Nemenyi CD.

    ``chi2`` includes the tie correction (as scipy.stats.friedmanchisquare); ``chi2_uncorrected`` is Demšar's
    (2006, eq. for χ²_F) formula without it. ``F`` (Iman–Davenport) is computed from the tie-corrected χ²;
    ``F_uncorrected`` from the other. Returns a dict with ``avg_ranks`` (array) and the statistics.
    """
    values = np.asarray(values, float)
    N, k = values.shape
    ranks = rank_matrix(values, higher_is_better)
    avg = ranks.mean(axis=0)
    out = {"n_blocks": N, "k": k, "avg_ranks": avg}
    if N < 2 or k < 2:
        return {**out, **dict.fromkeys(("chi2", "p_chi2", "chi2_uncorrected", "F", "df1", "df2", "p_F",
                                        "F_uncorrected", "p_F_uncorrected", "q_alpha", "cd"), np.nan)}
    chi_unc = 12.0 * N / (k * (k + 1)) * (np.sum(avg ** 2) - k * (k + 1) ** 2 / 4.0)
    tie_sum = 0.0
    for row in ranks:
        _, t = np.unique(row, return_counts=True)
        tie_sum += float(np.sum(t ** 3 - t))
    c = 1.0 - tie_sum / (N * k * (k * k - 1))
    chi2 = chi_unc / c if c > 0 else np.nan
    df1, df2 = k - 1, (k - 1) * (N - 1)

    def iman_davenport(x):
        denom = N * (k - 1) - x
        f = (N - 1) * x / denom if denom > 0 else np.inf
        return f, float(sps.f.sf(f, df1, df2)) if np.isfinite(f) else 0.0

    F, pF = iman_davenport(chi2)
    F_unc, pF_unc = iman_davenport(chi_unc)
    q = nemenyi_q(k, alpha)
    return {**out, "chi2": chi2, "p_chi2": float(sps.chi2.sf(chi2, df1)), "chi2_uncorrected": chi_unc,
            "F": F, "df1": df1, "df2": df2, "p_F": pF, "F_uncorrected": F_unc, "p_F_uncorrected": pF_unc,
            "q_alpha": q, "cd": q * math.sqrt(k * (k + 1) / (6.0 * N))}


def holm_vs_control(avg_ranks: pd.Series, control: str, n_blocks: int, alpha: float = 0.05) -> pd.DataFrame:
    """Demšar's post-hoc test against a control: z = (R_i − R_c)/√(k(k+1)/6N), two-sided p, Holm step-down."""
    k = len(avg_ranks)
    se = math.sqrt(k * (k + 1) / (6.0 * n_blocks))
    others = avg_ranks.drop(control)
    z = (others - avg_ranks[control]) / se
    p = 2 * sps.norm.sf(np.abs(z.to_numpy(float)))
    p_holm = correct_pvalues(p, "holm", alpha)
    return pd.DataFrame({"variant": others.index, "avg_rank": others.to_numpy(), "z_vs_control": z.to_numpy(),
                         "p_vs_control": p, "p_holm": p_holm, "significant_vs_control": p_holm < alpha})


def nemenyi_cliques(avg_ranks: pd.Series, cd: float) -> list[list[str]]:
    """Maximal groups of methods (sorted by average rank) whose ranks differ by less than the CD."""
    s = avg_ranks.sort_values()
    names, r = list(s.index), s.to_numpy()
    out, last_end = [], -1
    for i in range(len(r)):
        j = i
        while j + 1 < len(r) and r[j + 1] - r[i] < cd:
            j += 1
        if j > i and j > last_end:
            out.append(names[i:j + 1])
            last_end = j
    return out


def complete_blocks(matrix: pd.DataFrame) -> tuple[pd.DataFrame, list, list]:
    """Drop methods or blocks until no value is missing, greedily losing the fewest values.

    Returns (complete matrix, dropped methods, dropped blocks).
    """
    m = matrix.copy()
    dropped_cols, dropped_rows = [], []
    while m.shape[0] and m.shape[1] and m.isna().to_numpy().any():
        present = m.notna()
        col_missing = (~present).sum(axis=0)
        j = col_missing.idxmax()
        rows = present.index[~present[j].to_numpy()]
        cost_col = int(present[j].sum())
        cost_rows = int(present.loc[rows].to_numpy().sum())
        if cost_col <= cost_rows or m.shape[0] - len(rows) < 2:
            dropped_cols.append(j)
            m = m.drop(columns=[j])
        else:
            dropped_rows.extend(rows)
            m = m.drop(index=rows)
    return m, dropped_cols, dropped_rows


def rank_analysis(df: pd.DataFrame, metric: str, baseline: str, alpha: float = 0.05) -> dict:
    """:func:`rank_analysis_in` on the cells of one budget: ranks never pool cells of different training budgets,
    and a budget that holds only some variants (a confound check) would otherwise drop every other variant from
    the complete design. With several budgets, the one whose cells hold the most variants (then the most records)
    is ranked; ``summary["budget"]`` names it and its note lists the budgets left out."""
    col = UNPOOLED[0]
    if not several_budgets(df):
        result = rank_analysis_in(df, metric, baseline, alpha)
        result["summary"]["budget"] = str(df[col].iloc[0]) if col in df.columns and len(df) else ""
        return result
    variants = df.drop_duplicates([col, *VARIANT]).groupby(col, sort=False).size()
    sizes = df.groupby(col, sort=False).size()
    chosen = max(variants.index, key=lambda b: (variants[b], sizes[b]))
    result = rank_analysis_in(df[df[col] == chosen], metric, baseline, alpha)
    others = ", ".join(str(b) for b in variants.index if b != chosen)
    note = (f"ranks over the cells of budget {chosen} (the most variants); cells of {others} left out: ranks never "
            f"pool cells of different budgets")
    summary = result["summary"]
    summary.update(budget=str(chosen), note="; ".join(filter(None, [note, summary.get("note", "")])))
    return result


def rank_analysis_in(df: pd.DataFrame, metric: str, baseline: str, alpha: float = 0.05) -> dict:
    """Rank variants across independent blocks (datasets) on ``metric``; Friedman, Iman–Davenport, Nemenyi, Holm.

    A variant's value in a cell is its mean over seeds. Cells of one dataset share its test set, seeds, rarity
    subsamples and generator banks, so they are not independent blocks: the complete cell × variant matrix
    (:func:`complete_blocks`) is averaged over each dataset's cells and the datasets are the blocks. With fewer
    than ``MIN_RANK_BLOCKS`` datasets no test is made (no p-value, no critical difference): the average ranks are
    still returned, descriptively, over datasets (``avg_rank``) and over cells (``avg_rank_cells``, which treats
    dependent cells as blocks and is therefore never tested). The control for Holm is the baseline variant (the
    best-ranked one when the baseline has several ratios).
    Returns {"summary": dict, "ranks": DataFrame, "cliques": list, "dropped_variants", "dropped_blocks",
    "avg_ranks" (when there are ranks), "tested": bool}.
    """
    hib = higher_is_better(metric)
    means = df.groupby(list(CELL) + list(VARIANT), sort=False)[metric].mean().reset_index()
    means["variant"] = [variant_label(g, r) for g, r in zip(means["generator"], means["synthetic_ratio"])]
    means["block"] = means.groupby(list(CELL), sort=False).ngroup()
    order = sort_frame(means.drop_duplicates("variant")[["generator", "synthetic_ratio", "variant"]], baseline)
    mat = means.pivot(index="block", columns="variant", values=metric)
    mat = mat[[v for v in order["variant"] if v in mat.columns]]
    block_dataset = means.drop_duplicates("block").set_index("block")["dataset"]
    full, dcols, drows = complete_blocks(mat)
    by_ds = full.groupby(block_dataset.reindex(full.index).to_numpy(), sort=False).mean() if len(full) else full
    n_ds_total = int(block_dataset.nunique())
    summary = {"metric": metric, "higher_is_better": hib, "block": "dataset", "n_blocks": int(by_ds.shape[0]),
               "n_cells": int(full.shape[0]), "k": int(full.shape[1]), "n_datasets_total": n_ds_total,
               "n_cells_total": int(mat.shape[0]), "n_variants_total": int(mat.shape[1]),
               "dropped_variants": ", ".join(map(str, dcols)), "n_dropped_cells": len(drows), "tested": False}
    for key in ("chi2", "p_chi2", "chi2_uncorrected", "F", "df1", "df2", "p_F", "F_uncorrected", "p_F_uncorrected",
                "q_alpha", "cd"):
        summary[key] = np.nan
    summary.update(control="", alpha=alpha, note="")
    result = {"summary": summary, "ranks": pd.DataFrame(), "cliques": [], "dropped_variants": dcols,
              "dropped_blocks": drows, "tested": False}
    if full.shape[0] < 1 or full.shape[1] < 2:
        summary["note"] = "fewer than 2 variants with complete values: no ranks"
        return result
    avg = pd.Series(rank_matrix(by_ds.to_numpy(), hib).mean(axis=0), index=full.columns)
    avg_cells = pd.Series(rank_matrix(full.to_numpy(), hib).mean(axis=0), index=full.columns)
    bvars = [v for v in full.columns if order.set_index("variant").loc[v, "generator"] == baseline]
    control = min(bvars, key=lambda v: avg[v]) if bvars else avg.idxmin()
    ranks = pd.DataFrame({"metric": metric, "variant": avg.index, "avg_rank": avg.to_numpy(),
                          "avg_rank_cells": avg_cells.to_numpy(), "mean_value": full.mean(axis=0).to_numpy()})
    ranks["is_control"] = ranks["variant"] == control
    tested = by_ds.shape[0] >= MIN_RANK_BLOCKS
    if tested:
        fr = friedman(by_ds.to_numpy(), hib, alpha)
        fr.pop("avg_ranks")
        holm = holm_vs_control(avg, control, fr["n_blocks"], alpha).set_index("variant")
        for col in ("z_vs_control", "p_vs_control", "p_holm", "significant_vs_control"):
            ranks[col] = ranks["variant"].map(holm[col])
        ranks["nemenyi_diff_vs_control"] = (ranks["avg_rank"] - avg[control]).abs() >= fr["cd"]
        summary.update({k: v for k, v in fr.items() if k != "n_blocks"}, tested=True)
        cliques = nemenyi_cliques(avg, fr["cd"])
    else:
        for col in ("z_vs_control", "p_vs_control", "p_holm"):
            ranks[col] = np.nan
        ranks["significant_vs_control"] = None
        ranks["nemenyi_diff_vs_control"] = None
        summary["note"] = (f"{by_ds.shape[0]} independent block(s) (datasets): a rank test needs at least "
                           f"{MIN_RANK_BLOCKS}, so none was made; average ranks are descriptive")
        cliques = []
    ranks = ranks.sort_values("avg_rank", kind="stable").reset_index(drop=True)
    summary.update(control=control, k=int(full.shape[1]))
    result.update(ranks=ranks, cliques=cliques, avg_ranks=avg, tested=tested)
    result["summary"]["tested"] = tested
    return result
