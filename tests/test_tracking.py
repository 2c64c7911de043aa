"""TensorBoard tracking through Accelerate: the event files hold the logged scalars (and generator images);
``training.track: false`` turns it off without changing the job key."""

import json

import numpy as np
import pytest

from benchmark.plan.grid import Grid, expand
from tests.dataset_makers import make_folders, write_png, write_registry


def scalars(log_dir):
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def tiny_job(tmp_path, monkeypatch, **training):
    root = make_folders(tmp_path / "tiny", {"neg": 16, "pos": 8}, shape=(28, 28))
    write_registry(tmp_path, monkeypatch, {"tinyfolders": {
        "target": "benchmark.data.folders:FolderDataset",
        "config": {"root": str(root), "image_size": 28, "split_ratios": [0.5, 0.25, 0.25]}}})
    axes = {"dataset": ["tinyfolders"], "generator": ["none"], "backbone": ["tinynet"]}
    return expand(Grid("t", None, axes, [], [], {"batch_size": 8, "eval_batch_size": 8, **training}, "test"))[0]


def test_track_is_a_training_setting_outside_the_key(tmp_path, monkeypatch):
    on = tiny_job(tmp_path, monkeypatch, epochs=2)
    off = tiny_job(tmp_path, monkeypatch, epochs=2, track=False)
    assert on.training["track"] is True and off.training["track"] is False and on.key == off.key
    with pytest.raises(Exception, match=r"training.track: expected bool"):
        tiny_job(tmp_path, monkeypatch, track="yes")


@pytest.mark.slow
def test_classifier_job_logs_loss_lr_and_val_metrics_per_epoch(tmp_path, monkeypatch):
    from benchmark.run.job import execute

    spec = tiny_job(tmp_path, monkeypatch, epochs=2)
    run_dir = tmp_path / "runs" / spec.key
    assert execute(spec, run_dir) == "done", (run_dir / "error.json").read_text()
    record = json.loads((run_dir / "result.json").read_text())
    acc = scalars(run_dir / "tensorboard")
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/epoch_s", "val/auroc", "val/balanced_accuracy", "val/ece",
            "test/auroc"} <= tags
    history = record["history"]
    for tag, field in (("train/loss", "train_loss"), ("train/lr", "lr"), ("val/auroc", "val_auroc")):
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [1, 2]
        assert np.allclose([e.value for e in events], [h[field] for h in history], rtol=1e-5)
    (test_event,) = acc.Scalars("test/auroc")
    assert test_event.step == record["best_epoch"]
    assert test_event.value == pytest.approx(record["metrics"]["test"]["auroc"], rel=1e-5)

    off = tiny_job(tmp_path, monkeypatch, epochs=1, track=False)
    off_dir = tmp_path / "runs-off" / off.key
    assert execute(off, off_dir) == "done"
    assert not (off_dir / "tensorboard").exists()


def test_generator_fit_losses_and_sample_grids_become_scalars_and_images(tmp_path):
    from benchmark.run.tracking import log_generator_fit

    grid = write_png(tmp_path / "grid_step000200.png", np.arange(24 * 36, dtype=np.uint8).reshape(24, 36))
    audit = write_png(tmp_path / "audit_real_vs_synthetic.png", np.zeros((10, 10, 3), dtype=np.uint8))
    fit_log = {"steps": 200, "log_steps": [100, 200], "loss_d": [1.5, 1.2], "loss_g": [0.7, 0.9], "loss_fm": [0.1, 0.05],
               "grids": [str(grid)], "device": "cpu"}
    log_dir = log_generator_fit(tmp_path, fit_log, {"audit/real_vs_synthetic": audit})
    acc = scalars(log_dir)
    assert {"generator/loss_d", "generator/loss_g", "generator/loss_fm"} <= set(acc.Tags()["scalars"])
    assert [(e.step, round(e.value, 4)) for e in acc.Scalars("generator/loss_d")] == [(100, 1.5), (200, 1.2)]
    assert set(acc.Tags()["images"]) == {"generator/samples", "audit/real_vs_synthetic"}
    (image,) = acc.Images("generator/samples")
    assert image.step == 200 and (image.width, image.height) == (36, 24)
