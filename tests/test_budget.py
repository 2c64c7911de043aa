"""Training budgets in optimiser steps (benchmark.core.training): spelling and validation, the step schedule, a
step-matched cell, exact budgets whatever the training-set size, mid-budget resume, and the typed settings."""

import json
import subprocess
import sys

import numpy as np
import pytest

from benchmark.core.errors import UserError
from benchmark.core.training import (TRAINING_DEFAULTS, TRAINING_NOT_IN_KEY, Budget, Schedule, TrainingConfig,
                                     validate_training)
from benchmark.plan.grid import Grid, expand, load_grid
from tests.dataset_makers import make_npz, write_registry

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def tiny_registry(tmp_path, monkeypatch):
    """`tinynpz`: 40 + 12 training images (rare class 1), 8 + 8 val and test; the `tinynet` backbone."""
    npz = make_npz(tmp_path / "tiny.npz", {"train": [40, 12], "val": [8, 8], "test": [8, 8]})
    write_registry(tmp_path, monkeypatch, {"tinynpz": {"target": "benchmark.data.npz:NpzDataset",
                                                       "config": {"path": str(npz), "image_size": 28}}})


def tiny_jobs(generators=("none",), ratio="balance", **training):
    axes = {"dataset": ["tinynpz"], "generator": list(generators), "backbone": ["tinynet"], "rare_count": [4],
            "synthetic_ratio": [ratio]}
    settings = {"batch_size": 8, "eval_batch_size": 16, "track": False, "save_checkpoint": False, **training}
    return {j.generator: j for j in expand(Grid("t", None, axes, [], [], settings, "test"))}


# ------------------------------------------------------------------------------------------ spelling, validation
def test_defaults_are_the_ones_jobs_were_keyed_with():
    assert TRAINING_DEFAULTS == {
        "epochs": 20, "batch_size": 64, "lr": 1e-3, "weight_decay": 0.05, "warmup_epochs": 1, "mixed_precision": "no",
        "label_smoothing": 0.0, "eval_batch_size": 256, "save_checkpoint": True, "track": True,
        "augment": {"hflip": True, "vflip": False, "rotate_degrees": 10.0, "brightness": 0.1, "contrast": 0.1}}
    assert TRAINING_NOT_IN_KEY == {"eval_batch_size", "save_checkpoint", "track"}


def test_budget_spellings_store_one_form():
    problems = []
    assert validate_training({"budget": {"epochs": 30}}, problems) == validate_training({"epochs": 30}, problems)
    matched = validate_training({"budget": {"match_real_epochs": 30}}, problems)
    assert matched["budget"] == {"match_real_epochs": 30, "evaluations": 30} and "epochs" not in matched
    assert matched == validate_training({"budget": {"match_real_epochs": 30, "evaluations": 30}}, problems)
    steps = validate_training({"budget": {"steps": 600}}, problems)
    assert steps["budget"] == {"steps": 600, "evaluations": 10, "warmup_steps": 0}
    assert "epochs" not in steps and "warmup_epochs" not in steps
    assert problems == []
    config = TrainingConfig.from_dict(matched)
    assert config.epochs is None and config.budget_spec == Budget("match_real_epochs", 30, 30)
    assert TrainingConfig.from_dict(validate_training({}, [])).budget_spec == Budget("epochs", 20)


def test_budget_schedule_in_steps():
    # epochs: passes over the job's own set (7 steps each), validation after each
    assert Budget("epochs", 3).schedule(7, 4, 1) == Schedule(21, 7, (7, 14, 21))
    # match_real_epochs: the real set's 4 steps per epoch, whatever the job's own set takes
    assert Budget("match_real_epochs", 3, 3).schedule(7, 4, 1) == Schedule(12, 4, (4, 8, 12))
    assert Budget("steps", 10, 4, 2).schedule(7, 4, 1) == Schedule(10, 2, (3, 5, 8, 10))


@pytest.mark.parametrize("training, message", [
    ({"budget": {"steps": 0}}, r"training.budget.steps must be an integer ≥ 1, got 0"),
    ({"budget": {"iterations": 5}}, r"give exactly one of epochs, steps, match_real_epochs"),
    ({"budget": {"steps": 5, "epochs": 2}}, r"give exactly one of"),
    ({"budget": {"steps": 5, "evaluations": 6}}, r"evaluations \(6\) cannot exceed steps \(5\)"),
    ({"budget": {"match_real_epochs": 3, "warmup_steps": 2}}, r"match_real_epochs takes evaluations"),
    ({"budget": 600}, r"expected a mapping"),
    ({"epochs": 3, "budget": {"steps": 60}}, r"both `epochs` \(3\) and `budget`.*write `budget: \{epochs: 3\}`"),
])
def test_budget_errors_name_the_grid_file_and_the_fix(tmp_path, training, message):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nversion: 1\naxes: {dataset: [breastmnist], generator: [none], "
                    f"backbone: [resnet18]}}\ntraining: {json.dumps(training)}\n")
    with pytest.raises(UserError, match=message) as caught:
        expand(load_grid(str(path)), resolve=False)
    assert str(path) in str(caught.value) and "nothing was started" in str(caught.value)
    if "exactly one" in message or "mapping" in message or "≥ 1" in message:
        assert "budget: {match_real_epochs: 30}" in str(caught.value)  # the fix, spelled


def test_invalid_budget_exits_2_from_the_cli(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nversion: 1\naxes: {dataset: [breastmnist], generator: [none], backbone: [resnet18],"
                    " budget: [{steps: -1}]}\n")
    done = subprocess.run([sys.executable, str(ROOT / "launch" / "grid.py"), "--grid", str(path), "--dry-run"],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2, done.stderr
    assert "axis budget.steps must be an integer ≥ 1" in done.stderr + done.stdout


def test_budget_axis_and_profiles(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text(
        "name: g\nversion: 1\naxes: {dataset: [breastmnist], generator: [none, oversample], backbone: [resnet18],"
        " rare_count: [20], synthetic_ratio: [balance]}\ntraining: {budget: {match_real_epochs: 30}}\nprofiles:\n"
        "  short: {training: {epochs: 2}}\n"
        "  both: {axes: {budget: [{epochs: 3}, {match_real_epochs: 3}]}}\n")
    base = expand(load_grid(str(path)), resolve=False)
    assert {j.training["budget"]["match_real_epochs"] for j in base} == {30}
    assert all("budget=" not in j.name and "epochs" not in j.training for j in base)
    short = expand(load_grid(str(path), "short"), resolve=False)  # a profile's epochs replaces the grid's budget
    assert {j.training["epochs"] for j in short} == {2} and all("budget" not in j.training for j in short)
    both = expand(load_grid(str(path), "both"), resolve=False)
    assert sorted(j.name for j in both) == [
        "resnet18[breastmnist,rare=20,none,seed=0,epochs=3]",
        "resnet18[breastmnist,rare=20,none,seed=0,match_real_epochs=3]",
        "resnet18[breastmnist,rare=20,oversample×balance,seed=0,epochs=3]",
        "resnet18[breastmnist,rare=20,oversample×balance,seed=0,match_real_epochs=3]"]
    assert len({j.key for j in both}) == 4
    # the epochs value of the axis keys like a grid that says `epochs: 3` (same spec, same key)
    plain = expand(load_grid(str(path), "short"), resolve=False)[0]
    three = [j for j in both if j.name.endswith("epochs=3]") and j.generator == "none"
             and "match" not in j.name][0]
    assert three.training == {**plain.training, "epochs": 3}


def test_keys_of_epoch_grids_do_not_change_with_the_budget_spelling():
    axes = {"dataset": ["breastmnist"], "generator": ["none"], "backbone": ["resnet18"]}
    plain = expand(Grid("t", None, axes, [], [], {"epochs": 3}, "test"), resolve=False)[0]
    spelled = expand(Grid("t", None, axes, [], [], {"budget": {"epochs": 3}}, "test"), resolve=False)[0]
    matched = expand(Grid("t", None, axes, [], [], {"budget": {"match_real_epochs": 3}}, "test"), resolve=False)[0]
    assert plain.key == spelled.key != matched.key
    assert plain.training_config.epochs == 3 and matched.training_config.budget_spec.form == "match_real_epochs"


# ------------------------------------------------------------------------------------------------ training
def run(spec, folder, **kwargs):
    from benchmark.run.job import execute

    run_dir = folder / spec.key
    outcome = execute(spec, run_dir, **kwargs)
    assert outcome == "done", (run_dir / "error.json").read_text()
    return json.loads((run_dir / "result.json").read_text()), run_dir


@pytest.mark.slow
def test_step_matched_cell_takes_the_same_steps_for_every_method(tmp_path, monkeypatch):
    tiny_registry(tmp_path, monkeypatch)
    jobs = tiny_jobs(("none", "oversample"), budget={"match_real_epochs": 2})
    records = {name: run(spec, tmp_path / "runs")[0] for name, spec in jobs.items()}
    none, over = records["none"], records["oversample"]
    assert none["counts"]["n_train_real"] == over["counts"]["n_train_real"] == 44  # 40 + 4 kept rare
    assert over["counts"]["n_train_synthetic"] == 36  # balance: 4 → 40
    # 2 real epochs of 44 images at batch 8: 2 × 6 steps for both, although oversample's own pass takes 10
    assert none["optimizer_steps"] == over["optimizer_steps"] == 12
    assert [h["step"] for h in none["history"]] == [h["step"] for h in over["history"]] == [6, 12]
    assert none["images_seen"] == 2 * 44  # two whole passes of 44 (5 × 8 + 4)
    assert over["images_seen"] == 12 * 8  # 80 images a pass: no partial batch in 12 steps
    assert none["best_epoch"] is None and none["best_step"] in (6, 12)


@pytest.mark.slow
def test_a_job_takes_exactly_its_budget_whatever_its_training_set_size(tmp_path, monkeypatch):
    tiny_registry(tmp_path, monkeypatch)
    for ratio in (1, 4, "balance"):
        spec = tiny_jobs(("oversample",), ratio=ratio, budget={"steps": 7, "evaluations": 2})["oversample"]
        record, _ = run(spec, tmp_path / f"runs-{ratio}")
        assert record["optimizer_steps"] == 7, ratio
        assert [h["step"] for h in record["history"]] == [4, 7]
        assert record["images_seen"] <= 7 * 8


@pytest.mark.slow
def test_resume_mid_budget_is_bit_identical(tmp_path, monkeypatch):
    """Validation at steps 5, 9, 13 of 13; a pass over 40 + 4 + 36 images is 10 steps: the save at step 9 is in the
    middle of the first pass's order, which the resumed run replays."""
    from safetensors.torch import load_file

    from benchmark.collect.records import read_predictions
    from benchmark.run import train
    from benchmark.run.job import STATE_DIR, execute

    tiny_registry(tmp_path, monkeypatch)
    spec = tiny_jobs(("oversample",), budget={"steps": 13, "evaluations": 3, "warmup_steps": 2},
                     save_checkpoint=True)["oversample"]
    straight, straight_dir = run(spec, tmp_path / "straight")

    real_save = train.save_progress

    def save_then_die_at_step_9(accelerator, state_dir, done, streams):
        real_save(accelerator, state_dir, done, streams)
        if done.step == 9:
            assert done.batch_in_pass == 9 and done.passes == 0
            raise KeyboardInterrupt("preempted")

    monkeypatch.setattr(train, "save_progress", save_then_die_at_step_9)
    run_dir = tmp_path / "resumed" / spec.key
    with pytest.raises(KeyboardInterrupt):
        execute(spec, run_dir, resumable=True)
    assert json.loads((run_dir / STATE_DIR / "progress.json").read_text())["step"] == 9
    monkeypatch.setattr(train, "save_progress", real_save)
    resumed, _ = run(spec, tmp_path / "resumed", resumable=True)
    assert not (run_dir / STATE_DIR).exists()

    assert resumed["metrics"] == straight["metrics"]
    strip = lambda history: [{k: v for k, v in h.items() if k != "train_s"} for h in history]  # noqa: E731
    assert strip(resumed["history"]) == strip(straight["history"])
    assert [h["step"] for h in resumed["history"]] == [5, 9, 13] and resumed["optimizer_steps"] == 13
    assert (resumed["best_step"], resumed["images_seen"]) == (straight["best_step"], straight["images_seen"])
    weights, again = load_file(str(straight_dir / "model.safetensors")), load_file(str(run_dir / "model.safetensors"))
    assert weights.keys() == again.keys() and all(np.array_equal(weights[k], again[k]) for k in weights)
    assert resumed["predictions"]["sha256"] == straight["predictions"]["sha256"]
    for name, array in read_predictions(run_dir).items():
        assert np.array_equal(array, read_predictions(straight_dir)[name])
