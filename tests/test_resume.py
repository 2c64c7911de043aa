"""Resuming from the per-epoch training state gives the same record as an uninterrupted run (bit for bit on CPU)."""

import json

import pytest

from benchmark.run import train
from benchmark.run.job import STATE_DIR, execute
from tests.test_job import tiny_spec


@pytest.mark.slow
def test_interrupted_job_resumes_to_the_same_result(data_env, tmp_path, monkeypatch):
    spec = tiny_spec("oversample", epochs=3, save_checkpoint=False)
    assert execute(spec, tmp_path / "straight" / spec.key) == "done"

    real_save = train.save_progress

    def save_then_die_after_epoch_2(accelerator, state_dir, done, streams):
        real_save(accelerator, state_dir, done, streams)
        if done.epoch == 2:
            raise KeyboardInterrupt("preempted")

    monkeypatch.setattr(train, "save_progress", save_then_die_after_epoch_2)
    run_dir = tmp_path / "resumed" / spec.key
    with pytest.raises(KeyboardInterrupt):
        execute(spec, run_dir, resumable=True)
    assert json.loads((run_dir / STATE_DIR / "progress.json").read_text())["epoch"] == 2
    assert not (run_dir / "result.json").exists()
    monkeypatch.setattr(train, "save_progress", real_save)
    assert execute(spec, run_dir, resumable=True) == "done"
    assert not (run_dir / STATE_DIR).exists()

    straight = json.loads((tmp_path / "straight" / spec.key / "result.json").read_text())
    resumed = json.loads((run_dir / "result.json").read_text())
    assert resumed["metrics"] == straight["metrics"]
    strip = lambda history: [{k: v for k, v in h.items() if k != "train_s"} for h in history]  # noqa: E731
    assert strip(resumed["history"]) == strip(straight["history"])
    assert resumed["best_epoch"] == straight["best_epoch"]
