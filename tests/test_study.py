"""The committed studies (docs/study_v1/ + docs/study_v1.md, the first; docs/study/ + docs/study.md, the second):
their records collect into the committed leaderboards, every method has its paired seeds, the generated tables in
the write-ups are what the records give, and the committed reports' sections and images load."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.test_collect_end_to_end import assert_images_load

REPO = Path(__file__).resolve().parent.parent
STUDIES = {  # folder: (write-up, variants of the leaderboard, minimum paired seeds, datasets with sample sheets)
    "study_v1": ("study_v1.md", {"none", "class_weight", "focal", "logit_adjust", "oversample@balance",
                                 "real_extra@1", "real_extra@balance", "dcgan@1", "dcgan@4", "dcgan@balance",
                                 "ddpm_cpu@1", "ddpm_cpu@balance"}, 8, ("breastmnist",)),
    "study": ("study.md", {"none", "logit_adjust", "oversample@1", "oversample@balance", "real_extra@1",
                           "real_extra@balance", "dcgan@1", "dcgan@balance", "ddpm_cpu@balance"}, 5,
              ("breastmnist", "retinamnist")),
}


@pytest.fixture(scope="module", params=list(STUDIES))
def study(request):
    return request.param


@pytest.fixture(scope="module")
def recollected(study, tmp_path_factory):
    out = tmp_path_factory.mktemp(study)
    ran = subprocess.run([sys.executable, str(REPO / "launch" / "collect.py"), "--records",
                          str(REPO / "docs" / study / "records.csv"), "--out", str(out)], capture_output=True,
                         text=True, cwd=REPO, timeout=600)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    return out


def board_tables(text: str) -> str:
    """leaderboard.md without its title line and its job lists: the committed one was collected from the grid
    (titled by the grid, listing 0 failed / missing jobs), a re-collection from records.csv cannot know those."""
    body = text.split("\n", 1)[1]
    return body.split("\n## Failed jobs", 1)[0]


def test_the_committed_records_give_the_committed_leaderboard(study, recollected):
    folder = REPO / "docs" / study
    fresh, committed = ((p / "leaderboard.md").read_text() for p in (recollected, folder))
    assert board_tables(fresh) == board_tables(committed)
    assert "## Failed jobs (0)" in committed and "## Missing jobs (0)" in committed  # the whole study finished
    fresh, committed = (pd.read_csv(p / "leaderboard.csv") for p in (recollected, folder))
    pd.testing.assert_frame_equal(fresh, committed)


def test_every_study_method_has_its_paired_seeds(study):
    _, variants, min_seeds, _ = STUDIES[study]
    records = pd.read_csv(REPO / "docs" / study / "records.csv", keep_default_na=False)
    board = pd.read_csv(REPO / "docs" / study / "leaderboard.csv")
    assert set(board["variant"]) == variants
    keys = [c for c in ("dataset", "budget", "generator", "synthetic_ratio") if c in records.columns]
    seeds = records.groupby(keys)["seed"].nunique()
    assert (seeds >= min_seeds).all(), seeds
    per_cell = records.groupby([c for c in ("dataset", "budget") if c in records.columns])
    for _, cell in per_cell:  # every seed of a cell has every variant of that cell: paired
        assert cell.groupby("seed")["generator"].size().nunique() == 1


def test_study_md_tables_are_what_the_records_give(study, recollected):
    from benchmark.collect.study import STUDY_TABLES_BEGIN, STUDY_TABLES_END, study_tables

    text = (REPO / "docs" / STUDIES[study][0]).read_text()
    committed = text.split(STUDY_TABLES_BEGIN, 1)[1].split(STUDY_TABLES_END, 1)[0]
    assert committed.strip() == study_tables(recollected, records=REPO / "docs" / study / "records.csv").strip()


def test_the_committed_report_has_its_sections_and_every_image_loads(study):
    folder = REPO / "docs" / study
    html_text = (folder / "report.html").read_text()
    for section in ("Summary", "Per-dataset results", "Paired comparisons", "Gap closed", "Dose-response",
                    "Generator audit"):
        assert f"<h2>{section}" in html_text, section
    assert_images_load(html_text, folder)
    for dataset in STUDIES[study][3]:
        for generator in ("dcgan", "ddpm_cpu"):
            for kind in ("sheet", "closest"):
                assert (folder / "samples" / f"{generator}_{dataset}_rare_20_{kind}.png").is_file()


def test_the_second_study_opens_with_its_answer_and_measures_the_confound():
    text = (REPO / "docs" / "study.md").read_text()
    tables = text.split("<!-- study tables", 1)[1]
    assert tables.split("\n", 2)[1].startswith("### The answer")
    assert "### The epoch-budget confound" in tables and "**difference** (epoch − step-matched)" in tables


def test_budget_confound_is_the_paired_difference_of_the_two_gains():
    """budget_confound against a direct computation: per seed, (oversample − none) under the epoch budget minus the
    same under the step-matched budget; mean, t interval and p from scipy on those differences."""
    import numpy as np
    from scipy import stats as sps

    from benchmark.collect.study import budget_confound, confound_table

    rng = np.random.default_rng(3)
    rows = []
    for seed in range(6):
        for budget, steps in (("epochs=3", {"none": 42, "oversample": 75}),
                              ("match_real_epochs=3", {"none": 42, "oversample": 42})):
            for generator in ("none", "oversample"):
                rows.append({"dataset": "breastmnist", "budget": budget, "generator": generator, "seed": seed,
                             "synthetic_ratio": "balance" if generator == "oversample" else "-",
                             "optimizer_steps": steps[generator], "test_auroc": rng.uniform(0.6, 0.9)})
    # a cell with another budget and a method that is not part of the comparison are ignored
    rows.append({"dataset": "breastmnist", "budget": "match_real_epochs=20", "generator": "none", "seed": 0,
                 "synthetic_ratio": "-", "optimizer_steps": 280, "test_auroc": 0.5})
    records = pd.DataFrame(rows)
    out = budget_confound(records, metrics=("test_auroc",)).set_index("budget")
    w = records.pivot_table(index="seed", columns=["budget", "generator"], values="test_auroc")
    gain_e = w[("epochs=3", "oversample")] - w[("epochs=3", "none")]
    gain_m = w[("match_real_epochs=3", "oversample")] - w[("match_real_epochs=3", "none")]
    for label, d in (("epochs", gain_e), ("match_real_epochs", gain_m), ("difference", gain_e - gain_m)):
        res = sps.ttest_1samp(d.dropna(), 0.0)
        ci = res.confidence_interval(0.95)
        assert out.loc[label, "mean"] == pytest.approx(d.mean())
        assert out.loc[label, "p_t"] == pytest.approx(res.pvalue)
        assert (out.loc[label, "ci_low"], out.loc[label, "ci_high"]) == pytest.approx((ci.low, ci.high))
        assert out.loc[label, "n_seeds"] == 6
    assert out.loc["epochs", "steps_baseline_method"] == "42 / 75"
    assert out.loc["match_real_epochs", "steps_baseline_method"] == "42 / 42"
    assert "**difference** (epoch − step-matched)" in confound_table(records, metrics=("test_auroc",))
    assert budget_confound(records[records["budget"] != "epochs=3"]).empty  # no pair of budgets, no rows
