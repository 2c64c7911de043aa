"""benchmark.report: file schemas, leaderboards (md/tex/csv), self-contained HTML, plots, atomic writes, reading."""

import html.parser
import os
import re

import numpy as np
import pandas as pd
import pytest

from benchmark import report, stats
from benchmark.errors import UserError
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
                *[f"plots/{k}_{m}.png" for k in ("cd", "dose") for m in a.metrics]}
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
    assert len(paired) == 4 * 4 * 3
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
    assert list(dose.columns) == ["metric", "generator", "slope", "se", "ci_low", "ci_high", "p", "p_holm", "n_obs",
                                  "n_ratios", "model", "scale"]
    for name in ("missing_baseline", "seed_mismatch", "duplicates"):   # empty, but with a header
        assert pd.read_csv(out / "stats" / f"{name}.csv").empty


def test_leaderboard_csv_and_markdown(written):
    a, out, _ = written
    lb = pd.read_csv(out / "leaderboard.csv")
    for m in a.metrics:
        for c in ("n", "mean", "std", "ci_low", "ci_high", "rank", "p_adj", "vs_baseline"):
            assert f"{m}_{c}" in lb.columns
    assert {"compute_hours", "n_runs", "variant"} <= set(lb.columns) and len(lb) == 4 * 5
    md = (out / "leaderboard.md").read_text()
    assert md.count("\n## ds") == 4 and "## ds0 · 28 px · rare class minority · 10 rare images · bb0" in md
    r = a.leaderboard.iloc[1]
    cellstr = (f"| {r['generator']} | 0 | 6 | {r['test_auroc_mean']:.3f} ± {r['test_auroc_std']:.3f} "
               f"[{r['test_auroc_ci_low']:.3f}, {r['test_auroc_ci_high']:.3f}]")
    assert cellstr in md
    # significance marks where the tests say so
    better = a.leaderboard[a.leaderboard["test_balanced_accuracy_vs_baseline"] == "better"]
    assert len(better) and md.count("▲") >= len(better)
    assert "## Failed jobs (1)" in md and "| f1 | ds0-dcgan-9 | RuntimeError: CUDA out of memory |" in md
    assert "## Missing jobs (2)" in md and "ds1-dcgan-8" in md and "## Blocked jobs (0)" in md


def test_leaderboard_latex_escapes_and_balances(written):
    a, out, _ = written
    tex = (out / "leaderboard.tex").read_text()
    assert tex.count("\\begin{longtable}") == tex.count("\\end{longtable}") == 1
    assert "class\\_weight" in tex and "class_weight" not in tex.replace("class\\_weight", "")
    body = [ln for ln in tex.splitlines() if ln.startswith(("none", "dcgan", "class"))]
    assert len(body) == 4 * 5 and all(ln.count("&") == 3 + len(a.metrics) and ln.endswith("\\\\") for ln in body)
    assert "$\\pm$" in tex and "·" not in tex and "±" not in tex


def test_report_markdown_sections_and_images(written):
    a, out, _ = written
    md = (out / "report.md").read_text()
    for heading in ("## Design of the sweep", "## Data quality and warnings", "## Failed, missing and blocked jobs",
                    "## Per-dataset results", "## Paired comparisons with `none`", "## Ranks across cells",
                    "## Dose-response", "## Generator audit", "### Power"):
        assert heading in md
    assert "Grid `rare_sweep`, profile `smoke`, 123 jobs expected" in md
    for m in a.metrics:
        assert f"](plots/cd_{m}.png)" in md and f"](plots/dose_{m}.png)" in md
    assert "audit_fid" in md and "RuntimeError: CUDA out of memory" in md


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
    assert len(p.srcs) == 2 * len(a.metrics) and all(s.startswith("data:image/png;base64,") for s in p.srcs)
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
    target = tmp_path / "x.csv"
    report.atomic_write_text(target, "old\n")
    report.atomic_write_text(target, "new\n")
    assert target.read_text() == "new\n"
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        report.atomic_write_text(target, "broken\n")
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
    assert report.metric_title("test_rare_sensitivity") == "test rare-class sensitivity"
    assert report.metric_title("my_score") == "my score"
    assert report.fp(0.0004) == "<0.001" and report.fp(0.01234) == "0.0123" and report.fp(np.nan) == "–"
    assert report.tex_escape("a_b & 50% {x}\\") == "a\\_b \\& 50\\% \\{x\\}\\textbackslash{}"
    assert report.md_table(pd.DataFrame({"a": ["x|y"]})) == "| a |\n|---|\n| x\\|y |\n"
