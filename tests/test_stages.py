"""Two stages: generator jobs keyed per cell (not per backbone or ratio), blocked classifiers, bank mixing."""

import json

import numpy as np
import pytest

from benchmark import plan
from benchmark.executors import run_stages
from benchmark.generators.base import Generator, TrainingSet
from benchmark.generators.stage import SyntheticMix, write_bank
from benchmark.errors import UserError
from benchmark.grid import Grid, expand, generator_jobs
from tests.registry_helpers import register_entry


class FailingGenerator(Generator):
    def fit(self, images, labels, seed, out_dir=None):
        raise RuntimeError("generator diverged")


@pytest.fixture
def failing_registry(tmp_path, monkeypatch):
    register_entry(tmp_path, monkeypatch, "generator", "failing_gan",
                   "target: tests.test_stages:FailingGenerator\nversion: 1\nconfig: {kind: generative}\n")


def grid(**axes):
    base = {"dataset": ["breastmnist"], "generator": ["failing_gan", "none"], "backbone": ["resnet18", "resnet50"],
            "rare_count": [10], "synthetic_ratio": [1, 2], "seed": [0, 1]}
    return Grid("t", None, {**base, **axes}, [], [], {"epochs": 1}, "test")


def test_generator_jobs_are_one_per_cell(failing_registry):
    jobs = expand(grid())
    generative = [j for j in jobs if j.generator == "failing_gan"]
    assert len(generative) == 2 * 2 * 2  # backbones × ratios × seeds
    gens = generator_jobs(jobs)
    assert len(gens) == 2  # one per seed: backbone and ratio are not part of a generator job
    assert {j.generator_key for j in generative} == {g.key for g in gens}
    assert all(j.generator_key is None for j in jobs if j.generator == "none")
    assert len({g.key for g in gens} | {j.key for j in jobs}) == len(gens) + len(jobs)


def test_failed_generator_blocks_its_classifiers(failing_registry, data_env, tmp_path):
    jobs = expand(grid(backbone=["resnet18"], synthetic_ratio=[1], seed=[0], generator=["failing_gan"]))
    gens = generator_jobs(jobs)
    run_stages(gens, jobs, tmp_path, "debug", tmp_path / "logs")
    error = json.loads((tmp_path / gens[0].key / "error.json").read_text())
    assert "generator diverged" in error["error"]
    status = plan.statuses(gens + jobs, tmp_path)
    assert status[gens[0].key] == "failed" and status[jobs[0].key] == "blocked"
    assert not (tmp_path / jobs[0].key).exists()  # never run, never done
    assert "1 classifier jobs: 0 done, 0 pending, 0 failed, 1 blocked" in plan.summary_line(gens + jobs, status)


def test_synthetic_mix_takes_a_prefix_of_the_bank_and_checks_it(tmp_path):
    real = TrainingSet(np.zeros((30, 1, 4, 4), np.uint8), np.array([0] * 5 + [1] * 25), np.zeros(30, bool))
    bank = np.arange(40, dtype=np.uint8)[:, None, None, None].repeat(4, 2).repeat(4, 3)
    write_bank(tmp_path / "samples.npz", bank, np.zeros(40, np.int64))
    out = SyntheticMix(tmp_path).build_training_set(real, 0, 2.0, 2, seed=0)
    assert out.is_synthetic.sum() == 10 and (out.images[out.is_synthetic][:, 0, 0, 0] == np.arange(10)).all()
    balanced = SyntheticMix(tmp_path).build_training_set(real, 0, "balance", 2, seed=0)
    assert balanced.counts(2) == {"real_per_class": [5, 25], "synthetic_per_class": [20, 0]}
    with pytest.raises(UserError, match="needs 50 synthetic images but the bank"):
        SyntheticMix(tmp_path).build_training_set(real, 0, 10.0, 2, seed=0)
    (tmp_path / "samples.npz").write_bytes(b"not a zip file")
    with pytest.raises(UserError, match="is corrupt .*--force"):
        SyntheticMix(tmp_path).build_training_set(real, 0, 1.0, 2, seed=0)


def test_leakage_guard_catches_a_planted_test_image(data_env):
    from benchmark.cell import build_cell
    from benchmark.generators.stage import check_no_leakage

    spec = expand(Grid("t", None, {"dataset": ["breastmnist"], "generator": ["none"], "backbone": ["resnet18"],
                                   "rare_count": [20]}, [], [], {}, "test"))[0]
    cell = build_cell(spec)
    check_no_leakage(cell.real.images, cell.bundle)  # the cell's own images pass
    test_images = cell.bundle.splits["test"].images
    train_hashes = {im.tobytes() for im in cell.bundle.splits["train"].images}
    planted = next(im for im in test_images if im.tobytes() not in train_hashes)
    leaky = np.concatenate([cell.real.images, planted[None]])
    with pytest.raises(RuntimeError, match=r"leakage: 1 image\(s\) given to the generator are validation/test"):
        check_no_leakage(leaky, cell.bundle)


def test_bad_generator_config_stops_the_run_before_any_job(tmp_path, monkeypatch, real_data_dir):
    import os
    import subprocess
    import sys

    folder = tmp_path / "reg" / "generators"
    folder.mkdir(parents=True)
    repo = __import__("pathlib").Path(__file__).resolve().parent.parent
    (folder / "ddpm_bad.yaml").write_text(f"include: {repo}/registry/generators/ddpm_small.yaml\n"
                                          "config: {sampler: euler}\n")
    grid_file = tmp_path / "bad.yaml"
    grid_file.write_text("name: badgen\naxes: {dataset: [breastmnist], generator: [ddpm_bad], backbone: [resnet18], "
                         "rare_count: [20]}\n")
    env = {**os.environ, "GENMED_REGISTRY_PATH": str(tmp_path / "reg"), "GENMED_DATA_DIR": str(real_data_dir),
           "GENMED_RESULTS_DIR": str(tmp_path / "results")}
    out = subprocess.run([sys.executable, str(repo / "launch" / "grid.py"), "--grid", str(grid_file),
                          "--executor", "local"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2
    assert "DDPM: unknown sampler 'euler'; valid choices: ddim, dpm_solver, ddpm. Nothing was started." in out.stderr
    assert not (tmp_path / "results").exists()


def test_real_percentage_mixing_sets_the_share_of_real_images(tmp_path):
    real = TrainingSet(np.zeros((30, 1, 4, 4), np.uint8), np.array([0] * 5 + [1] * 25), np.zeros(30, bool))
    write_bank(tmp_path / "samples.npz", np.zeros((40, 1, 4, 4), np.uint8), np.zeros(40, np.int64))
    out = SyntheticMix(tmp_path).build_training_set(real, 0, "real_percentage=75", 2, seed=0)
    assert (~out.is_synthetic).sum() / len(out.labels) == pytest.approx(0.75)
    assert out.counts(2) == {"real_per_class": [5, 25], "synthetic_per_class": [10, 0]}
    unchanged = SyntheticMix(tmp_path).build_training_set(real, 0, "real_percentage=100", 2, seed=0)
    assert len(unchanged.labels) == 30


@pytest.mark.parametrize("value", ["real_percentage=0", "real_percentage=150", "real_percentage=x", "lots", -1])
def test_invalid_mixing_modes_are_rejected_before_anything_runs(value, failing_registry):
    with pytest.raises(UserError, match="synthetic_ratio"):
        expand(grid(synthetic_ratio=[value]))
