"""End to end on the real BreastMNIST: a grid through the CLIs, then the collector, then a no-op re-run (the
session's shared run, tests/shared_run.py); the README's smoke profile expands and passes the data check."""

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.shared_run import (
    CELLS,
    CLASSIFIER_JOBS,
    EXPECTED_ADDED,
    GENERATOR_JOBS,
    N_OTHER,
    N_RARE,
)

REPO = Path(__file__).resolve().parent.parent


def run_cli(script, *args, env):
    return subprocess.run([sys.executable, str(REPO / "launch" / script), *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=1500)


@pytest.mark.slow
def test_grid_produces_a_record_per_job(shared_run):
    out_dir, first, collect = shared_run.out, shared_run.ran, shared_run.collected
    assert first.returncode == 0, first.stdout + first.stderr
    assert collect.returncode == 0, collect.stdout + collect.stderr
    assert (f"{GENERATOR_JOBS} generator jobs: {GENERATOR_JOBS} done, 0 pending, 0 failed; "
            f"{CLASSIFIER_JOBS} classifier jobs: {CLASSIFIER_JOBS} done") in first.stdout, first.stdout
    results = [p for p in sorted((out_dir / "runs").glob("*/result.json"))
               if json.loads(p.read_text())["stage"] == "classifier"]
    assert len(results) == CLASSIFIER_JOBS
    with open(out_dir / "records.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == CLASSIFIER_JOBS
    for column in ("dataset", "rare_class", "rare_count", "backbone", "generator", "synthetic_ratio", "seed",
                   "test_auroc", "test_balanced_accuracy", "test_rare_sensitivity", "test_thr_balanced_accuracy",
                   "test_thr_rare_sensitivity", "test_rare_sensitivity_at_90spec", "test_threshold",
                   "effective_ratio", "results_version", "dataset_sha256", "git_sha"):
        assert column in rows[0]
    by_key = {json.loads(p.read_text())["key"]: json.loads(p.read_text()) for p in results}
    for row in rows:
        record = by_key[row["key"]]
        assert float(row["test_auroc"]) == pytest.approx(record["metrics"]["test"]["auroc"])
        assert 0.5 <= float(row["test_auroc"]) <= 1.0, row
        assert float(row["test_thr_balanced_accuracy"]) == pytest.approx(
            record["metrics"]["test"]["thr_balanced_accuracy"])
        assert row["val_threshold"] == row["test_threshold"]
        assert float(row["effective_ratio"]) == pytest.approx(int(row["n_train_synthetic"]) / int(row["n_rare_train"]))
    board = (out_dir / "leaderboard.md").read_text()
    assert "| oversample@balance |" in board and "| dcgan_tiny@balance |" in board
    with open(out_dir / "leaderboard.csv") as fh:
        variants = {row["variant"] for row in csv.DictReader(fh)}
    assert {"oversample@1", "oversample@balance", "dcgan_tiny@1", "dcgan_tiny@balance"} <= variants
    generative = [r for r in rows if r["generator"] in ("dcgan_tiny", "ddpm_tiny")]
    assert len(generative) == 10  # at rare count 20: dcgan at 4 ratio forms, 2 seeds; ddpm at 1, balance, 1 seed
    for row in generative:
        assert 0.0 <= float(row["audit_copy_rate"]) <= 1.0 and float(row["audit_kid_se"]) >= 0.0
        assert math.isfinite(float(row["audit_kid"])) and math.isfinite(float(row["audit_domain_kid"]))
        assert row["audit_fid"] == "" and float(row["audit_reference_n"]) == 147  # FID needs >= 480 reference images
    for row in (r for r in rows if r["generator"] in ("oversample", "dcgan_tiny", "ddpm_tiny")):
        if row["synthetic_ratio"] == "balance":     # the rare class made as large as benign (399)
            assert row["rare_count"] == "20" and int(row["n_train_synthetic"]) == N_OTHER - int(row["n_rare_train"])
        elif row["synthetic_ratio"] == "1.0":
            assert int(row["n_train_synthetic"]) == int(row["n_rare_train"])  # ratio 1, at both rare counts
        else:
            assert row["rare_count"] == str(N_RARE) and int(row["n_train_synthetic"]) == \
                EXPECTED_ADDED[row["synthetic_ratio"]], row
    assert {r["rare_count"] for r in rows if r["synthetic_ratio"] == "1.0"} == {"all", "20"}
    report = (out_dir / "report.md").read_text()
    assert "dcgan_tiny" in report and "ddpm_tiny" in report


@pytest.mark.slow
def test_generator_artifacts_are_reused_and_fit_on_training_images_only(shared_run, data_env, monkeypatch):
    import hashlib

    import numpy as np

    out_dir = shared_run.out
    monkeypatch.setenv("GENMED_REGISTRY_PATH", str(shared_run.registry))
    results = [json.loads(p.read_text()) for p in (out_dir / "runs").glob("*/result.json")]
    generators = {r["key"]: r for r in results if r["stage"] == "generator"}
    users = [r for r in results if r["stage"] == "classifier" and r["generator_key"]]
    assert len(generators) == GENERATOR_JOBS and {r["generator_key"] for r in users} == set(generators)
    from benchmark.core.specs import spec_from_dict
    from benchmark.run.cell import build_cell

    for record in generators.values():
        cell = build_cell(spec_from_dict(record["spec"]))
        fit_hash = hashlib.sha256(np.ascontiguousarray(cell.real.images).tobytes()).hexdigest()
        assert record["resolved"]["fit_images_sha256"] == fit_hash  # exactly the cell's kept training images
        assert record["resolved"]["fit_images"] == len(cell.real.labels) <= 546
        bank = np.load(out_dir / "runs" / record["key"] / "samples.npz")["images"]
        assert bank.dtype == np.uint8 and bank.shape[1:] == (1, 28, 28)


@pytest.mark.slow
def test_second_run_trains_nothing(shared_run):
    out_dir, env = shared_run.out, shared_run.env
    mtimes = {p: p.stat().st_mtime_ns for p in (out_dir / "runs").glob("*/result.json")}
    assert len(mtimes) == GENERATOR_JOBS + CLASSIFIER_JOBS
    again = run_cli("grid.py", "--grid", str(shared_run.grid), "--executor", "local", env=env)
    assert again.returncode == 0, again.stderr
    assert f"{CLASSIFIER_JOBS} done, 0 pending, 0 failed; running 0" in again.stdout, again.stdout
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes


@pytest.mark.slow
def test_pairing_holds_in_the_records(shared_run):
    records = [json.loads(p.read_text()) for p in (shared_run.out / "runs").glob("*/result.json")]
    records = [r for r in records if r["stage"] == "classifier"]
    cells = {}
    for record in records:
        spec = record["spec"]
        cell = (spec["rare_count"], spec["seed"])
        cells.setdefault(cell, set()).add((record["resolved"]["init_seed"], record["counts"]["n_train_real"]))
    assert len(cells) == CELLS
    assert all(len(v) == 1 for v in cells.values()), cells


@pytest.mark.parametrize("profile, counts", [
    ("smoke", "6 generator jobs: 0 done, 6 pending, 0 failed; 30 classifier jobs: 0 done, 30 pending, 0 failed"),
    ("generators_smoke", ("3 generator jobs: 0 done, 3 pending, 0 failed; 17 classifier jobs: 0 done, 17 pending, "
                          "0 failed")),
])
def test_readme_profiles_expand_and_pass_the_data_check(profile, counts, real_data_dir, tmp_path):
    """The README's smoke profiles (`make smoke`, generators_smoke) on the real data, without training them: what
    they train is the shared run's code path, at the profiles' sizes."""
    env = {**os.environ, "GENMED_DATA_DIR": str(real_data_dir), "GENMED_RESULTS_DIR": str(tmp_path)}
    out = run_cli("grid.py", "--grid", "rare_sweep", "--profile", profile, "--dry-run", env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "breastmnist@28: present" in out.stdout and counts in out.stdout, out.stdout
    assert not (tmp_path / f"rare_sweep-{profile}" / "runs").exists()


def test_bad_input_exits_2_before_anything_starts(tmp_path):
    env = {**os.environ, "GENMED_RESULTS_DIR": str(tmp_path)}
    bad_grid = tmp_path / "bad.yaml"
    bad_grid.write_text("name: bad\naxes:\n  dataset: [breastmnist]\n  generator: [nonee]\n  backbone: [resnet18]\n"
                        "  rare_count: [100000]\n")
    out = run_cli("grid.py", "--grid", str(bad_grid), env={**env, "GENMED_DATA_DIR": str(tmp_path / "none")})
    assert out.returncode == 2
    assert "Unknown generator 'nonee'. Did you mean 'none'" in out.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: broken\naxes:\n  dataset: [breastmnist\n")
    out = run_cli("grid.py", "--grid", str(broken), env=env)
    assert out.returncode == 2 and f"Malformed YAML at {broken}:" in out.stderr
    assert not (tmp_path / "bad").exists() and not (tmp_path / "broken").exists()


def test_impossible_rarity_exits_2_when_data_is_present(real_data_dir, tmp_path):
    grid = tmp_path / "rarity.yaml"
    grid.write_text("name: rarity\naxes:\n  dataset: [breastmnist]\n  generator: [none]\n  backbone: [resnet18]\n"
                    "  rare_count: [20, 500]\n")
    env = {**os.environ, "GENMED_RESULTS_DIR": str(tmp_path), "GENMED_DATA_DIR": str(real_data_dir)}
    out = run_cli("grid.py", "--grid", str(grid), env=env)
    assert out.returncode == 2
    assert "rare_count=500 is impossible: the rare class has 147 training images" in out.stderr
    assert not (tmp_path / "rarity" / "runs").exists()
