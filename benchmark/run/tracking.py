"""TensorBoard logs through Accelerate's trackers, under ``runs/<key>/tensorboard/`` (``training.track``, default on).

Classifier jobs log per validation (each epoch, or each evaluation step of a step budget) ``train/loss``,
``train/lr``, ``train/epoch_s`` (seconds since the last validation) and ``val/<metric>`` for every scalar metric, and
after selection ``test/<metric>`` at the selected epoch (or step). Generator jobs log their fit losses
(``generator/<loss>`` at the logged steps) and the sample grids as images. View them with
``tensorboard --logdir results/<grid>/runs``. Only the main process writes.
"""

from __future__ import annotations

import math
from pathlib import Path

TRACKER_DIR = "tensorboard"


def accelerator_kwargs(track: bool, run_dir) -> dict:
    """Keyword arguments that make an ``Accelerator`` log to ``run_dir/tensorboard`` (empty when not tracking)."""
    if run_dir is None or not track:
        return {}
    return {"log_with": "tensorboard", "project_dir": str(run_dir)}


def start(accelerator) -> None:
    """``init_trackers``: the TensorBoard run folder is ``<project_dir>/tensorboard``. A no-op without trackers."""
    if accelerator.log_with:
        accelerator.init_trackers(TRACKER_DIR)


def _scalars(prefix: str, metrics: dict) -> dict:
    return {f"{prefix}/{k}": float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(float(v))}


def log_epoch(accelerator, entry: dict, val_metrics: dict) -> None:
    """One validation: training loss, learning rate, time since the last one and the validation metrics, at step =
    the epoch (epochs budget) or the optimiser step (step budgets)."""
    if not accelerator.trackers:
        return
    values = {"train/loss": entry["train_loss"], "train/lr": entry["lr"], "train/epoch_s": entry["train_s"]}
    values.update(_scalars("val", {k: v for k, v in val_metrics.items() if k != "n"}))
    accelerator.log(values, step=int(entry.get("epoch", entry["step"])))


def finish(accelerator, test_metrics: dict | None = None, best_epoch: int | None = None) -> None:
    """Log the selected epoch's test metrics and close the writers. Not ``accelerator.end_training()``: that also
    destroys the process group, which the next job packed into the same (DDP) process still needs."""
    if not accelerator.trackers:
        return
    if test_metrics is not None:
        accelerator.log(_scalars("test", {k: v for k, v in test_metrics.items() if k != "n"}), step=best_epoch)
    for tracker in accelerator.trackers:
        tracker.finish()


def log_generator_fit(run_dir, fit_log: dict, images: dict | None = None) -> Path:
    """A generator job's fit log: every list of losses in `fit_log` (``loss_*`` with ``log_steps``) as scalars, and
    the PNG grids it names (``grids``, steps from ``grid_step<k>.png``) plus `images` ({tag: png path}) as images."""
    import numpy as np
    from accelerate.tracking import TensorBoardTracker
    from PIL import Image

    tracker = TensorBoardTracker(TRACKER_DIR, str(run_dir))
    tracker.start()
    steps = list(fit_log.get("log_steps") or [])
    for name, values in fit_log.items():
        if name.startswith("loss") and isinstance(values, list):
            for i, value in enumerate(values):
                step = steps[i] if i < len(steps) else i
                tracker.log({f"generator/{name}": float(value)}, step=int(step))

    def log_png(tag: str, path, step: int) -> None:
        array = np.asarray(Image.open(path).convert("RGB"))
        tracker.log_images({tag: array[None]}, step=step, dataformats="NHWC")

    for i, path in enumerate(fit_log.get("grids") or []):
        stem = Path(path).stem
        digits = "".join(ch for ch in stem if ch.isdigit())
        log_png("generator/samples", path, int(digits) if digits else i)
    for tag, path in (images or {}).items():
        if Path(path).is_file():
            log_png(tag, path, int(steps[-1]) if steps else 0)
    tracker.finish()
    return Path(run_dir) / TRACKER_DIR
