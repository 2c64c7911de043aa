"""The report's matplotlib plots, each returned as PNG bytes: the summary forest plot (each method's effect
against the baseline with its interval, the real-data upper bound marked), critical-difference diagrams and
dose-response curves. matplotlib is imported lazily, inside the functions, with the Agg backend.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd

from benchmark import stats
from benchmark.collect.report_tables import metric_title

SUMMARY_PNG = "plots/summary_effects.png"
SUMMARY_METRICS = ("test_auroc", "test_thr_balanced_accuracy", "test_thr_rare_sensitivity")
VERDICT_COLOURS = {"better": "#1b7837", "worse": "#b2182b"}
NEUTRAL = "#555555"
UPPER_COLOUR = "#2166ac"


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


def _png(fig, tight: bool = True) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight" if tight else None, metadata={"Software": None})
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------------------------
# Summary figure
# ----------------------------------------------------------------------------------------------------------------

def effect_rows(a: stats.Analysis, metrics=None) -> pd.DataFrame:
    """One row per (metric, variant): the effect against the baseline with its 95 % interval, from the paired
    tests when the records hold one cell, else from the hierarchical model (all cells of a budget together; with
    several budgets the variant's label names its budget). With one seed
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
        out = h.assign(n_pairs=h["n_obs"], source="across the cells: seed means, t interval")
        if stats.several_budgets(h):  # never pooled: each budget its own point
            out = out.assign(variant=[f"{v} · {b}" for v, b in zip(out["variant"], out["budget"])])
    return out[cols].reset_index(drop=True)


def _variant_order(rows: pd.DataFrame) -> list:
    """Ratio-free baselines, then generators by name with their ratios, the upper bound last."""
    firsts = rows.drop_duplicates("variant")[["variant", "generator"]]
    upper = firsts["generator"] == stats.UPPER_BOUND
    return [*firsts[~upper]["variant"].tolist(), *firsts[upper]["variant"].tolist()]


def plot_effects(rows: pd.DataFrame, baseline: str) -> bytes | None:
    """Forest plot: per metric a panel, per method variant its effect vs `baseline` and 95 % interval; green /
    red when the corrected test says better / worse, grey when not significant; the real-data upper bound in blue
    with its interval shaded across the panel."""
    if rows.empty:
        return None
    from matplotlib.ticker import MaxNLocator

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
# Critical-difference diagram and dose-response
# ----------------------------------------------------------------------------------------------------------------

def plot_cd(avg_ranks: pd.Series, cd: float, cliques, title: str) -> bytes:
    """Critical-difference diagram (Demšar 2006, Fig. 1): average ranks on an axis, methods whose ranks differ by
    less than the Nemenyi CD joined by thick bars."""
    s = avg_ranks.sort_values()
    k = len(s)
    half = (k + 1) // 2
    rows = max(half, k - half)
    y0 = 0.7 + 0.3 * len(cliques)               # first label row below the axis, under the clique bars
    fig = _figure(8, 1.2 + 0.28 * (rows + y0))
    ax = fig.add_axes([0.03, 0.02, 0.94, 0.9])
    lo, hi = 1, max(k, 2)
    pad = (hi - lo) * 0.35
    ax.set_xlim(lo - 0.3 - pad, hi + 0.3 + pad)
    ax.set_ylim(-(rows + y0), 1.7)
    ax.axis("off")
    ax.hlines(0, lo, hi, color="k", lw=1)
    for t in range(lo, hi + 1):
        ax.vlines(t, 0, 0.18, color="k", lw=1)
        ax.text(t, 0.3, str(t), ha="center", va="bottom", fontsize=8)
    if np.isfinite(cd):
        ax.hlines(1.25, lo, min(lo + cd, hi + pad), color="k", lw=1.5)
        ax.text(lo + min(cd, hi + pad - lo) / 2, 1.35, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=8)
    names, ranks = list(s.index), s.to_numpy()
    for i, (n, r) in enumerate(zip(names, ranks)):
        left = i < half
        y = -(y0 + (i if left else k - 1 - i))
        xe = lo - 0.2 - (hi - lo) * 0.05 if left else hi + 0.2 + (hi - lo) * 0.05
        ax.plot([r, r, xe], [0, y, y], color="0.3", lw=0.8)
        ax.text(xe + (-0.05 if left else 0.05), y, f"{n} ({r:.2f})", ha="right" if left else "left",
                va="center", fontsize=8)
    for j, group in enumerate(cliques):
        rr = s[group]
        ax.hlines(-0.3 - 0.3 * j, rr.min() - 0.03, rr.max() + 0.03, color="k", lw=3)
    ax.set_title(title, fontsize=9)
    return _png(fig)


def _dose_panel(ax, sub: pd.DataFrame, ds: str, gens: list, colors, slope: pd.Series, pos: pd.Series, xlim: tuple,
                metric: str, seen: set) -> None:
    """One dataset's panel of plot_dose: a line per method through its ratio forms, reference lines for the
    variants that add no images; `seen` keeps each legend label once across panels."""
    xmin, xmax = xlim
    for gi, g in enumerate(gens):
        c = sub[sub["generator"] == g]
        if c.empty:
            continue
        color = colors(gi % 10)
        line = c[c["effective_ratio"] > 0].sort_values("effective_ratio")
        if len(line):
            label = g + (f" (slope {slope[g]:+.2g}/doubling)" if g in slope.index else "")
            label = label if label not in seen else None
            seen.add(label)
            ax.plot(line["effective_ratio"], line["mean"], "o-" if len(line) > 1 else "o", color=color, lw=1.4,
                    ms=3, label=label)
            if len(line) > 1:
                ax.fill_between(line["effective_ratio"], line["ci_low"], line["ci_high"], color=color, alpha=0.18,
                                lw=0)
            else:
                ax.vlines(line["effective_ratio"], line["ci_low"], line["ci_high"], color=color, lw=1)
            for _, r in line.iterrows():
                if np.isnan(stats.ratio_value(r["synthetic_ratio"])):
                    ax.annotate(str(r["synthetic_ratio"]).replace("real_percentage=", "real "),
                                (r["effective_ratio"], r["mean"]), textcoords="offset points", xytext=(3, 4),
                                fontsize=6, color=color)
        for k, (_, r) in enumerate(c[c["effective_ratio"] == 0].iterrows()):
            label = r["variant"] + " (adds no images)"
            label = label if label not in seen else None
            seen.add(label)
            ax.hlines(r["mean"], xmin, xmax, color=color, ls=("--", ":", "-.")[k % 3], lw=1.2, label=label)
            ax.fill_between([xmin, xmax], r["ci_low"], r["ci_high"], color=color, alpha=0.1, lw=0)
    ax.set_xscale("log", base=2)
    ax.set_xlim(xmin, xmax)
    ticks = []
    for t in sorted(set(np.round(pos, 2))):  # leave out a tick too close (on the log axis) to the previous one
        if not ticks or t / ticks[-1] > 1.25:
            ticks.append(t)
    if 0 < len(ticks) <= 8:
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
    ax.set_title(ds, fontsize=9)
    ax.set_xlabel("effective ratio (rare images added per real rare image)", fontsize=8)
    ax.set_ylabel(metric_title(metric), fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)


def plot_dose(curves: pd.DataFrame, coef: pd.DataFrame, metric: str, baseline: str) -> bytes:
    """Metric vs effective ratio (log2 axis), one panel per dataset (and budget, where there are several), one line
    per method through its ratio forms placed at the effective ratio they trained with (``balance`` and
    ``real_percentage=P`` points are labelled), each with its 95 % band; variants that add no images (effective
    ratio 0: none, class_weight, …) are horizontal dashed reference lines with their band."""
    if stats.several_budgets(curves):  # a panel per (dataset, budget): never pooled
        curves = curves.assign(dataset=curves["dataset"].astype(str) + ", " + curves["budget"].astype(str))
    datasets = list(dict.fromkeys(curves["dataset"]))
    ncol = min(3, max(1, len(datasets)))
    nrow = math.ceil(len(datasets) / ncol)
    n_methods = curves["variant"].nunique()
    width = max(8.0, 4.2 * ncol)  # one panel still has room for the title and the legend
    legend_cols = 4 if width >= 10 else 3
    legend_h = 0.25 * math.ceil(n_methods / legend_cols) + 0.3
    fig = _figure(width, 3.2 * nrow + 0.9 + legend_h)
    axes = fig.subplots(nrow, ncol, squeeze=False)
    gens = list(dict.fromkeys([baseline] + list(curves["generator"])))
    import matplotlib

    colors = matplotlib.colormaps["tab10"]
    one_budget = not stats.several_budgets(coef)  # else the slopes differ per budget
    slope = coef.set_index("generator")["slope"] if len(coef) and one_budget else pd.Series(dtype=float)
    pos = curves.loc[curves["effective_ratio"] > 0, "effective_ratio"]
    xmin, xmax = (pos.min() / 1.3, pos.max() * 1.3) if len(pos) else (0.5, 2.0)
    seen = set()
    for ax, ds in zip(axes.flat, datasets):
        _dose_panel(ax, curves[curves["dataset"] == ds], ds, gens, colors, slope, pos, (xmin, xmax), metric, seen)
    for ax in list(axes.flat)[len(datasets):]:
        ax.axis("off")
    handles, labels = [], []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(legend_cols, len(labels)), fontsize=7,
                   frameon=False)
    import textwrap

    title = f"{metric_title(metric)} vs effective ratio (mean over seeds, 95 % interval; " + (
        "slope per doubling)" if one_budget else "slopes per budget in stats/dose_response.csv)")
    fig.suptitle("\n".join(textwrap.wrap(title, int(width * 11))), fontsize=10)
    height = fig.get_figheight()
    fig.subplots_adjust(left=0.07, right=0.98, hspace=0.5, wspace=0.28, top=1 - 0.9 / height,
                        bottom=(legend_h + 0.5) / height)
    return _png(fig, tight=True)  # the saved area includes every label, so nothing is cut at the edges
