"""The report's text formatting and leaderboards: number, p-value and ratio formats, metric and cell titles,
Markdown and LaTeX tables (escaping included), and the leaderboard in Markdown and LaTeX with its failed, missing and
blocked jobs. Pure string work on pandas frames; no files, no matplotlib.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from benchmark import stats

METRIC_TITLES = {"auroc": "AUROC", "auprc": "AUPRC", "accuracy": "accuracy", "balanced_accuracy": "balanced accuracy",
                 "macro_f1": "macro F1", "rare_sensitivity": "rare-class sensitivity",
                 "rare_specificity": "rare-class specificity", "rare_precision": "rare-class precision",
                 "rare_auprc": "rare-class AUPRC", "ece": "ECE",
                 "thr_balanced_accuracy": "balanced accuracy at the val threshold",
                 "thr_rare_sensitivity": "rare-class sensitivity at the val threshold",
                 "thr_rare_specificity": "rare-class specificity at the val threshold",
                 "rare_sensitivity_at_90spec": "rare-class sensitivity at 90 % specificity",
                 "threshold": "val-chosen threshold"}
MARKS_MD = {"better": " ▲", "worse": " ▼", "n.s.": "", "baseline": "", "no baseline": " ?"}
MARKS_TEX = {"better": r"$^{\uparrow}$", "worse": r"$^{\downarrow}$", "n.s.": "", "baseline": "", "no baseline": "?"}


# ----------------------------------------------------------------------------------------------------------------
# Formatting
# ----------------------------------------------------------------------------------------------------------------

def metric_title(metric: str) -> str:
    """``test_auroc`` → ``test AUROC``."""
    split, _, base = metric.partition("_")
    if split in stats.SPLITS and base:
        return f"{split} {METRIC_TITLES.get(base, base.replace('_', ' '))}"
    return METRIC_TITLES.get(metric, metric.replace("_", " "))


def fnum(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)) or pd.isna(x):
        return "–"
    return f"{x:.{digits}f}"


def fp(p) -> str:
    """p-values: '<0.001' or three significant digits."""
    if p is None or pd.isna(p):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3g}"


def fratio(r) -> str:
    """A ratio label as the tables show it: '2', 'balance', 'real_percentage=50'."""
    return stats.ratio_label(r)


def feff(x) -> str:
    """An effective ratio: '×2.0', '×38.5'; '–' when 0 or unknown."""
    return "–" if x is None or pd.isna(x) or x == 0 else f"×{x:.3g}"


def cell_title(row, sep: str = " · ") -> str:
    parts = [str(row["dataset"])]
    if str(row["image_size"]) != "-":
        parts.append(f"{row['image_size']} px")
    if str(row["rare_class"]) != "-":
        parts.append(f"rare class {row['rare_class']}")
    rc = str(row["rare_count"])
    parts.append("all rare images" if rc == "all" else f"{rc} rare images")
    parts.append(str(row["backbone"]))
    if str(row.get("budget", "-")) not in ("-", "", "nan"):
        parts.append(str(row["budget"]))
    return sep.join(parts)


def metric_cells(board: pd.DataFrame, m: str, marks=MARKS_MD, pm: str = "±") -> list[str]:
    """'0.812 ± 0.011 [0.798, 0.826] ▲ (2)' for every leaderboard row: mean ± std [95 % CI] mark (rank); the interval
    reads [n<5] when it rests on fewer than stats.MIN_SEEDS_CI seeds (too few for a trustworthy interval)."""
    cols = [board[f"{m}_{c}"].to_numpy() for c in ("mean", "std", "ci_low", "ci_high", "rank", "vs_baseline")]
    reliable = board[f"{m}_ci_reliable"].to_numpy() if f"{m}_ci_reliable" in board.columns else \
        np.ones(len(board), bool)
    out = []
    for mean, std, lo, hi, rank, vs, ok in zip(*cols, reliable):
        if pd.isna(mean):
            out.append("–")
            continue
        rank_s = "" if pd.isna(rank) else f" ({int(rank) if float(rank).is_integer() else rank})"
        ci = f"[{fnum(lo)}, {fnum(hi)}]" if ok else f"[n<{stats.MIN_SEEDS_CI}]"
        out.append(f"{fnum(mean)} {pm} {fnum(std)} {ci}{marks.get(vs, '')}{rank_s}")
    return out


def md_escape(x) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def md_table(df: pd.DataFrame, align_right=()) -> str:
    if df is None or df.empty:
        return "_(none)_\n"
    cols = [str(c) for c in df.columns]
    head = "| " + " | ".join(md_escape(c) for c in cols) + " |"
    sep = "|" + "|".join("---:" if c in align_right else "---" for c in cols) + "|"
    body = ["| " + " | ".join(md_escape(v) for v in row) + " |" for row in df.itertuples(index=False, name=None)]
    return "\n".join([head, sep, *body]) + "\n"


def tex_escape(x) -> str:
    s = str(x)
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"),
                 ("_", r"\_"), ("{", r"\{"), ("}", r"\}"), ("~", r"\textasciitilde{}"), ("^", r"\^{}")):
        s = s.replace(a, b) if a != "\\" else s.replace(a, "\x00")
    return s.replace("\x00", r"\textbackslash{}")


def format_frame(df: pd.DataFrame, pcols=(), digits: int = 3, max_rows: int | None = None) -> pd.DataFrame:
    """Strings for display: p-value columns via :func:`fp`, other floats with ``digits`` decimals."""
    if df is None or df.empty:
        return pd.DataFrame()
    d = df.head(max_rows) if max_rows else df
    out = pd.DataFrame(index=d.index)
    for c in d.columns:
        s = d[c]
        if c in pcols:
            out[c] = [fp(v) for v in s]
        elif c in ("synthetic_ratio", "baseline_ratio"):
            out[c] = [fratio(v) for v in s]
        elif pd.api.types.is_bool_dtype(s):
            out[c] = ["yes" if v else "no" for v in s]
        elif pd.api.types.is_float_dtype(s):
            out[c] = [fnum(v, digits) for v in s]
        else:
            out[c] = ["" if (v is None or (isinstance(v, float) and math.isnan(v))) else str(v) for v in s]
    return out.reset_index(drop=True)


# ----------------------------------------------------------------------------------------------------------------
# Leaderboards
# ----------------------------------------------------------------------------------------------------------------

def _legend(a: stats.Analysis) -> str:
    o = a.options
    corr = {"holm": "Holm", "fdr_bh": "Benjamini–Hochberg"}[o["correction"]]
    test = "paired t-test" if o["test"] == "t" else "Wilcoxon signed-rank test"
    return (f"Baseline: `{a.baseline}`. eff. = effective ratio (rare images added per kept real rare image, mean "
            f"over the runs). Each metric: mean ± std over seeds [95 % t interval of the mean over seeds, "
            f"clipped to [0, 1] for metrics in [0, 1]; [n<{stats.MIN_SEEDS_CI}] = fewer than "
            f"{stats.MIN_SEEDS_CI} seeds, too few for an interval], ▲/▼ = "
            f"significantly better/worse than the baseline in the same cell ({test}, "
            f"{corr}-corrected over the {o['family']} family, α = {o['alpha']:g}), ? = no baseline run to compare "
            f"with, (rank) = rank of the method in its cell (1 = best). compute h = hours summed over the runs.")


def _jobs_table(jobs, cols) -> pd.DataFrame:
    rows = [{c: str(j.get(c, "")) for c in cols} for j in jobs]
    return pd.DataFrame(rows, columns=list(cols))


def jobs_sections(failed, missing, blocked) -> list[tuple[str, object]]:
    """(title, table or text) for failed, missing and blocked jobs; None lists are 'not known'."""
    out = []
    for title, jobs, cols in (("Failed jobs", failed, ("key", "name", "error")),
                              ("Missing jobs", missing, ("key", "name")),
                              ("Blocked jobs", blocked, ("key", "name", "reason"))):
        if jobs is None:
            out.append((title, "Not known when collecting from a records file (use `--grid NAME` to list them)."))
        else:
            jobs = list(jobs)
            if jobs and "error" in cols:
                tab = _jobs_table(jobs, cols)
                tab["error"] = [e.strip().splitlines()[-1][:200] if e.strip() else "" for e in tab["error"]]
            else:
                tab = _jobs_table(jobs, cols)
            out.append((f"{title} ({len(jobs)})", tab if jobs else "None."))
    return out


def cell_groups(board: pd.DataFrame) -> list[np.ndarray]:
    """Row positions of each cell, cells in order of first appearance (the leaderboard's sorted order)."""
    codes = board.groupby(list(stats.CELL), sort=False).ngroup().to_numpy()
    first = pd.unique(codes)
    order = np.argsort(codes, kind="stable")
    bounds = np.cumsum(np.bincount(codes))
    starts = np.r_[0, bounds[:-1]]
    return [order[starts[c]:bounds[c]] for c in first]


def leaderboard_markdown(a: stats.Analysis, title: str, failed=None, missing=None, blocked=None) -> str:
    board = a.leaderboard
    lines = [f"# Leaderboard — {title}", "", _legend(a), ""]
    shown = pd.DataFrame({"method": board["variant"], "eff.": [feff(x) for x in board["effective_ratio"]],
                          "seeds": board["n_runs"].astype(int),
                          **{metric_title(m): metric_cells(board, m) for m in a.metrics},
                          "compute h": [fnum(h, 2) for h in board["compute_hours"]]})
    for idx in cell_groups(board):
        lines += [f"## {cell_title(board.iloc[idx[0]])}", ""]
        lines.append(md_table(shown.iloc[idx], align_right={"eff.", "seeds", "compute h"}))
    for head, body in jobs_sections(failed, missing, blocked):
        lines += [f"## {head}", "", md_table(body) if isinstance(body, pd.DataFrame) else body, ""]
    return "\n".join(lines).rstrip() + "\n"


def leaderboard_latex(a: stats.Analysis, title: str) -> str:
    ncol = 5 + len(a.metrics)
    head = " & ".join(["method", "ratio", "eff.", "seeds", *[tex_escape(metric_title(m)) for m in a.metrics],
                       "compute h"])
    out = [f"% {tex_escape(title)}: generated by benchmark.collect.report. Needs \\usepackage{{booktabs,longtable}}.",
           f"% mean $\\pm$ std over seeds [95\\% t interval over seeds, clipped to [0, 1]; $n<5$: too "
           f"few seeds for one]; $\\uparrow$/$\\downarrow$: significantly better/worse than "
           f"{tex_escape(a.baseline)} after {a.options['correction']} correction; (rank in cell).",
           "\\begin{longtable}{llrr" + "l" * len(a.metrics) + "r}", "\\toprule", head + " \\\\", "\\midrule",
           "\\endhead"]
    board = a.leaderboard
    rows = list(zip([tex_escape(g) for g in board["generator"]], [tex_escape(fratio(r)) for r in
                                                                   board["synthetic_ratio"]],
                    [feff(x).replace("×", "$\\times$").replace("–", "--") for x in board["effective_ratio"]],
                    board["n_runs"].astype(int).astype(str),
                    *[[c.replace("–", "--").replace(f"[n<{stats.MIN_SEEDS_CI}]", f"[$n<{stats.MIN_SEEDS_CI}$]")
                       for c in metric_cells(board, m, MARKS_TEX, "$\\pm$")] for m in a.metrics],
                    [fnum(h, 2).replace("–", "--") for h in board["compute_hours"]]))
    for idx in cell_groups(board):
        head_cell = tex_escape(cell_title(board.iloc[idx[0]], ", "))
        out.append(f"\\multicolumn{{{ncol}}}{{l}}{{\\textbf{{{head_cell}}}}} \\\\")
        out.extend(" & ".join(rows[i]) + " \\\\" for i in idx)
        out.append("\\midrule")
    out[-1] = "\\bottomrule"
    out.append("\\end{longtable}")
    return "\n".join(out) + "\n"
