"""benchmark.collect.report (with report_tables and report_plots): file schemas, leaderboards (md/tex/csv),
self-contained HTML, plots, atomic writes, reading."""

import html.parser
import os
import re

import numpy as np
import pandas as pd
import pytest

from benchmark import stats
from benchmark.collect import report, report_tables
from benchmark.core.errors import UserError
from benchmark.run.run_dir import write_bytes_atomic
from tests.test_stats import make_records

FAILED = [{"key": "f1", "name": "ds0-dcgan-9",
           "error": "Traceback (most recent call last):\n  ...\nRuntimeError: CUDA out of memory"}]
MISSING = [{"key": "m1", "name": "ds1-dcgan-7"}, {"key": "m2", "name": "ds1-dcgan-8"}]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    df = make_records(effects={"dcgan": 0.04}, slopes={"dcgan": 0.01}, seeds=6)
    df.loc[5, "test_auroc"] = np.nan
    a = stats.analyse(df)
    out = tmp_path_factory.mktemp("report") / "rare_sweep-smoke"
    design = {"grid": "rare_sweep", "profile": "smoke", "axes": {"dataset": ["ds0", "ds1"], "seed": [0, 1, 2]},
              "training": {"epochs": 4}, "n_jobs": 123}
    paths = report.write_all(a, out, design=design, failed=FAILED, missing=MISSING, blocked=[])
    return a, out, paths


def test_every_output_file_is_written(written):
    a, out, paths = written
    expected = {"leaderboard.md", "leaderboard.tex", "leaderboard.csv", "report.md", "report.html",
                *[f"stats/{n}.csv" for n in report.STATS_FILES],
                *[f"plots/{k}_{m}.png" for k in ("cd", "dose") for m in a.metrics], "plots/summary_effects.png"}
    assert set(paths) == expected
    for rel in expected:
        assert (out / rel).is_file() and paths[rel] == out / rel
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]          # no temporary files left
    for png in out.glob("plots/*.png"):
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5000


def test_stats_csv_schemas(written):
    a, out, _ = written
    paired = pd.read_csv(out / "stats" / "paired_tests.csv", keep_default_na=False, na_values=[""])
    assert list(paired.columns) == list(stats.PAIRED_COLUMNS)
    assert len(paired) == 4 * 4 * len(stats.DEFAULT_METRICS)
    assert paired["p_t"].between(0, 1).all() and (paired["ci_t_low"] <= paired["ci_t_high"]).all()
    assert (paired["ci_boot_low"] <= paired["mean_diff"]).all()
    assert (paired["mean_diff"] <= paired["ci_boot_high"]).all()
    np.testing.assert_allclose(paired["mean_diff"], a.tests["mean_diff"], rtol=1e-12)
    nan = pd.read_csv(out / "stats" / "nan_metrics.csv")
    assert len(nan) == 1 and nan.loc[0, "metric"] == "test_auroc" and nan.loc[0, "key"] == "k5"
    fr = pd.read_csv(out / "stats" / "friedman.csv")
    assert fr["metric"].tolist() == a.metrics
    assert {"chi2", "p_chi2", "F", "p_F", "cd", "control", "chi2_uncorrected"} <= set(fr.columns)
    ranks = pd.read_csv(out / "stats" / "ranks.csv")
    assert {"metric", "variant", "avg_rank", "p_holm", "is_control"} <= set(ranks.columns)
    dose = pd.read_csv(out / "stats" / "dose_response.csv")
    assert list(dose.columns) == list(stats.DOSE_COLUMNS)
    assert {"metric", "generator", "slope", "ci_low", "ci_high", "p", "p_holm", "kind", "df"} <= set(dose.columns)
    answer = pd.read_csv(out / "stats" / "answer.csv")
    assert list(answer.columns) == list(stats.ANSWER_COLUMNS)
    hier = pd.read_csv(out / "stats" / "hierarchical.csv")
    assert list(hier.columns) == list(stats.HIERARCHICAL_COLUMNS) and len(hier) == 4 * len(stats.DEFAULT_METRICS)
    power = pd.read_csv(out / "stats" / "power.csv")
    assert power["metric"].tolist() == a.metrics and (power["family_size"] == 16).all()
    assert (power["min_pairs_wilcoxon"] == stats.wilcoxon_min_pairs(0.05 / 16)).all()
    for name in ("missing_baseline", "seed_mismatch", "duplicates"):   # empty, but with a header
        assert pd.read_csv(out / "stats" / f"{name}.csv").empty


def test_leaderboard_csv_and_markdown(written):
    a, out, _ = written
    lb = pd.read_csv(out / "leaderboard.csv")
    for m in a.metrics:
        for c in ("n", "mean", "std", "ci_low", "ci_high", "ci_reliable", "rank", "p_adj", "vs_baseline"):
            assert f"{m}_{c}" in lb.columns
        assert lb[f"{m}_ci_low"].between(0, 1).all() and lb[f"{m}_ci_high"].between(0, 1).all()
    assert {"compute_hours", "n_runs", "variant", "effective_ratio"} <= set(lb.columns) and len(lb) == 4 * 5
    md = (out / "leaderboard.md").read_text()
    assert md.count("\n## ds") == 4 and "## ds0 · 28 px · rare class minority · 10 rare images · bb0" in md
    r = a.leaderboard.iloc[1]
    cellstr = (f"| {r['variant']} | – | 6 | {r['test_auroc_mean']:.3f} ± {r['test_auroc_std']:.3f} "
               f"[{r['test_auroc_ci_low']:.3f}, {r['test_auroc_ci_high']:.3f}]")
    assert cellstr in md
    # significance marks where the tests say so
    better = a.leaderboard[a.leaderboard[f"{a.metrics[1]}_vs_baseline"] == "better"]
    assert len(better) and md.count("▲") >= len(better)
    assert "## Failed jobs (1)" in md and "| f1 | ds0-dcgan-9 | RuntimeError: CUDA out of memory |" in md
    assert "## Missing jobs (2)" in md and "ds1-dcgan-8" in md and "## Blocked jobs (0)" in md


def test_leaderboard_latex_escapes_and_balances(written):
    a, out, _ = written
    tex = (out / "leaderboard.tex").read_text()
    assert tex.count("\\begin{longtable}") == tex.count("\\end{longtable}") == 1
    assert "class\\_weight" in tex and "class_weight" not in tex.replace("class\\_weight", "")
    body = [ln for ln in tex.splitlines() if ln.startswith(("none", "dcgan", "class"))]
    assert len(body) == 4 * 5 and all(ln.count("&") == 4 + len(a.metrics) and ln.endswith("\\\\") for ln in body)
    assert "$\\pm$" in tex and "·" not in tex and "±" not in tex


def test_report_markdown_sections_and_images(written):
    a, out, _ = written
    md = (out / "report.md").read_text()
    for heading in ("## Design of the sweep", "## Data quality and warnings", "## Failed, missing and blocked jobs",
                    "## Per-dataset results", "## Metrics: threshold-free and validation-threshold",
                    "## Paired comparisons with `none`", "### Power under correction",
                    "## Across the sweep: does a method beat `none`? (hierarchical model)",
                    "## Ranks across datasets", "## Dose-response", "## Generator audit"):
        assert heading in md
    assert report.PRIOR_SHIFT_NOTE in md and "moves the arg-max (0.5) operating point" in md
    # two datasets: the rank test is refused, the ranks are still shown (descriptive diagrams, no CD)
    assert md.count("2 independent block(s) (datasets): a rank test needs at least 3, so none was made") == \
        len(a.metrics)
    assert "### Average ranks (descriptive): test AUROC" in md and "Critical-difference diagram" not in md
    n_fam = 16
    need = stats.wilcoxon_min_pairs(0.05 / n_fam)
    assert f"only from **n = {need} seeds**" in md and f"families of up to {n_fam} comparisons" in md
    assert "dcgan@4 | none | +" in md                                   # the hierarchical table
    assert "Grid `rare_sweep`, profile `smoke`, 123 jobs expected" in md
    for m in a.metrics:
        assert f"](plots/cd_{m}.png)" in md and f"](plots/dose_{m}.png)" in md
    assert "**FID**: Fréchet distance" in md and "RuntimeError: CUDA out of memory" in md  # the short audit table


class _Parser(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs, self.hrefs, self.stack, self.errors = [], [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.srcs.append(attrs.get("src", ""))
        if "href" in attrs:
            self.hrefs.append(attrs["href"])
        if tag not in ("img", "meta", "br"):
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(tag)


def test_report_html_is_self_contained(written):
    a, out, _ = written
    text = (out / "report.html").read_text()
    p = _Parser()
    p.feed(text)
    assert not p.errors and not p.stack
    assert len(p.srcs) == 2 * len(a.metrics) + 1 and all(s.startswith("data:image/png;base64,") for s in p.srcs)  # + summary
    assert not p.hrefs and "http://" not in text and "https://" not in text and "<script" not in text
    assert "<table" in text and "CUDA out of memory" in text


def test_records_mode_says_jobs_are_unknown(tmp_path):
    a = stats.analyse(make_records(datasets=("ds0",), rare_counts=(10,), seeds=3), ["test_auroc"])
    report.write_all(a, tmp_path, plots=False)
    md = (tmp_path / "leaderboard.md").read_text()
    assert md.count("Not known when collecting from a records file") == 3
    assert not (tmp_path / "plots").exists()
    assert "Inferred from the records" in (tmp_path / "report.md").read_text()


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    """The writer every report file goes through (benchmark.run.run_dir.write_bytes_atomic)."""
    target = tmp_path / "x.csv"
    write_bytes_atomic(target, b"old\n")
    write_bytes_atomic(target, b"new\n")
    assert target.read_text() == "new\n"
    from benchmark.run.run_dir import results_umask

    assert target.stat().st_mode & 0o777 == 0o666 & ~results_umask()  # the results mode, whatever the umask

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_bytes_atomic(target, b"broken\n")
    assert target.read_text() == "new\n" and sorted(p.name for p in tmp_path.iterdir()) == ["x.csv"]


def test_read_records_keeps_method_names_and_explains_errors(tmp_path, monkeypatch):
    df = make_records(datasets=("ds0",), rare_counts=(10, "all"), seeds=2)
    path = tmp_path / "records.csv"
    df.to_csv(path, index=False)
    back = report.read_records(path)
    assert "none" in set(back["generator"]) and set(back["rare_count"].astype(str)) == {"10", "all"}
    with pytest.raises(UserError, match=re.escape(f"Records file {tmp_path / 'nope.csv'} does not exist")):
        report.read_records(tmp_path / "nope.csv")
    (tmp_path / "r.xlsx").write_text("x")
    with pytest.raises(UserError, match="unsupported extension '.xlsx'. Use .csv or .parquet"):
        report.read_records(tmp_path / "r.xlsx")
    (tmp_path / "r.parquet").write_bytes(b"not parquet")

    def no_engine(*a, **k):
        raise ImportError("Unable to find a usable engine")

    monkeypatch.setattr(pd, "read_parquet", no_engine)
    with pytest.raises(UserError, match="needs a Parquet engine.*pip install pyarrow"):
        report.read_records(tmp_path / "r.parquet")


def test_formatting_helpers():
    assert report_tables.metric_title("test_rare_sensitivity") == "test rare-class sensitivity"
    assert report_tables.metric_title("my_score") == "my score"
    fp = report_tables.fp
    assert fp(0.0004) == "<0.001" and fp(0.01234) == "0.0123" and fp(np.nan) == "–"
    assert report_tables.tex_escape("a_b & 50% {x}\\") == "a\\_b \\& 50\\% \\{x\\}\\textbackslash{}"
    assert report_tables.md_table(pd.DataFrame({"a": ["x|y"]})) == "| a |\n|---|\n| x\\|y |\n"


def test_ratio_forms_and_few_seeds_in_the_leaderboard_and_plots(tmp_path):
    variants = (("none", 0), ("oversample", 1), ("dcgan", 1), ("dcgan", 2), ("dcgan", "balance"),
                ("dcgan", "real_percentage=50"))
    df = make_records(datasets=("ds0", "ds1", "ds2"), rare_counts=(20,), variants=variants, seeds=3,
                      slopes={"dcgan": 0.02})
    a = stats.analyse(df)
    paths = report.write_all(a, tmp_path)
    md = (tmp_path / "leaderboard.md").read_text()
    eff = (399 - 20) / 20
    assert f"| dcgan@balance | ×{eff:.3g} | 3 |" in md and "| dcgan@real_percentage=50 | ×" in md
    n_cells = len(df.groupby(["dataset", "generator", "synthetic_ratio"])) * len(a.metrics)
    assert md.count("[n<5]") == n_cells + 1                               # every interval, and the legend
    tex = (tmp_path / "leaderboard.tex").read_text()
    assert "real\\_percentage=50" in tex and "[$n<5$]" in tex and "$\\times$" in tex
    rep = (tmp_path / "report.md").read_text()
    assert "### Critical-difference diagram: test AUROC" in rep            # three datasets: tested
    for m in a.metrics:
        assert f"plots/dose_{m}.png" in paths and f"plots/cd_{m}.png" in paths
    curves = pd.read_csv(tmp_path / "stats" / "dose_curves.csv", keep_default_na=False, na_values=[""])
    c = curves[(curves.metric == "test_auroc") & (curves.dataset == "ds0")].set_index("variant")
    assert c.loc["dcgan@balance", "effective_ratio"] == pytest.approx(eff) and c.loc["none", "effective_ratio"] == 0


def test_the_answer_table_opens_the_report(tmp_path):
    """The first section of the committed study's report is the answer table: each image source against none and
    against duplication, Δ [95 % t interval] and a verdict per metric, the margin beside each metric."""
    from pathlib import Path

    records = pd.read_csv(Path(__file__).resolve().parents[1] / "docs" / "study_v1" / "records.csv")
    a = stats.analyse(records)
    report.write_all(a, tmp_path, title="study")
    md = (tmp_path / "report.md").read_text()
    sections = [line for line in md.splitlines() if line.startswith("## ")]
    assert sections[0].startswith("## The answer: does each image source beat duplicating")
    first = md.split("\n## ", 2)[1]
    row = next(line for line in first.splitlines() if line.startswith("| dcgan@balance | oversample@balance |"))
    assert "| 8 | -0.025 [-0.055, +0.005] **inconclusive** |" in row
    assert "test AUROC (±0.02)" in first and "Against duplication: 9 inconclusive" in first
    shown = report.answer_rows(a)
    assert set(shown["compared with"]) == {"none", "oversample@balance"}
    assert (pd.read_csv(tmp_path / "stats" / "answer.csv")["verdict"].isin(stats.VERDICTS)).all()
