"""What a sweep needs before it runs (benchmark.plan.power): seeds to detect the grid's margin, checked against
the noncentral t distribution; the grid's margins validated; the dry run prints the lines."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from benchmark.core.errors import UserError
from benchmark.plan.grid import check_margins
from benchmark.plan.power import measured_paired_sd, seeds_needed

REPO = Path(__file__).resolve().parents[1]


def power_of_paired_t(n: int, delta: float, sd: float, alpha: float) -> float:
    """Exact power of the two-sided one-sample t test (noncentral t), independent of statsmodels."""
    df, nc = n - 1, delta / sd * np.sqrt(n)
    crit = sps.t.ppf(1 - alpha / 2, df)
    return float(sps.nct.sf(crit, df, nc) + sps.nct.cdf(-crit, df, nc))


@pytest.mark.parametrize("delta, sd, alpha", [(0.02, 0.035, 0.05 / 11), (0.05, 0.215, 0.05 / 11),
                                             (0.02, 0.045, 0.05), (0.1, 0.05, 0.01)])
def test_seeds_needed_is_the_smallest_n_with_80_percent_power(delta, sd, alpha):
    from statsmodels.stats.power import TTestPower

    n = seeds_needed(delta, sd, alpha)
    assert power_of_paired_t(n, delta, sd, alpha) >= 0.8 > power_of_paired_t(n - 1, delta, sd, alpha)
    solved = TTestPower().solve_power(effect_size=delta / sd, alpha=alpha, power=0.8, alternative="two-sided")
    assert n == max(2, int(np.ceil(solved)))  # statsmodels, an independent implementation


def test_undefined_when_nothing_varies():
    assert seeds_needed(0.02, 0.0, 0.05) is None and seeds_needed(0.0, 0.03, 0.05) is None


def test_measured_sd_is_the_median_over_comparisons_of_the_paired_sd():
    def record(generator, seed, auroc, rare_count=20):
        return {"stage": "classifier", "spec": {"dataset": "d", "image_size": 28, "rare_class": 0,
                                                 "rare_count": rare_count, "backbone": "b", "fold": 0,
                                                 "generator": generator, "synthetic_ratio": 1, "seed": seed,
                                                 "training": {"epochs": 3}},
                "metrics": {"test": {"auroc": auroc}}}
    base = [0.70, 0.72, 0.69, 0.71]
    gains = {"a": [0.01, 0.03, 0.02, 0.06], "b": [0.00, 0.00, 0.04, 0.04]}
    records = [record("none", s, v) for s, v in enumerate(base)]
    records += [record(g, s, base[s] + d) for g, ds in gains.items() for s, d in enumerate(ds)]
    sd, n = measured_paired_sd(records, "test_auroc")
    assert n == 2 and sd == pytest.approx(np.median([np.std(gains["a"], ddof=1), np.std(gains["b"], ddof=1)]))


def test_margins_are_checked_with_the_file_named():
    assert check_margins({"test_auroc": 0.02, "thr_rare_sensitivity": 0.05}, "g.yaml") == {
        "test_auroc": 0.02, "thr_rare_sensitivity": 0.05}
    with pytest.raises(UserError, match=r"g\.yaml: invalid margins: unknown metric 'test_aurok'"):
        check_margins({"test_aurok": 0.02}, "g.yaml")
    with pytest.raises(UserError, match=r"test_auroc: the margin must be a number in \(0, 1\], got -0\.1"):
        check_margins({"test_auroc": -0.1}, "g.yaml")
    with pytest.raises(UserError, match="must map metric names to numbers"):
        check_margins([0.02], "g.yaml")


def test_dry_run_prints_the_seeds_each_metric_needs(real_data_dir, tmp_path):
    env = {**__import__("os").environ, "GENMED_DATA_DIR": str(real_data_dir), "GENMED_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, str(REPO / "launch" / "grid.py"), "--grid", "rare_sweep", "--profile",
                           "study", "--dry-run", "--results", str(tmp_path / "r")], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("power ")]
    n = seeds_needed(0.02, 0.035, 0.05 / 18)  # the study's 18 comparisons per metric against none
    assert len(lines) == 3 and "test_auroc: paired SD 0.035 (stated default" in lines[0]
    assert f"α/m = 0.05/18 needs {n} paired seeds (this grid has 5)" in lines[0]
    bad = tmp_path / "bad.yaml"
    bad.write_text((REPO / "registry" / "grids" / "rare_sweep.yaml").read_text().replace(
        "test_auroc: 0.02", "test_auroc: 2"))
    done = subprocess.run([sys.executable, str(REPO / "launch" / "grid.py"), "--grid", str(bad), "--dry-run",
                           "--results", str(tmp_path / "r")], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2 and f"{bad}: invalid margins" in done.stderr and "Traceback" not in done.stderr
