"""The parts of the report a reader looks at first: the summary figure (each method's effect against the baseline,
with intervals, the real-data upper bound marked), the short generator-audit table with one line per column, and
the generators' picture sheets (real beside synthetic; closest pairs), gathered from the run folders into the
collector's ``samples/`` folder so that a report collected later from records.csv alone still shows them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark import stats

SAMPLES_DIR = "samples"
SAMPLES_INDEX = "samples.json"  # {label: {"sheet": file, "closest": file, "job": name, "key": key}}
SUMMARY_PNG = "plots/summary_effects.png"
SUMMARY_METRICS = ("test_auroc", "test_thr_balanced_accuracy", "test_thr_rare_sensitivity")
VERDICT_COLOURS = {"better": "#1b7837", "worse": "#b2182b"}
NEUTRAL = "#555555"
UPPER_COLOUR = "#2166ac"

# The audit columns a reader needs, in order, each with the line that explains it (the rest stay in
# stats/audit.csv). Columns missing from the records are left out of the table.
AUDIT_BRIEF = (
    ("audit_reference_n", "reference n",
     "real rare-class training images (before rarity subsampling) the synthetic bank is compared with"),
    ("audit_n_synthetic", "synthetic n", "images in the generator's bank"),
    ("audit_domain_kid", "KID (in-domain)",
     "kernel inception distance in the features of a CNN trained on this dataset's training split; 0 = same "
     "distribution, lower is better"),
    ("audit_domain_kid_se", "± SE", "its jackknife standard error"),
    ("audit_domain_fid", "FID (in-domain)", "Fréchet distance in the same features (64 dimensions, so estimable "
                                            "from 128 images per set); lower is better"),
    ("audit_kid", "KID (generic)", "KID in the generic extractor's features (Inception when torch-fidelity and its "
                                    "weights are installed, otherwise a fixed random CNN; see stats/audit.csv)"),
    ("audit_fid", "FID", "Fréchet distance in the generic features; left out when a set is smaller than 2 × their "
                         "dimension (not estimable: 480 images for the 240-dim fallback, 4,096 for Inception)"),
    ("audit_domain_precision", "precision", "share of synthetic images inside the real images' k-NN manifold "
                                            "(fidelity; in-domain features)"),
    ("audit_domain_recall", "recall", "share of real images inside the synthetic images' manifold (diversity)"),
    ("audit_domain_coverage", "coverage", "share of real images with a synthetic image among their k nearest "
                                          "neighbours (diversity, robust to outliers)"),
    ("audit_copy_rate", "copy rate",
     "share of synthetic images closer (pixels) to a fit-set image than 95 % of fit-set images are to their own "
     "nearest neighbour: near-copies of training images"),
    ("audit_nn_pixel_min", "closest pixel distance", "smallest synthetic-to-training pixel distance (RMS on [0, 1])"),
)


# ----------------------------------------------------------------------------------------------------------------
# Summary figure
# ----------------------------------------------------------------------------------------------------------------

def effect_rows(a: stats.Analysis, metrics=None) -> pd.DataFrame:
    """One row per (metric, variant): the effect against the baseline with its 95 % interval, from the paired
    tests when the records hold one cell, else from the hierarchical model (all cells together). With one seed
    the effect has no interval (NaN): the figure shows the point alone."""
    metrics = [m for m in (metrics or SUMMARY_METRICS) if m in a.metrics] or list(a.metrics)[:3]
    t = a.tests[a.tests["metric"].isin(metrics) & (a.tests["n_pairs"] >= 1)] if len(a.tests) else a.tests
    cols = ["metric", "variant", "generator", "estimate", "ci_low", "ci_high", "verdict", "n_pairs", "source"]
    if t is None or t.empty:
        return pd.DataFrame(columns=cols)
    cells = t[list(stats.CELL)].drop_duplicates()
    if len(cells) == 1:
        out = t.assign(estimate=t["mean_diff"], ci_low=t["ci_t_low"], ci_high=t["ci_t_high"],
                       source="paired t over seeds")
    else:
        h = a.hierarchical[a.hierarchical["metric"].isin(metrics)]
        if h.empty:
            return pd.DataFrame(columns=cols)
        out = h.assign(n_pairs=h["n_obs"], source="hierarchical model over cells")
    return out[cols].reset_index(drop=True)


def _variant_order(rows: pd.DataFrame) -> list:
    """Ratio-free baselines, then generators by name with their ratios, the upper bound last."""
    firsts = rows.drop_duplicates("variant")[["variant", "generator"]]
    upper = firsts["generator"] == stats.UPPER_BOUND
    return [*firsts[~upper]["variant"].tolist(), *firsts[upper]["variant"].tolist()]


def plot_effects(rows: pd.DataFrame, baseline: str, metric_title) -> bytes | None:
    """Forest plot: per metric a panel, per method variant its effect vs `baseline` and 95 % interval; green /
    red when the corrected test says better / worse, grey when not significant; the real-data upper bound in blue
    with its interval shaded across the panel."""
    if rows.empty:
        return None
    from matplotlib.ticker import MaxNLocator

    from benchmark.report import _figure, _png

    metrics = list(dict.fromkeys(rows["metric"]))
    order = _variant_order(rows)
    height = 2.0 + 0.32 * len(order)
    fig = _figure(4.2 * len(metrics) + 1.6, height)
    axes = fig.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
    y = {v: len(order) - 1 - i for i, v in enumerate(order)}
    uppers = [v for v in order if rows.loc[rows["variant"] == v, "generator"].iloc[0] == stats.UPPER_BOUND]
    shaded = uppers[-1] if uppers else None  # the upper bound's largest form: its interval across the panel
    for ax, m in zip(axes, metrics):
        r = rows[rows["metric"] == m]
        ax.axvline(0.0, color="#666666", lw=1, zorder=1)
        for _, row in r.iterrows():
            upper = row["generator"] == stats.UPPER_BOUND
            colour = UPPER_COLOUR if upper else VERDICT_COLOURS.get(row["verdict"], NEUTRAL)
            yy = y[row["variant"]]
            if row["variant"] == shaded and np.isfinite(row["ci_low"]) and np.isfinite(row["ci_high"]):
                ax.axvspan(row["ci_low"], row["ci_high"], color=UPPER_COLOUR, alpha=0.08, zorder=0)
            if np.isfinite(row["ci_low"]) and np.isfinite(row["ci_high"]):
                ax.plot([row["ci_low"], row["ci_high"]], [yy, yy], color=colour, lw=2, zorder=2)
            filled = row["verdict"] in VERDICT_COLOURS
            ax.plot([row["estimate"]], [yy], "o", color=colour, mfc=colour if filled else "white", ms=6,
                    zorder=3)
        ax.set_title(_wrap(metric_title(m), 34), fontsize=9)
        ax.set_xlabel(f"difference vs {baseline}", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(5))  # tick labels that do not run into each other
        ax.grid(axis="x", color="#eeeeee")
        ax.set_ylim(-0.7, len(order) - 0.3)
    axes[0].set_yticks(list(y.values()), list(y.keys()))
    source = rows["source"].iloc[0]
    fig.suptitle(_wrap(f"Effect of each method vs {baseline} (mean difference, 95 % interval; {source}). Filled: "
                       f"significant after correction (green better, red worse); blue: real-data upper bound "
                       f"({stats.UPPER_BOUND}), the interval of its largest form shaded", 120), fontsize=9)
    fig.subplots_adjust(left=0.9 / fig.get_figwidth() + 0.12, right=0.98, wspace=0.12,
                        top=1 - 1.35 / height, bottom=0.55 / height + 0.04)
    return _png(fig, tight=True)


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


# ----------------------------------------------------------------------------------------------------------------
# Audit table
# ----------------------------------------------------------------------------------------------------------------

def audit_brief(audit: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """(table, explanations): the few audit columns a reader needs per cell and generator, and one line for each
    column shown."""
    if audit is None or audit.empty:
        return pd.DataFrame(), []
    keys = [c for c in (*stats.CELL, "generator") if c in audit.columns and audit[c].nunique(dropna=False) > 1
            or c == "generator"]
    shown = [(col, label, why) for col, label, why in AUDIT_BRIEF
             if col in audit.columns and pd.to_numeric(audit[col], errors="coerce").notna().any()]
    table = audit[keys + [c for c, _, _ in shown]].copy()
    for col in ("audit_reference_n", "audit_n_synthetic"):  # counts, not measurements
        if col in table.columns:
            table[col] = pd.to_numeric(table[col], errors="coerce").round().astype("Int64")
    table = table.rename(columns={c: label for c, label, _ in shown})
    return table, [f"**{label}**: {why}" for _, label, why in shown]


# ----------------------------------------------------------------------------------------------------------------
# Picture sheets
# ----------------------------------------------------------------------------------------------------------------

def sheet_sources(jobs, runs_dir: Path) -> dict:
    """{label: {"sheet": path, "closest": path, "job": name, "key": key}}: for each generator in each cell of the
    classifier jobs (dataset, size, rare class, rare count), the sheets of its lowest seed that has them."""
    from benchmark.generators.sheets import CLOSEST_SHEET_PNG, SAMPLE_SHEET_PNG

    found: dict = {}
    for spec in sorted(jobs, key=lambda s: (getattr(s, "seed", 0), s.name)):
        key = getattr(spec, "generator_key", None)
        if not key:
            continue
        label = f"{spec.generator} · {spec.dataset} · rare {spec.rare_count}"
        folder = Path(runs_dir) / key
        if label in found or not (folder / SAMPLE_SHEET_PNG).is_file():
            continue
        found[label] = {"sheet": folder / SAMPLE_SHEET_PNG, "closest": folder / CLOSEST_SHEET_PNG,
                        "key": key, "seed": getattr(spec, "seed", None)}
    return found


def copy_sheets(sources: dict, out_dir: Path) -> dict:
    """Copy the sheets into ``out_dir/samples/`` with an index; returns {label: {"sheet": rel, "closest": rel}}."""
    from benchmark.run_dir import write_bytes_atomic

    folder = Path(out_dir) / SAMPLES_DIR
    index = {}
    for label, src in sources.items():
        stem = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in label.replace(" · ", "_"))
        entry = {"key": src["key"], "seed": src["seed"]}
        for kind in ("sheet", "closest"):
            if Path(src[kind]).is_file():
                rel = f"{SAMPLES_DIR}/{stem}_{kind}.png"
                write_bytes_atomic(Path(out_dir) / rel, Path(src[kind]).read_bytes())
                entry[kind] = rel
        index[label] = entry
    if index or (folder / SAMPLES_INDEX).is_file():  # an earlier collection's sheets are never shown as this one's
        write_bytes_atomic(folder / SAMPLES_INDEX, (json.dumps(index, indent=1) + "\n").encode())
    return index


def load_sheets(*folders) -> dict:
    """The sheets index of the first folder that has ``samples/samples.json`` with every file present, as
    {label: {"sheet": (rel, bytes), "closest": (rel, bytes), ...}}; {} when none has."""
    for folder in folders:
        index_path = Path(folder) / SAMPLES_DIR / SAMPLES_INDEX
        if not index_path.is_file():
            continue
        try:
            index = json.loads(index_path.read_text())
        except ValueError:
            continue
        out = {}
        for label, entry in index.items():
            out[label] = dict(entry)
            for kind in ("sheet", "closest"):
                if kind in entry and (Path(folder) / entry[kind]).is_file():
                    out[label][kind] = (entry[kind], (Path(folder) / entry[kind]).read_bytes())
                else:
                    out[label].pop(kind, None)
        return out
    return {}


def bring_sheets(index: dict, src_folder: Path, out_dir: Path) -> None:
    """Copy loaded sheets from another folder (records collected elsewhere) into ``out_dir`` when it differs."""
    if Path(src_folder).resolve() == Path(out_dir).resolve():
        return
    from benchmark.run_dir import write_bytes_atomic

    index_path = Path(SAMPLES_DIR) / SAMPLES_INDEX
    write_bytes_atomic(Path(out_dir) / index_path, (Path(src_folder) / index_path).read_bytes())
    for entry in index.values():
        for kind in ("sheet", "closest"):
            if kind in entry:
                write_bytes_atomic(Path(out_dir) / entry[kind][0], entry[kind][1])
