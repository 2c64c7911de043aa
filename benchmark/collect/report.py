"""Reports from a :class:`benchmark.stats.Analysis`: reading a records table, report.md and a self-contained
report.html (plots embedded as base64) with their sections, and :func:`write_all`, which writes every output file
(leaderboards md/tex/csv, stats CSVs, PNG plots, the reports), each atomically (benchmark.run.run_dir.write_bytes_atomic).
Text formatting and leaderboards: benchmark.collect.report_tables; plots: benchmark.collect.report_plots; audit table and picture
sheets: benchmark.collect.report_figures; whether fidelity predicts utility: benchmark.collect.fidelity_utility.
Entry points: :func:`read_records`, :func:`write_all`.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from benchmark import stats
from benchmark.collect import report_figures, report_plots
from benchmark.collect.report_tables import (
    cell_title,
    fnum,
    format_frame,
    fp,
    fratio,
    jobs_sections,
    leaderboard_latex,
    leaderboard_markdown,
    md_table,
    metric_title,
)
from benchmark.core.errors import UserError
from benchmark.run.run_dir import write_bytes_atomic

NA_VALUES = ["", "nan", "NaN", "-nan", "-NaN", "NULL", "null", "<NA>", "N/A", "n/a", "#N/A"]  # not None/none/NA
STATS_FILES = ("answer", "test_noise", "paired_tests", "hierarchical", "power", "missing_baseline", "seed_mismatch", "nan_metrics",
               "duplicates", "friedman", "ranks", "dose_response", "dose_curves", "audit", "gap_closed",
               "fidelity_utility")
PRIOR_SHIFT_NOTE = (
    "Adding rare images (synthetic, duplicated or extra real ones) raises the rare class's share of the training set, "
    "which moves the arg-max (0.5) operating point towards the rare class and so raises rare-class sensitivity and "
    "balanced accuracy at that point even when the images teach the model nothing new. AUROC does not depend on a "
    "threshold and the thr_* metrics apply the threshold each job chose on its own validation split, so a gain that "
    "remains in them is a better separation of the classes, not a shifted prior.")
MAX_ROWS = 40  # rows of a long table shown in report.md/html; the CSVs have all of them


def read_records(path) -> pd.DataFrame:
    """A records table from CSV or Parquet; a clear UserError when it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Records file {path} does not exist. Pass the records.csv a grid run wrote "
                        f"(results/<grid>/records.csv) or collect a grid with --grid NAME.")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            try:
                return pd.read_parquet(path)
            except ImportError as exc:
                raise UserError(f"Reading {path} needs a Parquet engine ({exc}). Install pyarrow "
                                f"(pip install pyarrow) or pass the records as CSV.") from None
        if suffix in (".csv", ".tsv", ".txt"):
            return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", keep_default_na=False,
                               na_values=NA_VALUES, low_memory=False)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parse failure is the user's file
        raise UserError(f"Could not read records file {path}: {exc}. Check that it is a valid "
                        f"{suffix.lstrip('.').upper()} file with a header row.") from None
    raise UserError(f"Records file {path} has an unsupported extension {suffix!r}. Use .csv or .parquet.")


# ----------------------------------------------------------------------------------------------------------------
# report.md / report.html
# ----------------------------------------------------------------------------------------------------------------

class Doc:
    """A report as blocks, rendered to both Markdown and self-contained HTML."""

    def __init__(self):
        self.blocks: list[tuple[str, object]] = []

    def h(self, level: int, text: str):
        self.blocks.append((f"h{level}", text))

    def p(self, text: str):
        self.blocks.append(("p", text))

    def items(self, lines):
        self.blocks.append(("ul", list(lines)))

    def table(self, df: pd.DataFrame, note: str = ""):
        self.blocks.append(("table", (df, note)))

    def image(self, rel: str, data: bytes, alt: str):
        self.blocks.append(("img", (rel, data, alt)))

    def markdown(self) -> str:
        out = []
        for kind, c in self.blocks:
            if kind.startswith("h"):
                out += ["#" * int(kind[1]) + " " + c, ""]
            elif kind == "p":
                out += [c, ""]
            elif kind == "ul":
                out += [f"- {x}" for x in c] + [""] if c else ["_(none)_", ""]
            elif kind == "table":
                df, note = c
                out += [md_table(df)] + ([note, ""] if note else [])
            elif kind == "img":
                out += [f"![{c[2]}]({c[0]})", ""]
        return "\n".join(out).rstrip() + "\n"

    def html(self, title: str) -> str:
        import re

        def inline(text: str) -> str:
            t = html.escape(text)
            t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
            t = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", t)
            return re.sub(r"(?<![*\w])\*([^*\s][^*]*?)\*(?![*\w])", r"<i>\1</i>", t)

        def table(df: pd.DataFrame) -> str:  # cells keep their inline Markdown (bold verdicts, `code`)
            cell = lambda v: "" if v is None or (isinstance(v, float) and pd.isna(v)) else inline(str(v))  # noqa: E731
            head = "".join(f"<th>{inline(str(c))}</th>" for c in df.columns)
            rows = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>"
                           for row in df.itertuples(index=False, name=None))
            return f"<table class='t'><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"

        body = []
        for kind, c in self.blocks:
            if kind.startswith("h"):
                body.append(f"<{kind}>{inline(c)}</{kind}>")
            elif kind == "p":
                body.append(f"<p>{inline(c)}</p>")
            elif kind == "ul":
                body.append("<ul>" + "".join(f"<li>{inline(x)}</li>" for x in c) + "</ul>" if c else
                            "<p><i>(none)</i></p>")
            elif kind == "table":
                df, note = c
                body.append(table(df) if df is not None and not df.empty else "<p><i>(none)</i></p>")
                if note:
                    body.append(f"<p class='note'>{inline(note)}</p>")
            elif kind == "img":
                b64 = base64.b64encode(c[1]).decode("ascii")
                body.append(f"<figure><img alt='{html.escape(c[2])}' src='data:image/png;base64,{b64}'/>"
                            f"<figcaption>{html.escape(c[2])}</figcaption></figure>")
        style = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
                 "table.t{border-collapse:collapse;font-size:12px;margin:.5em 0 1em}"
                 "table.t th,table.t td{border-bottom:1px solid #ddd;padding:3px 8px;text-align:left}"
                 "table.t th{background:#f4f4f4}img{max-width:100%}code{background:#f4f4f4;padding:0 3px}"
                 "p.note{font-size:12px;color:#555}figcaption{font-size:12px;color:#555}")
        return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _design_rows(a: stats.Analysis, design: dict | None) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    if design and design.get("axes"):
        axes = pd.DataFrame([{"axis": k, "values": ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)}
                             for k, v in design["axes"].items()])
        training = design.get("training") or {}
        tr = pd.DataFrame([{"setting": k, "value": str(v)} for k, v in training.items()]) if training else None
        return axes, tr
    d = a.records
    rows = []
    for col in (*stats.CELL, "generator", "synthetic_ratio", "seed", "fold"):
        vals = list(dict.fromkeys(d[col])) if col == "generator" else sorted(
            d[col].unique(), key=stats.ratio_sort_key if col == "synthetic_ratio" else stats._natural_key)
        txt = ", ".join(fratio(v) if col == "synthetic_ratio" else str(v) for v in vals[:30])
        rows.append({"axis": col, "values": txt + (f", … ({len(vals)} in all)" if len(vals) > 30 else "")})
    return pd.DataFrame(rows), None


def per_dataset_table(a: stats.Analysis, dataset: str) -> pd.DataFrame:
    """Variants of one dataset: mean over its cells of the seed means, average rank, better/worse counts."""
    b = a.leaderboard[a.leaderboard["dataset"] == dataset]
    g = b.groupby(["generator", "synthetic_ratio", "variant"], sort=False)
    out = g.size().rename("cells").reset_index()
    for m in a.metrics:
        t = metric_title(m)
        out[t] = [fnum(v) for v in g[f"{m}_mean"].mean().to_numpy()]
        out[f"rank ({t})"] = [fnum(v, 2) for v in g[f"{m}_rank"].mean().to_numpy()]
        vs = g[f"{m}_vs_baseline"]
        out[f"▲/▼ ({t})"] = [f"{(v == 'better').sum()}/{(v == 'worse').sum()}" if (v != "baseline").all() else
                             "baseline" for _, v in vs]
    return out.drop(columns=["generator", "synthetic_ratio"]).rename(columns={"variant": "method"})


def paired_summary(a: stats.Analysis) -> pd.DataFrame:
    t = a.tests
    if t.empty:
        return pd.DataFrame()
    g = t.groupby(["metric", "generator", "synthetic_ratio", "variant"], sort=False)
    out = pd.DataFrame({
        "comparisons": g.size(),
        "mean diff": g["mean_diff"].mean(),
        "better": g["verdict"].agg(lambda v: int((v == "better").sum())),
        "worse": g["verdict"].agg(lambda v: int((v == "worse").sum())),
        "median pairs": g["n_pairs"].median(),
        "median MDE (80 %)": g["mde"].median(),
        "Wilcoxon cannot reach α (corrected)": g["wilcoxon_can_reach_alpha"].agg(
            lambda v: int((~v.astype(bool)).sum())),
    }).reset_index()
    out["metric"] = out["metric"].map(metric_title)
    out["mean diff"] = [f"{v:+.4f}" if pd.notna(v) else "–" for v in out["mean diff"]]
    out["median pairs"] = [f"{v:g}" for v in out["median pairs"]]
    return format_frame(out.drop(columns=["generator", "synthetic_ratio"]), digits=4)


def top_tests(a: stats.Analysis, metric: str, n: int = 20) -> pd.DataFrame:
    t = a.tests[a.tests["metric"] == metric]
    if t.empty:
        return pd.DataFrame()
    t = t.sort_values(["p_adj", "p_t"], na_position="last", kind="stable").head(n)
    out = pd.DataFrame({
        "cell": [cell_title(r) for _, r in t.iterrows()],
        "method": t["variant"], "vs": [stats.variant_label(a.baseline, r) for r in t["baseline_ratio"]],
        "n": t["n_pairs"], "diff": [f"{v:+.4f}" for v in t["mean_diff"]],
        "95% CI (t)": [f"[{fnum(l, 4)}, {fnum(h, 4)}]" for l, h in zip(t["ci_t_low"], t["ci_t_high"])],
        "95% CI (boot)": [f"[{fnum(l, 4)}, {fnum(h, 4)}]" for l, h in zip(t["ci_boot_low"], t["ci_boot_high"])],
        "p (t)": [fp(v) for v in t["p_t"]], "p (Wilcoxon)": [fp(v) for v in t["p_wilcoxon"]],
        "p adj": [fp(v) for v in t["p_adj"]], "d_z": [fnum(v, 2) for v in t["cohens_dz"]],
        "W/T/L": [f"{w}/{ti}/{lo}" for w, ti, lo in zip(t["wins"], t["ties"], t["losses"])],
        "verdict": t["verdict"]})
    return out


def hierarchical_table(a: stats.Analysis) -> pd.DataFrame:
    """The hierarchical model per metric and variant, for display."""
    h = a.hierarchical
    if h is None or h.empty:
        return pd.DataFrame()
    out = pd.DataFrame({
        "metric": h["metric"].map(metric_title), "method": h["variant"],
        "vs": [stats.variant_label(a.baseline, r) for r in h["baseline_ratio"]],
        "estimate": [f"{v:+.4f}" if pd.notna(v) else "–" for v in h["estimate"]],
        "95% CI": [f"[{fnum(lo, 4)}, {fnum(hi, 4)}]" for lo, hi in zip(h["ci_low"], h["ci_high"])],
        "p": [fp(v) for v in h["p"]], "p (Holm)": [fp(v) for v in h["p_holm"]], "verdict": h["verdict"],
        "datasets / cells / seeds": [f"{a_}/{b}/{c}" for a_, b, c in zip(h["n_datasets"], h["n_cells"],
                                                                         h["n_units"])],
        "fitted": [f"{lv} ({md})" for lv, md in zip(h["levels"], h["model"])],
        "SD dataset / cell / residual": [" / ".join(fnum(math.sqrt(v), 4) if pd.notna(v) else "–" for v in vs)
                                         for vs in zip(h["var_dataset"], h["var_cell"], h["var_residual"])],
        "note": h["note"].fillna("")})
    if stats.several_budgets(h):
        out.insert(2, "budget", h["budget"].to_numpy())
    return out


def _power_lines(a: stats.Analysis, design=None) -> list[str]:
    """The power statements: seeds the Wilcoxon test needs after correction, MDE, for the sweep as collected."""
    o = a.options
    corr = {"holm": "Holm", "fdr_bh": "Benjamini–Hochberg"}[o["correction"]]
    lines = []
    ps = stats.power_summary(a.tests, o["alpha"])
    for m in a.metrics:
        t = a.tests[(a.tests["metric"] == m) & (a.tests["n_pairs"] >= 2)]
        row = ps[ps["metric"] == m]
        if t.empty or row.empty:
            lines.append(f"{metric_title(m)}: no comparison with 2 or more pairs.")
            continue
        r = row.iloc[0]
        n = int(t["n_pairs"].median())
        lines.append(
            f"{metric_title(m)}: {corr} over families of up to {int(r['family_size'])} comparisons "
            f"({o['family']} family), so the smallest p of a family must be below α/m = "
            f"{r['alpha_family']:.3g}. An exact two-sided Wilcoxon signed-rank test on n non-zero pairs cannot give a "
            f"p below 2/2^n, so it can be significant after correction only from **n = "
            f"{int(r['min_pairs_wilcoxon'])} seeds** (2/2^{int(r['min_pairs_wilcoxon'])} = "
            f"{2 / 2 ** int(r['min_pairs_wilcoxon']):.2g}); these comparisons have a median of {n} pairs (at most "
            f"{int(r['max_pairs'])}), and {int(r['n_cannot_reach'])} of {int(r['n_comparisons'])} cannot reach it. "
            f"The paired t-test has no such floor: with {n} pairs it detects d_z = "
            f"{stats.mde_dz(n, float(r['alpha_family'])):.2f} with 80 % power at α/m (median detectable difference "
            f"{t['mde'].median():.4f}; observed median |diff| {t['mean_diff'].abs().median():.4f}).")
    if design and design.get("n_jobs") is not None and design["n_jobs"] > len(a.records):
        lines.append(f"Family sizes count the comparisons among the {len(a.records)} finished records; the grid as "
                     f"configured has {design['n_jobs']} jobs, so its families are larger and the seeds needed at "
                     f"least as many.")
    return lines


@dataclass
class ReportInputs:
    """What the report's sections read: the analysis, the plots (from report_plots) and what the collector knows
    about the grid and its jobs."""
    analysis: stats.Analysis
    title: str
    plots: dict
    design: dict | None = None
    failed: list | None = None
    missing: list | None = None
    blocked: list | None = None
    files: tuple = ()
    sheets: dict | None = None
    noise: pd.DataFrame | None = None  # collect.noise.noise_table: the test set's own noise, from predictions
    fidelity: pd.DataFrame | None = None  # collect.fidelity_utility: audit metrics against the gain over duplication


def _section_title(doc: Doc, r: ReportInputs) -> None:
    o = r.analysis.options
    d = r.analysis.records
    a = r.analysis
    title = r.title
    doc.h(1, f"GenMed-Rare statistical report — {title}")
    doc.p(f"{len(d)} records · {d['dataset'].nunique()} dataset(s) · {d.groupby(list(stats.CELL)).ngroups} cell(s) · "
          f"{d['generator'].nunique()} method(s) · baseline `{a.baseline}` · metrics "
          f"{', '.join(metric_title(m) for m in a.metrics)}. Significance: "
          f"{'paired t-test' if o['test'] == 't' else 'Wilcoxon signed-rank test'}, {o['correction']} correction "
          f"over each {o['family']} family, α = {o['alpha']:g}; "
          f"Wilcoxon zeros: {o['zero_method']}; bootstrap: {o['n_boot']} resamples, seed {o['bootstrap_seed']}. "
          f"Image sources against duplication: paired t tests and two one-sided tests (TOST) within a declared "
          f"margin. Across the sweep: seed means with small-sample t intervals per method; ranks over datasets. "
          f"Methods and columns: docs/statistics.md.")


def _section_summary(doc: Doc, r: ReportInputs) -> None:
    a, plots = r.analysis, r.plots
    if plots.get("summary"):
        doc.h(2, "Summary")
        rel, data = plots["summary"]
        doc.image(rel, data, f"effect of each method vs {a.baseline}, with 95 % intervals")


def answer_rows(a: stats.Analysis) -> pd.DataFrame:
    """The answer table as shown: one row per image source and reference (none, duplication), one column per
    metric with Δ [95 % interval] and the verdict; across all cells of a budget (stats/answer.csv has the per-cell
    rows)."""
    x = a.answer[a.answer["scope"] == stats.ALL_CELLS_SCOPE] if len(a.answer) else a.answer
    if x is None or x.empty:
        return pd.DataFrame()
    rows, by_budget = {}, stats.several_budgets(x)
    for _, row in x.iterrows():
        key = (row["budget"], row["source"], row["reference_variant"])
        out = rows.setdefault(key, {"image source": row["source"], "compared with": row["reference_variant"],
                                    **({"budget": row["budget"]} if by_budget else {}), "seeds": int(row["n_pairs"])})
        margin = f" (±{row['margin']:g})" if pd.notna(row["margin"]) else ""
        cell = f"{row['mean_diff']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}] **{row['verdict']}**"
        if row.get("note"):
            cell += f"; {row['note']}"
        out[f"{metric_title(row['metric'])}{margin}"] = cell
    order = {v: i for i, v in enumerate(dict.fromkeys(x["source"]))}
    shown = pd.DataFrame(list(rows.values()))
    duplication = shown["compared with"] != a.baseline
    return shown.assign(_d=~duplication, _s=shown["image source"].map(order)).sort_values(
        ["_d", "_s"]).drop(columns=["_d", "_s"]).reset_index(drop=True)


def _section_answer(doc: Doc, r: ReportInputs) -> None:
    a = r.analysis
    doc.h(2, "The answer: does each image source beat duplicating the real rare images?")
    shown = answer_rows(a)
    if shown.empty:
        doc.p(f"No method in these records adds rare images (a generator, an external bank or `{stats.UPPER_BOUND}`) "
              f"next to a `{a.baseline}` or `{stats.DUPLICATION}` run: nothing to answer.")
        return
    alpha = a.options["alpha"]
    doc.p(f"Each image source (generated images, an external bank, or `{stats.UPPER_BOUND}`: held-back *real* rare "
          f"images, the upper bound) against `{a.baseline}` and against duplicating the real rare images "
          f"(`{stats.DUPLICATION}` at the same ratio), paired over seeds in the same cells. Δ = source − reference, "
          f"averaged over the cells (over the cells of one budget: cells of different training budgets are never "
          f"pooled), with its {1 - alpha:.0%} t interval over seeds; a positive Δ favours the source "
          "(for a lower-is-better metric, a negative one). Verdicts: **better** / **worse**: paired t test, Holm "
          "over the sources of a metric and reference; **equivalent**: two one-sided tests show the difference "
          "lies within ±margin (the margin is beside each metric); **inconclusive**: these seeds cannot tell a "
          "difference larger than the margin from none — more seeds, not a conclusion. The interval is "
          "conditional on this test set: every seed is scored on the same test images, so it leaves out the "
          "test set's own sampling noise. Per-cell rows and every column: stats/answer.csv.")
    doc.table(shown)
    vs_dup = a.answer[(a.answer["scope"] == stats.ALL_CELLS_SCOPE) & (a.answer["reference"] == stats.DUPLICATION)]
    if len(vs_dup):
        counts = vs_dup["verdict"].value_counts()
        words = ", ".join(f"{counts[v]} {v}" for v in stats.VERDICTS if counts.get(v))
        doc.p(f"Against duplication: {words} (source × metric comparisons across the cells).")
    if a.answer["effective_ratio_differs"].fillna(False).astype(bool).any():
        doc.p("Where a note says the effective ratios differ, the two runs added different numbers of images "
              f"(e.g. `{stats.UPPER_BOUND}` is capped by the real images held back), so the comparison is not at a "
              "matched ratio.")
    if "optimizer_steps_differ" in a.answer and a.answer["optimizer_steps_differ"].fillna(False).astype(bool).any():
        doc.p("Some paired runs took different numbers of optimiser steps (epoch budgets): a gain may be extra "
              "optimisation rather than the images. A step-matched budget removes this confound.")


def _section_noise(doc: Doc, r: ReportInputs) -> None:
    doc.h(2, "The test set's own noise (test AUROC)")
    noise = r.noise if r.noise is not None else pd.DataFrame()
    done = noise[noise["n_seeds"] >= 2] if len(noise) else noise
    if done.empty:
        why = "; ".join(dict.fromkeys(str(n) for n in noise.get("note", pd.Series(dtype=str)) if n)) or \
            "no per-image predictions with these records"
        doc.p(f"Not computed ({why[:300]}): the intervals above are conditional on this test set. Per-image "
              "predictions are kept by jobs run since the harness wrote predictions.npz; collect with the grid "
              "(or with records.csv beside its runs/ folder) to get this section.")
        return
    doc.p("Every seed is scored on the same test images, so the seed-level interval above leaves out the test "
          "set's sampling noise. Here each bootstrap replicate resamples the test images within each class (the "
          "same images for both members of a pair and for every seed) and then the seeds: an interval for the "
          "mean paired AUROC difference that includes both. DeLong: the paired AUROC test on the test images, one "
          "per seed (median p, and how many seeds reach α). Dominant: whether the between-seed or the test-image "
          "variance of the mean difference is larger (test-set share in brackets). stats/test_noise.csv.")
    multi = done[list(stats.CELL)].drop_duplicates().shape[0] > 1
    shown = pd.DataFrame({
        **({"cell": [cell_title(x) for _, x in done.iterrows()]} if multi else {}),
        "image source": done["source"], "compared with": done["reference_variant"], "seeds": done["n_seeds"],
        "Δ": [f"{v:+.3f}" for v in done["mean_diff"]],
        "seeds only": [f"[{lo:+.3f}, {hi:+.3f}]" for lo, hi in zip(done["seed_ci_low"], done["seed_ci_high"])],
        "seeds and test images": [f"[{lo:+.3f}, {hi:+.3f}]" for lo, hi in zip(done["test_ci_low"],
                                                                               done["test_ci_high"])],
        "DeLong p (median; seeds < α)": [f"{fp(p)}; {int(k)}/{int(n)}" for p, k, n in zip(
            done["delong_p_median"], done["delong_n_significant"], done["n_seeds"])],
        "dominant variance": [f"{d} ({s:.0%} test set)" if pd.notna(s) else str(d)
                              for d, s in zip(done["dominant"], done["test_set_share"])]})
    doc.table(shown.head(MAX_ROWS), _more(shown, "stats/test_noise.csv"))
    counts = done["dominant"].value_counts()
    doc.p("Which variance dominates: " + ", ".join(f"{n} comparison(s) {d}" for d, n in counts.items()) + ".")


def _section_design(doc: Doc, r: ReportInputs) -> None:
    d = r.analysis.records
    a = r.analysis
    design = r.design
    doc.h(2, "Design of the sweep")
    axes, training = _design_rows(a, design)
    if design:
        n_jobs = f", {design['n_jobs']} jobs expected" if design.get("n_jobs") is not None else ""
        doc.p(f"Grid `{design.get('grid', design.get('name', '?'))}`, profile `{design.get('profile') or '-'}`"
              f"{n_jobs}; {len(d)} finished records analysed.")
    else:
        doc.p("Inferred from the records (values present in the table).")
    doc.table(axes)
    if training is not None:
        doc.table(training)


def _section_warnings(doc: Doc, r: ReportInputs) -> None:
    a = r.analysis
    doc.h(2, "Data quality and warnings")
    doc.items(a.warnings or ["No warnings."])
    if len(a.nan_rows):
        doc.h(3, f"NaN metric values ({len(a.nan_rows)}), excluded")
        doc.table(format_frame(a.nan_rows, max_rows=MAX_ROWS), _more(a.nan_rows, "stats/nan_metrics.csv"))
    if len(a.missing_baseline):
        doc.h(3, f"Variants without a baseline to compare with ({len(a.missing_baseline)})")
        doc.table(format_frame(a.missing_baseline, max_rows=MAX_ROWS), _more(a.missing_baseline,
                                                                             "stats/missing_baseline.csv"))
    if len(a.seed_mismatch):
        doc.h(3, f"Comparisons whose seed sets differ ({len(a.seed_mismatch)}); common seeds paired")
        doc.table(format_frame(a.seed_mismatch, max_rows=MAX_ROWS), _more(a.seed_mismatch, "stats/seed_mismatch.csv"))
    if len(a.duplicates):
        doc.h(3, f"Duplicate records ({len(a.duplicates)}), ignored")
        doc.table(format_frame(a.duplicates, max_rows=MAX_ROWS), _more(a.duplicates, "stats/duplicates.csv"))


def _section_jobs(doc: Doc, r: ReportInputs) -> None:
    failed = r.failed
    missing = r.missing
    blocked = r.blocked
    doc.h(2, "Failed, missing and blocked jobs")
    for head, body in jobs_sections(failed, missing, blocked):
        doc.h(3, head)
        if isinstance(body, pd.DataFrame):
            doc.table(body.head(MAX_ROWS), _more(body, "leaderboard.md"))
        else:
            doc.p(body)


def _section_per_dataset(doc: Doc, r: ReportInputs) -> None:
    a = r.analysis
    doc.h(2, "Per-dataset results")
    doc.p("Mean over the dataset's cells of the seed means; rank = average rank in the cells (1 = best); ▲/▼ = "
          "number of cells where the method is significantly better/worse than the baseline after correction. "
          "Per-cell tables with confidence intervals: leaderboard.md.")
    for ds in dict.fromkeys(a.leaderboard["dataset"]):
        doc.h(3, ds)
        doc.table(per_dataset_table(a, ds))


def _section_metric_kinds(doc: Doc, r: ReportInputs) -> None:
    doc.h(2, "Metrics: threshold-free and validation-threshold")
    doc.p(PRIOR_SHIFT_NOTE)


def _section_paired(doc: Doc, r: ReportInputs) -> None:
    a = r.analysis
    design = r.design
    doc.h(2, f"Paired comparisons with `{a.baseline}`")
    doc.p("Per method and metric over all cells. MDE = smallest mean difference a two-sided paired t-test detects "
          "with 80 % power at the corrected threshold α/m of its family, given the number of pairs and the "
          "observed spread. Full table: stats/paired_tests.csv.")
    doc.table(paired_summary(a))
    for m in a.metrics:
        doc.h(3, f"Smallest adjusted p-values: {metric_title(m)}")
        doc.table(top_tests(a, m))
    doc.h(3, "Power under correction")
    doc.items(_power_lines(a, design))


def _section_hierarchical(doc: Doc, r: ReportInputs) -> None:
    a = r.analysis
    doc.h(2, f"Across the sweep: does a method beat `{a.baseline}`? (hierarchical model)")
    doc.p("Per method and metric, the mean paired difference (method − baseline) over the sweep (over the cells of "
          "one training budget: cells of different budgets are never pooled). Each seed's "
          "differences are first averaged over the dataset's cells: a seed's rarity subsample and generator bank "
          "are shared by every backbone and rare count of its dataset, so seeds are crossed with cells, not nested "
          "in them, and the cells are fixed (each weighted equally). Then a small-sample t interval: over the seed "
          f"means with one dataset; with 2 to {stats.MIN_RANDOM_DATASETS - 1} datasets, dataset as a fixed effect "
          "(OLS on the seed means, the equal-weight mean of the dataset means, pooled within-dataset variance on "
          "Σ(n − 1) df: the interval speaks for these datasets, not for datasets like them); with "
          f"{stats.MIN_RANDOM_DATASETS} or more, a t test over the dataset means. 'p (Holm)' is corrected over the "
          "methods of a metric; intervals of [0, 1] metrics are clipped to [−1, 1]. The variance columns "
          "(dataset, cell, seed, residual) are descriptive. Full table: stats/hierarchical.csv.")
    doc.table(hierarchical_table(a))


def _section_gap(doc: Doc, r: ReportInputs) -> None:
    a = r.analysis
    doc.h(2, f"Gap closed: how much of the real-data gain each method recovers (`{stats.UPPER_BOUND}`)")
    if len(a.gap):
        doc.p(f"`{stats.UPPER_BOUND}` adds as many *real* held-back rare-class training images as a method adds "
              f"synthetic (or duplicated) ones, so its gain over `{a.baseline}` is what the same number of real "
              f"images would give. gap closed = method's gain / `{stats.UPPER_BOUND}`'s gain at the method's "
              "effective ratio (interpolated between its ratio forms; held at its largest where the real pool caps it: "
              "upper_capped) "
              "in the same cell (1 = as good as real images, 0 = no gain, < 0 = harm); undefined where the real "
              "images give no gain. Full table: stats/gap_closed.csv.")
        g = a.gap.sort_values(["metric", "gap_closed"], ascending=[True, False], na_position="last")
        shown = pd.DataFrame({"metric": [metric_title(m) for m in g["metric"]],
                              "cell": [cell_title(r) for _, r in g.iterrows()], "method": g["variant"],
                              "gain": [f"{v:+.4f}" for v in g["gain"]],
                              f"{stats.UPPER_BOUND} gain": [f"{v:+.4f}" for v in g["upper_gain"]],
                              "gap closed": [fnum(v, 2) for v in g["gap_closed"]],
                              "95 % BCa interval": [f"[{fnum(lo, 2)}, {fnum(hi, 2)}]" for lo, hi in
                                                    zip(g["gap_ci_low"], g["gap_ci_high"])], "note": g["note"]})
        doc.table(shown.head(MAX_ROWS), _more(shown, "stats/gap_closed.csv"))
    else:
        doc.p(f"No `{stats.UPPER_BOUND}` runs paired with the methods in these records (it needs a rare count "
              "below `all`, and a run at the same ratio form): add it to the grid to measure the real-data upper "
              "bound.")


def _section_ranks(doc: Doc, r: ReportInputs) -> None:
    a = r.analysis
    plots = r.plots
    doc.h(2, "Ranks across datasets (Friedman, Iman–Davenport, Nemenyi, Holm)")
    doc.p("Blocks are datasets, the only independent units of the sweep: cells of one dataset (image size × rare "
          "class × rare count × backbone) share its test set, seeds, rarity subsamples and generator banks, so a "
          "variant's seed means are averaged over the dataset's cells first, and treating the cells as blocks would "
          "pseudo-replicate. Variants or cells with missing values are dropped to keep the design complete (listed "
          "below); with several training budgets only the cells of one budget are ranked (the note names it). "
          f"With fewer than {stats.MIN_RANK_BLOCKS} datasets no test is made — no p-value, no critical "
          "difference — and the average ranks (over datasets, and over cells in avg_rank_cells) are descriptive.")
    if len(a.friedman):
        f = a.friedman.copy()
        budget = ("budget",) if "budget" in f.columns and stats.several_budgets(a.records) else ()
        keep = [c for c in ("metric", *budget, "n_blocks", "n_cells", "k", "tested", "chi2", "p_chi2", "F", "df1",
                            "df2", "p_F", "cd", "control", "dropped_variants", "n_dropped_cells", "note")
                if c in f.columns]
        f = f[keep].rename(columns={"n_blocks": "datasets", "n_cells": "cells"})
        f["metric"] = f["metric"].map(metric_title)
        doc.table(format_frame(f, pcols=("p_chi2", "p_F")))
    for m in a.metrics:
        rr = a.rank_results.get(m, {})
        if "cd" in plots and m in plots["cd"]:
            tested = rr.get("tested", False)
            doc.h(3, f"{'Critical-difference diagram' if tested else 'Average ranks (descriptive)'}: "
                     f"{metric_title(m)}")
            rel, data = plots["cd"][m]
            doc.image(rel, data, f"{'CD diagram' if tested else 'average ranks'}, {metric_title(m)}")
        if len(rr.get("ranks", [])):
            doc.table(format_frame(rr["ranks"].drop(columns="metric"), pcols=("p_vs_control", "p_holm")))


def _section_dose(doc: Doc, r: ReportInputs) -> None:
    a = r.analysis
    plots = r.plots
    doc.h(2, "Dose-response: does adding more rare images help?")
    model_note = ("Slope of the metric per doubling of the effective ratio — the rare images each job actually "
                  "added per kept real rare image, so `balance` and `real_percentage=P` sit where their counts put "
                  "them. For each seed and method, an OLS slope of the metric on log2(effective ratio) after "
                  "centring both within each cell and method; the method's slope is the mean of its per-seed "
                  "slopes, t-tested with n − 1 df (n = seeds): the seed is the replicate. With only two ratio forms "
                  "the 'slope' is a two-point contrast (kind), and contrast_high_low is the plain difference. "
                  f"vs_duplication: the per-seed slope minus `{stats.DUPLICATION}`'s, t-tested, where it has a dose "
                  "curve. Methods that add no images (effective ratio 0) are horizontal reference lines in the "
                  "plots. Each training budget has its own slopes (cells of different budgets are never pooled). "
                  "p_holm: Holm over methods (and budgets).")
    doc.p(model_note)
    if len(a.dose):
        dd = a.dose.copy() if stats.several_budgets(a.dose) else a.dose.drop(columns="budget", errors="ignore")
        dd["metric"] = dd["metric"].map(metric_title)
        doc.table(format_frame(dd, pcols=("p", "p_holm"), digits=4))
    else:
        doc.p("No method has two or more ratio forms that add images: no dose-response model.")
    for m in a.metrics:
        if "dose" in plots and m in plots["dose"]:
            rel, data = plots["dose"][m]
            doc.image(rel, data, f"dose-response, {metric_title(m)}")


def _section_audit(doc: Doc, r: ReportInputs) -> None:
    a = r.analysis
    sheets = r.sheets
    doc.h(2, "Generator audit")
    brief, explained = report_figures.audit_brief(a.audit)
    if len(brief):
        doc.p("Mean over seeds per cell and generator; every audit column is in stats/audit.csv.")
        doc.table(format_frame(brief, max_rows=200))
        doc.items(explained)
    else:
        doc.p("No audit_* columns in the records.")
    for label, sheet in (sheets or {}).items():
        doc.h(3, f"{label} (seed {sheet.get('seed')})")
        for kind, alt in (("sheet", "real rare-class training images beside synthetic ones"),
                          ("closest", "the synthetic images closest to a training image, each above it")):
            if kind in sheet:
                doc.image(sheet[kind][0], sheet[kind][1], f"{label}: {alt}")


FIDELITY_SHOWN = ("metric", "audit_label", "scope", "n_banks", "n_pairs", "n_datasets", "rho", "ci_low", "ci_high",
                  "reading")


def _section_fidelity(doc: Doc, r: ReportInputs) -> None:
    from benchmark.collect import fidelity_utility as fu

    fidelity = r.fidelity if r.fidelity is not None else pd.DataFrame(columns=list(fu.COLUMNS))
    doc.h(2, "Does fidelity predict utility?")
    dup = r.analysis.options.get("duplication", stats.DUPLICATION)
    doc.p(f"Spearman's ρ between each audit metric of a bank and the bank's paired gain over duplication "
          f"(`{dup}` at the same ratio, cell and seed; positive gain = better), one point per bank (its mean gain "
          f"over the ratios it was used at, or at one ratio; each training budget its own scope), with a 95 % "
          f"bootstrap interval over banks. "
          f"Banks of several datasets are pooled, so a correlation can reflect differences between datasets. "
          f"Every row and column: stats/fidelity_utility.csv; method: docs/statistics.md.")
    if fidelity.empty:
        doc.p(f"No bank could be related to its utility: no record with audit columns has a `{dup}` twin at the "
              f"same ratio, cell and seed.")
        return
    most = int(fidelity["n_banks"].max())
    if most < fu.MIN_BANKS_CI:
        doc.p(f"**Too few banks to tell**: at most {most} bank(s) per comparison, and an interval needs at least "
              f"{fu.MIN_BANKS_CI}. The correlations in stats/fidelity_utility.csv are descriptive only.")
    shown = fidelity[fidelity["scope"].astype(str).str.startswith(fu.ALL_RATIOS)][list(FIDELITY_SHOWN)].copy()
    shown["metric"] = shown["metric"].map(metric_title)
    doc.table(format_frame(shown.head(MAX_ROWS)), _more(shown, "stats/fidelity_utility.csv"))
    clear = fidelity[fidelity["reading"].str.startswith("better fidelity")]
    if len(clear):
        doc.items([f"{metric_title(x.metric)} · {x.audit_label} ({x.scope}): ρ = {x.rho:+.2f} [{x.ci_low:+.2f}, "
                   f"{x.ci_high:+.2f}], {x.n_banks} banks — {x.reading}" for x in clear.itertuples()])
    elif most >= fu.MIN_BANKS_CI:
        doc.p("No audit metric's interval excludes 0: these banks give no evidence that fidelity predicts utility.")


def _section_files(doc: Doc, r: ReportInputs) -> None:
    files = r.files
    doc.h(2, "Files")
    doc.items([f"`{f}`" for f in files])


# the report's sections, in order: one function each
SECTIONS = (_section_title, _section_answer, _section_noise, _section_summary, _section_design, _section_warnings, _section_jobs, _section_per_dataset,
            _section_metric_kinds, _section_paired, _section_hierarchical, _section_gap, _section_ranks,
            _section_dose, _section_audit, _section_fidelity, _section_files)


def build_report(a: stats.Analysis, title: str, plots: dict, design=None, failed=None, missing=None, blocked=None,
                 files=(), sheets=None, noise=None, fidelity=None) -> Doc:
    """The report as a Doc (Markdown and HTML), section by section (SECTIONS)."""
    inputs = ReportInputs(a, title, plots, design, failed, missing, blocked, files, sheets, noise, fidelity)
    doc = Doc()
    for section in SECTIONS:
        section(doc, inputs)
    return doc

def _more(df: pd.DataFrame, where: str) -> str:
    return f"First {MAX_ROWS} of {len(df)} rows; all in {where}." if len(df) > MAX_ROWS else ""


# ----------------------------------------------------------------------------------------------------------------
# Everything
# ----------------------------------------------------------------------------------------------------------------

def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def write_all(a: stats.Analysis, out_dir, title: str | None = None, design: dict | None = None, failed=None,
              missing=None, blocked=None, plots: bool = True, sheets: dict | None = None,
              noise: pd.DataFrame | None = None, fidelity: pd.DataFrame | None = None) -> dict[str, Path]:
    """Write leaderboards, stats CSVs, plots and the reports under ``out_dir``; returns {label: path}.

    ``failed``/``missing``/``blocked`` are lists of dicts (key, name, error/reason) or None when not known;
    ``sheets``: the generators' picture sheets (benchmark.collect.report_figures.load_sheets); ``noise``: the test
    set's own noise (benchmark.collect.noise.noise_table), None when the jobs' predictions are not at hand;
    ``fidelity``: the fidelity-utility table (benchmark.collect.fidelity_utility), computed from ``a`` when None.
    """
    out = Path(out_dir)
    title = title or (design or {}).get("grid") or out.name
    written: dict[str, Path] = {}

    def put(rel: str, data: bytes | str) -> None:
        write_bytes_atomic(out / rel, data.encode("utf-8") if isinstance(data, str) else data)
        written[rel] = out / rel

    from benchmark.collect.fidelity_utility import fidelity_utility
    from benchmark.collect.noise import COLUMNS as NOISE_COLUMNS

    if fidelity is None:
        fidelity = fidelity_utility(a.records, a.metrics, a.options.get("duplication", stats.DUPLICATION),
                                    a.options.get("n_boot", stats.N_BOOT), a.options.get("bootstrap_seed", 0))

    tables = {"answer": a.answer, "test_noise": noise if noise is not None else pd.DataFrame(
        columns=list(NOISE_COLUMNS)), "paired_tests": a.tests, "hierarchical": a.hierarchical,
              "power": stats.power_summary(a.tests, a.options["alpha"]),
              "missing_baseline": a.missing_baseline, "seed_mismatch": a.seed_mismatch,
              "nan_metrics": a.nan_rows, "duplicates": a.duplicates, "friedman": a.friedman, "ranks": a.ranks,
              "dose_response": a.dose, "dose_curves": a.dose_curves, "audit": a.audit, "gap_closed": a.gap,
              "fidelity_utility": fidelity}
    for name in STATS_FILES:
        put(f"stats/{name}.csv", tables[name].to_csv(index=False))
    put("leaderboard.csv", a.leaderboard.to_csv(index=False))
    put("leaderboard.md", leaderboard_markdown(a, title, failed, missing, blocked))
    put("leaderboard.tex", leaderboard_latex(a, title))
    figs: dict[str, dict] = {"cd": {}, "dose": {}}
    if plots:
        summary = report_plots.plot_effects(report_plots.effect_rows(a), a.baseline)
        if summary is not None:
            figs["summary"] = (report_plots.SUMMARY_PNG, summary)
            put(report_plots.SUMMARY_PNG, summary)
        for m in a.metrics:
            rr = a.rank_results.get(m, {})
            if "avg_ranks" in rr:
                nb = rr["summary"]["n_blocks"]
                sub = (f"Nemenyi CD, α = {a.options['alpha']:g}" if rr.get("tested") else
                       f"descriptive: fewer than {stats.MIN_RANK_BLOCKS} datasets, no test")
                data = report_plots.plot_cd(rr["avg_ranks"], rr["summary"]["cd"], rr["cliques"],
                                            f"{metric_title(m)}: average ranks over {nb} dataset(s) ({sub})")
                rel = f"plots/cd_{_safe(m)}.png"
                figs["cd"][m] = (rel, data)
            curves = a.dose_curves[a.dose_curves["metric"] == m]
            if len(curves) and (curves["effective_ratio"] > 0).any():
                coef = a.dose[a.dose["metric"] == m] if len(a.dose) else a.dose
                rel = f"plots/dose_{_safe(m)}.png"
                figs["dose"][m] = (rel, report_plots.plot_dose(curves, coef, m, a.baseline))
        for kind in (figs["cd"], figs["dose"]):
            for rel, data in kind.values():
                put(rel, data)
    files = sorted([*written, "report.md", "report.html"])
    files += [entry[kind][0] for entry in (sheets or {}).values() for kind in ("sheet", "closest") if kind in entry]
    doc = build_report(a, title, figs, design, failed, missing, blocked, sorted(files), sheets, noise, fidelity)
    put("report.md", doc.markdown())
    put("report.html", doc.html(f"GenMed-Rare report — {title}"))
    return written
