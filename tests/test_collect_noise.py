"""The test set's own noise in the collector: a real grid's jobs keep their per-image predictions, and the
collector turns them into stats/test_noise.csv and a report section (benchmark.collect.noise)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

REPO = Path(__file__).resolve().parents[1]
GRID = """name: noise_check
version: 1
axes:
  dataset: [breastmnist]
  image_size: [28]
  rare_class: [minority]
  rare_count: [20]
  generator: [none, oversample, real_extra]
  synthetic_ratio: [balance]
  backbone: [resnet18]
  seed: [0, 1]
training: {budget: {steps: 3, evaluations: 1}, batch_size: 32, mixed_precision: "no", save_checkpoint: false,
           track: false}
margins: {test_auroc: 0.03}
"""


def auroc(labels, scores) -> float:
    """Mann-Whitney AUROC with midranks (independent of the harness and of torchmetrics)."""
    ranks = sps.rankdata(scores)
    pos = labels == 1
    n1, n0 = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


@pytest.mark.slow
def test_test_set_noise_from_the_jobs_predictions(real_data_dir, tmp_path):
    grid = tmp_path / "noise_check.yaml"
    grid.write_text(GRID)
    env = {**__import__("os").environ, "GENMED_DATA_DIR": str(real_data_dir), "GENMED_RESULTS_DIR": str(tmp_path),
           "GENMED_CACHE_DIR": str(tmp_path / "cache")}
    for script, args in (("grid.py", ["--executor", "debug"]), ("collect.py", [])):
        done = subprocess.run([sys.executable, str(REPO / "launch" / script), "--grid", str(grid), *args],
                              capture_output=True, text=True, env=env, timeout=900)
        assert done.returncode == 0, done.stdout + done.stderr
    out = tmp_path / "noise_check"
    noise = pd.read_csv(out / "stats" / "test_noise.csv")
    assert set(noise["reference_variant"]) == {"none", "oversample@balance"}
    assert (noise["source"] == "real_extra@balance").all() and (noise["n_seeds"] == 2).all()
    records = pd.read_csv(out / "records.csv")
    from benchmark.collect.records import read_predictions

    for _, row in noise.iterrows():
        ref = row["reference_variant"].split("@")[0]
        diffs = []
        for seed in (0, 1):
            keys = {g: records[(records.generator == g) & (records.seed == seed)]["key"].item()
                    for g in ("real_extra", ref)}
            p = {g: read_predictions(out / "runs" / k) for g, k in keys.items()}
            labels = (p["real_extra"]["test_labels"] == 0).astype(int)  # malignant (0) is the rare class
            a, b = (auroc(labels, p[g]["test_probs"][:, 0]) for g in ("real_extra", ref))
            assert a == pytest.approx(records[records.key == keys["real_extra"]]["test_auroc"].item(), abs=1e-6)
            diffs.append(a - b)
        assert row["mean_diff"] == pytest.approx(np.mean(diffs), abs=1e-6)
        assert row["test_ci_low"] <= row["mean_diff"] <= row["test_ci_high"]
        assert 0 <= row["test_set_share"] <= 1 and row["dominant"] in ("seeds", "test set")
        assert 0 <= row["delong_p_median"] <= 1 and 0 <= row["delong_n_significant"] <= 2
    answer = pd.read_csv(out / "stats" / "answer.csv")  # the grid's declared margin reaches the TOST
    assert (answer.loc[answer.metric == "test_auroc", "margin"] == 0.03).all()
    assert (answer.loc[answer.metric == "test_thr_rare_sensitivity", "margin"] == 0.05).all()  # the default
    md = (out / "report.md").read_text()
    assert "test AUROC (±0.03)" in md
    section = md.split("## The test set's own noise (test AUROC)", 1)[1].split("\n## ", 1)[0]
    assert "| real_extra@balance | oversample@balance | 2 |" in section and "seeds and test images" in section


def test_without_predictions_the_section_says_so(tmp_path):
    """Records collected without their run folders (the committed study): no interval, and the report says why."""
    from benchmark import stats
    from benchmark.collect import report

    a = stats.analyse(pd.read_csv(REPO / "docs" / "study_v1" / "records.csv"))
    report.write_all(a, tmp_path, title="study", plots=False)
    md = (tmp_path / "report.md").read_text()
    section = md.split("## The test set's own noise (test AUROC)", 1)[1].split("\n## ", 1)[0]
    assert "Not computed" in section and "conditional on this test set" in section
    assert pd.read_csv(tmp_path / "stats" / "test_noise.csv").empty
