"""Paired comparisons with the baseline: :class:`Pairing` / :func:`pair_records` (which baseline ratio each variant
meets in a cell, runs paired by seed and fold) and :func:`paired_tests` (tests, corrections, verdicts, power)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from benchmark.core.errors import unknown_name_error
from benchmark.stats.inference import (
    CORRECTIONS, N_BOOT, ZERO_METHODS, clip_difference_interval, correct_pvalues, describe_differences, mde_dz,
    wilcoxon_min_pairs
)
from benchmark.stats.prepare import sort_frame
from benchmark.stats.vocabulary import CELL, VARIANT, higher_is_better, ratio_sort_key, unit_label, variant_label

FAMILIES = ("metric", "cell", "all")
TESTS = ("t", "wilcoxon")

PAIRED_COLUMNS = (
    "metric", "higher_is_better", *CELL, "generator", "synthetic_ratio", "variant", "baseline", "baseline_ratio",
    "n_pairs", "n_nan_excluded", "n_only_method", "n_only_baseline", "mean_method", "mean_baseline", "mean_diff",
    "sd_diff", "ci_t_low", "ci_t_high", "ci_boot_low", "ci_boot_high", "t_stat", "p_t", "wilcoxon_stat",
    "wilcoxon_n_nonzero", "p_wilcoxon", "wilcoxon_method", "cohens_dz", "wins", "ties", "losses", "family",
    "family_size", "alpha_family", "p_t_adj", "p_wilcoxon_adj", "test", "p_adj", "significant", "verdict", "mde_dz",
    "mde", "min_p_wilcoxon", "wilcoxon_can_reach_alpha", "min_pairs_wilcoxon", "effective_ratio",
    "optimizer_steps_differ", "note",
)


# ----------------------------------------------------------------------------------------------------------------
# Pairing
# ----------------------------------------------------------------------------------------------------------------

@dataclass
class Pairing:
    comparisons: pd.DataFrame   # comp_id, cell…, generator, synthetic_ratio, baseline_ratio
    pairs: pd.DataFrame         # comp_id, seed, fold, <metric>_m, <metric>_b  (units on both sides), sorted
    missing_baseline: pd.DataFrame
    seed_mismatch: pd.DataFrame


def pair_records(df: pd.DataFrame, metrics, baseline: str) -> Pairing:
    """Match every non-baseline variant with its baseline inside each cell, then pair runs by (seed, fold).

    Baseline ratio rule: if the baseline has one ratio in the cell (``none`` has 0) every variant is compared with
    it; if the variant's method has one ratio in the cell it is compared with each baseline ratio; otherwise
    (both have several, e.g. ``--baseline oversample``) a variant is paired with the baseline at the same ratio.
    """
    ids = list(CELL)
    base = df[df["generator"] == baseline]
    other = df[df["generator"] != baseline]
    bv = base[ids + ["synthetic_ratio"]].drop_duplicates()
    ov = other[ids + ["generator", "synthetic_ratio"]].drop_duplicates()
    nb = bv.groupby(ids, sort=False).size().rename("_nb").reset_index()
    nm = ov.groupby(ids + ["generator"], sort=False).size().rename("_nm").reset_index()
    ov = ov.merge(nb, on=ids, how="left").merge(nm, on=ids + ["generator"], how="left")
    counts = other.groupby(ids + ["generator", "synthetic_ratio"], sort=False).size().rename("n_records").reset_index()
    bratios = bv.groupby(ids, sort=False)["synthetic_ratio"].agg(
        lambda r: ", ".join(sorted(r, key=ratio_sort_key)))
    bratios = bratios.rename("baseline_ratios").reset_index()

    no_base = ov[ov["_nb"].isna()].assign(reason=f"no {baseline!r} run in this cell")
    has = ov[ov["_nb"].notna()]
    cross = has[(has["_nb"] == 1) | (has["_nm"] == 1)].merge(
        bv.rename(columns={"synthetic_ratio": "baseline_ratio"}), on=ids)
    same = has[(has["_nb"] > 1) & (has["_nm"] > 1)].merge(
        bv.assign(baseline_ratio=bv["synthetic_ratio"]), on=ids + ["synthetic_ratio"], how="left")
    no_ratio = same[same["baseline_ratio"].isna()].merge(bratios, on=ids, how="left")
    no_ratio = no_ratio.assign(reason=lambda t: [f"{baseline!r} has no run at ratio {r} in this cell (it has "
                                                 f"{b})" for r, b in zip(t["synthetic_ratio"], t["baseline_ratios"])])
    missing = pd.concat([no_base, no_ratio], ignore_index=True)
    missing = missing.merge(counts, on=ids + ["generator", "synthetic_ratio"], how="left")
    missing = sort_frame(missing[ids + ["generator", "synthetic_ratio", "n_records", "reason"]], baseline)

    comps = pd.concat([cross, same[same["baseline_ratio"].notna()]], ignore_index=True)
    comps = sort_frame(comps[ids + ["generator", "synthetic_ratio", "baseline_ratio"]], baseline)
    comps.insert(0, "comp_id", np.arange(len(comps), dtype=np.int64))

    cols = ["seed", "fold"] + list(metrics)
    left = other[ids + ["generator", "synthetic_ratio"] + cols].merge(
        comps, on=ids + ["generator", "synthetic_ratio"])[["comp_id"] + cols]
    right = base[ids + ["synthetic_ratio"] + cols].rename(columns={"synthetic_ratio": "baseline_ratio"}).merge(
        comps[ids + ["baseline_ratio", "comp_id"]], on=ids + ["baseline_ratio"])[["comp_id"] + cols]
    both = left.merge(right, on=["comp_id", "seed", "fold"], how="outer", suffixes=("_m", "_b"), indicator=True)
    pairs = both[both["_merge"] == "both"].drop(columns="_merge")
    pairs = pairs.sort_values(["comp_id", "seed", "fold"], kind="stable").reset_index(drop=True)

    odd = both[both["_merge"] != "both"]
    mismatch = pd.DataFrame(columns=["comp_id", "only_method", "only_baseline", "n_only_method", "n_only_baseline"])
    if len(odd):
        odd = odd.sort_values(["comp_id", "seed", "fold"], kind="stable")
        lab = [unit_label(s, f) for s, f in zip(odd["seed"], odd["fold"])]
        odd = odd.assign(_unit=lab, _side=np.where(odd["_merge"] == "left_only", "m", "b"))
        agg = odd.groupby(["comp_id", "_side"])["_unit"].agg(list).unstack("_side")
        for side in ("m", "b"):
            if side not in agg.columns:
                agg[side] = None
        mismatch = pd.DataFrame({
            "comp_id": agg.index.to_numpy(),
            "only_method": [" ".join(v) if isinstance(v, list) else "" for v in agg["m"]],
            "only_baseline": [" ".join(v) if isinstance(v, list) else "" for v in agg["b"]],
            "n_only_method": [len(v) if isinstance(v, list) else 0 for v in agg["m"]],
            "n_only_baseline": [len(v) if isinstance(v, list) else 0 for v in agg["b"]],
        })
    n_common = pairs.groupby("comp_id").size()
    mismatch["n_common"] = mismatch["comp_id"].map(n_common).fillna(0).astype(int)
    mismatch = comps.merge(mismatch, on="comp_id")
    return Pairing(comps, pairs, missing, mismatch)

def steps_differ(steps_a, steps_b, by) -> pd.Series:
    """Per group of pairs (``by``: keys as for ``groupby``): True if any pair's two jobs took different numbers of
    optimiser steps, False if every pair with both counts known took the same, None (unknown) if no pair has both."""
    a, b = pd.to_numeric(pd.Series(steps_a), errors="coerce"), pd.to_numeric(pd.Series(steps_b), errors="coerce")
    known = (a.notna() & b.notna()).to_numpy()
    frame = pd.DataFrame({"known": known, "differ": known & (a != b).to_numpy()})
    g = frame.groupby(by if isinstance(by, list) else [by], sort=False)
    out = g["differ"].any().astype(object)
    out[~g["known"].any()] = None
    return out


def comparison_steps_differ(df: pd.DataFrame, pairing: Pairing, baseline: str) -> pd.Series:
    """Per comparison (``comp_id``): whether the paired jobs took different numbers of optimiser steps
    (:func:`steps_differ`); all None when the records have no ``optimizer_steps`` column (written before the
    harness recorded it)."""
    comps = pairing.comparisons
    if "optimizer_steps" not in df.columns or comps.empty:
        return pd.Series([None] * len(comps), index=comps["comp_id"].to_numpy(), dtype=object)
    ids, unit = list(CELL), ["seed", "fold"]
    m = df[[*ids, *VARIANT, *unit, "optimizer_steps"]].merge(comps, on=[*ids, *VARIANT])
    b = df.loc[df["generator"] == baseline, [*ids, "synthetic_ratio", *unit, "optimizer_steps"]].rename(
        columns={"synthetic_ratio": "baseline_ratio"}).merge(comps[[*ids, "baseline_ratio", "comp_id"]],
                                                             on=[*ids, "baseline_ratio"])
    j = m[["comp_id", *unit, "optimizer_steps"]].merge(b[["comp_id", *unit, "optimizer_steps"]],
                                                       on=["comp_id", *unit], suffixes=("_m", "_b"))
    out = steps_differ(j["optimizer_steps_m"], j["optimizer_steps_b"], j["comp_id"])
    return out.reindex(comps["comp_id"].to_numpy())


# ----------------------------------------------------------------------------------------------------------------
# Per-comparison tests
# ----------------------------------------------------------------------------------------------------------------

def paired_tests(df: pd.DataFrame, metrics, baseline: str, pairing: Pairing | None = None, correction="holm",
                 alpha=0.05, family="metric", zero_method="zsplit", test="t", n_boot=N_BOOT, seed=0):
    """All paired comparisons (variant vs baseline, per cell and metric); returns (tests DataFrame, Pairing).

    Columns are ``PAIRED_COLUMNS`` (documented in docs/statistics.md). ``family`` sets the multiple-comparison
    family: ``metric`` (all comparisons of one metric; default), ``cell`` (one metric in one cell) or ``all``.
    ``test`` (``t`` or ``wilcoxon``) picks the test behind ``p_adj``, ``significant`` and ``verdict``.
    """
    for value, valid, kind in ((correction, CORRECTIONS, "correction"), (family, FAMILIES, "family"),
                               (zero_method, ZERO_METHODS, "zero_method"), (test, TESTS, "test")):
        if value not in valid:
            raise unknown_name_error(kind, value, valid)
    pairing = pairing or pair_records(df, metrics, baseline)
    tests = _describe(pairing, metrics, baseline, alpha, n_boot, seed, zero_method)
    _correct(tests, family, correction, alpha)
    tests["optimizer_steps_differ"] = tests["comp_id"].map(comparison_steps_differ(df, pairing, baseline)).astype(
        object)
    tests["ci_t_low"], tests["ci_t_high"], clipped = clip_difference_interval(tests["ci_t_low"], tests["ci_t_high"],
                                                                             tests["metric"])
    eff = df.groupby([*CELL, *VARIANT], sort=False)["effective_ratio"].mean().rename("effective_ratio")
    tests = tests.drop(columns="effective_ratio", errors="ignore").merge(
        eff.reset_index(), on=[*CELL, *VARIANT], how="left")
    tests["test"] = "paired t" if test == "t" else "wilcoxon"
    tests["p_adj"] = tests["p_t_adj"] if test == "t" else tests["p_wilcoxon_adj"]
    tests["significant"] = tests["p_adj"] < alpha
    signed = np.where(tests["higher_is_better"], tests["mean_diff"], -tests["mean_diff"])
    tests["verdict"] = np.where(~tests["significant"], "n.s.", np.where(signed > 0, "better", "worse"))
    tests["note"] = _notes(tests, clipped, alpha, correction)
    return tests[list(PAIRED_COLUMNS)], pairing


def _describe(pairing: Pairing, metrics, baseline: str, alpha, n_boot, seed, zero_method) -> pd.DataFrame:
    """One row per comparison and metric: the paired differences described (describe_differences), the two
    means, NaN pairs and unpaired seeds counted."""
    comps, pairs = pairing.comparisons, pairing.pairs
    mm = pairing.seed_mismatch.set_index("comp_id") if len(pairing.seed_mismatch) else None
    frames = []
    for metric in metrics:
        hib = higher_is_better(metric)
        vm, vb = pairs[f"{metric}_m"].to_numpy(float), pairs[f"{metric}_b"].to_numpy(float)
        cid = pairs["comp_id"].to_numpy(np.int64)
        ok = np.isfinite(vm) & np.isfinite(vb)
        desc = describe_differences(cid[ok], vm[ok] - vb[ok], len(comps), hib, alpha, n_boot, seed, zero_method)
        with np.errstate(invalid="ignore", divide="ignore"):
            cnt = np.bincount(cid[ok], minlength=len(comps))
            desc.insert(1, "mean_method", np.bincount(cid[ok], vm[ok], minlength=len(comps)) / cnt)
            desc.insert(2, "mean_baseline", np.bincount(cid[ok], vb[ok], minlength=len(comps)) / cnt)
        desc.insert(1, "n_nan_excluded", np.bincount(cid[~ok], minlength=len(comps)))
        frames.append(pd.concat([comps.reset_index(drop=True), desc], axis=1).assign(metric=metric,
                                                                                       higher_is_better=hib))
    tests = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=PAIRED_COLUMNS)
    tests["variant"] = [variant_label(g, r) for g, r in zip(tests["generator"], tests["synthetic_ratio"])]
    tests["baseline"] = baseline
    if mm is not None:
        tests["n_only_method"] = tests["comp_id"].map(mm["n_only_method"]).fillna(0).astype(int)
        tests["n_only_baseline"] = tests["comp_id"].map(mm["n_only_baseline"]).fillna(0).astype(int)
    else:
        tests["n_only_method"] = 0
        tests["n_only_baseline"] = 0
    return tests


def _correct(tests: pd.DataFrame, family: str, correction: str, alpha: float) -> None:
    """Families, corrected p-values and what the correction leaves each test able to detect (in place)."""
    if family == "metric":
        fam = tests["metric"]
    elif family == "cell":
        fam = tests["metric"] + "/" + tests.groupby(list(CELL), sort=False).ngroup().astype(str)
    else:
        fam = pd.Series("all", index=tests.index)
    tests["family"] = fam.to_numpy()
    tests["p_t_adj"] = np.nan
    tests["p_wilcoxon_adj"] = np.nan
    tests["family_size"] = 0
    for col in ("p_t", "p_wilcoxon"):
        tests[f"{col}_adj"] = correct_pvalues(tests[col], correction, alpha, tests["family"])
    tests["family_size"] = tests.groupby("family", sort=False)["p_t"].transform("count").astype(int)
    # power under correction: Holm's first step (and BH's) needs the smallest p of the family below α/m
    with np.errstate(divide="ignore", invalid="ignore"):
        tests["alpha_family"] = np.where(tests["family_size"] > 0, alpha / tests["family_size"], np.nan)
    tests["wilcoxon_can_reach_alpha"] = (tests["min_p_wilcoxon"] < tests["alpha_family"]).to_numpy()
    tests["min_pairs_wilcoxon"] = [wilcoxon_min_pairs(a) for a in tests["alpha_family"]]
    dz = np.array([mde_dz(int(n), float(a)) if np.isfinite(a) else np.nan
                   for n, a in zip(tests["n_pairs"], tests["alpha_family"])])
    tests["mde_dz"] = dz
    sd = tests["sd_diff"].to_numpy(float)
    tests["mde"] = np.where(sd > 0, dz * sd, np.nan)      # paired SD 0: no detectable difference is defined


def _notes(tests: pd.DataFrame, clipped, alpha: float, correction: str) -> list[str]:
    """One note per comparison: what limits it (few pairs, an unreachable Wilcoxon, clipping, unequal steps)."""
    notes = []
    for n, m_, reach, nn, cnt_nan, fs, mp, cl, st, sdv in zip(
            tests["n_pairs"], tests["wilcoxon_n_nonzero"], tests["wilcoxon_can_reach_alpha"],
            tests["n_only_method"] + tests["n_only_baseline"], tests["n_nan_excluded"], tests["family_size"],
            tests["min_pairs_wilcoxon"], clipped, tests["optimizer_steps_differ"], tests["sd_diff"]):
        note = []
        if n >= 2 and sdv == 0:
            note.append("paired SD 0: detectable difference undefined")
        if cl:
            note.append("t interval clipped to [−1, 1]")
        if st is True:
            note.append("the paired jobs took different numbers of optimiser steps")
        if n < 2:
            note.append(f"only {n} pair(s): no test")
        elif not reach:
            note.append(f"Wilcoxon cannot reach p<{alpha:g} after {correction} over {fs} tests with {m_} non-zero "
                        f"pairs (needs {mp})")
        if nn:
            note.append(f"{nn} unpaired seed(s) ignored")
        if cnt_nan:
            note.append(f"{cnt_nan} NaN pair(s) excluded")
        notes.append("; ".join(note))
    return notes
