"""The imbalance baselines through the one training function: their loss/transform is used, and resume is exact."""

import json

import pytest

from benchmark.run import train
from benchmark.run.job import STATE_DIR, execute
from tests.test_job import tiny_spec


@pytest.mark.slow
def test_mixup_job_resumes_to_the_same_result(data_env, tmp_path, monkeypatch):
    """Mixup's Beta and permutation draws come from a torch.Generator saved in the training state."""
    spec = tiny_spec("mixup", epochs=2, save_checkpoint=False, track=False)
    assert execute(spec, tmp_path / "straight" / spec.key) == "done"
    real_save = train.save_progress

    def save_then_die_after_epoch_1(accelerator, state_dir, done, streams):
        real_save(accelerator, state_dir, done, streams)
        if done.epoch == 1:
            raise KeyboardInterrupt("preempted")

    monkeypatch.setattr(train, "save_progress", save_then_die_after_epoch_1)
    run_dir = tmp_path / "resumed" / spec.key
    with pytest.raises(KeyboardInterrupt):
        execute(spec, run_dir, resumable=True)
    monkeypatch.setattr(train, "save_progress", real_save)
    assert execute(spec, run_dir, resumable=True) == "done" and not (run_dir / STATE_DIR).exists()
    straight = json.loads((tmp_path / "straight" / spec.key / "result.json").read_text())
    resumed = json.loads((run_dir / "result.json").read_text())
    assert resumed["metrics"] == straight["metrics"]
    strip = lambda history: [{k: v for k, v in h.items() if k != "train_s"} for h in history]  # noqa: E731
    assert strip(resumed["history"]) == strip(straight["history"])
    assert resumed["method_info"] == {"batch_transform": {"name": "mixup", "alpha": 0.2}}


@pytest.mark.slow
def test_focal_and_logit_adjust_jobs_train_with_their_own_loss(data_env, tmp_path):
    losses = {}
    for name in ("none", "focal", "logit_adjust"):
        spec = tiny_spec(name, epochs=1, save_checkpoint=False, track=False)
        assert execute(spec, tmp_path / spec.key) == "done", (tmp_path / spec.key / "error.json").read_text()
        record = json.loads((tmp_path / spec.key / "result.json").read_text())
        losses[name] = record["history"][0]["train_loss"]
        assert record["counts"]["n_train_synthetic"] == 0 and record["counts"]["real_per_class"] == [10, 399]
        if name != "none":
            assert record["method_info"]["loss"]["name"] == name
    assert record["method_info"]["loss"]["prior"] == pytest.approx([10 / 409, 399 / 409])
    # same init, data order and augmentation: only the loss differs (focal ≤ CE per sample)
    assert losses["focal"] < losses["none"] and losses["logit_adjust"] != losses["none"]
