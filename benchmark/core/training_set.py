"""What a classifier trains on and how many images a method adds: `TrainingSet`, the `synthetic_ratio` vocabulary
(a number, ``balance``, ``real_percentage=P``), the added-image count and a generator's bank size."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

DEFAULT_BANK_MULTIPLE = 8  # bank = max(8 × real rare count, images needed to balance the classes)


@dataclass
class TrainingSet:
    """What a classifier trains on: uint8 images (N, C, H, W), int64 labels, optional per-class loss weights, and
    optionally the loss and the batch transform the training function uses instead of plain cross-entropy
    (``benchmark.generators.imbalance``: e.g. ``{"name": "focal", "gamma": 2.0}``, ``{"name": "mixup",
    "alpha": 0.2}``)."""

    images: np.ndarray
    labels: np.ndarray
    is_synthetic: np.ndarray  # bool (N,): True for generated (or duplicated) images
    class_weights: np.ndarray | None = None
    info: dict = field(default_factory=dict)
    loss: dict | None = None
    batch_transform: dict | None = None

    def counts(self, num_classes: int) -> dict:
        """Real and synthetic images per class, as recorded in every result."""
        real = np.bincount(self.labels[~self.is_synthetic], minlength=num_classes)
        synthetic = np.bincount(self.labels[self.is_synthetic], minlength=num_classes)
        return {"real_per_class": real.tolist(), "synthetic_per_class": synthetic.tolist()}


REAL_PERCENTAGE_PREFIX = "real_percentage="


def mixing_mode_problem(ratio) -> str | None:
    """None if `ratio` is a valid synthetic_ratio value, else what is wrong with it."""
    if ratio == "balance":
        return None
    if isinstance(ratio, str) and ratio.startswith(REAL_PERCENTAGE_PREFIX):
        try:
            percentage = float(ratio[len(REAL_PERCENTAGE_PREFIX):])
        except ValueError:
            percentage = -1.0
        if 0 < percentage <= 100:
            return None
        return f"synthetic_ratio {ratio!r}: the real percentage must be a number in (0, 100]"
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or ratio < 0:
        return (f"synthetic_ratio must be a number ≥ 0, 'balance' or 'real_percentage=P' (0 < P ≤ 100), "
                f"got {ratio!r}")
    return None


def synthetic_count(ratio, n_rare: int, counts: np.ndarray) -> int:
    """Synthetic (or duplicated) rare images a job adds. A number: `ratio` × the real rare count. "balance": as
    many as make the rare class as large as the largest class. "real_percentage=P": as many as make real images
    P % of the mixed training set (as a published mammography-synthesis pipeline offers)."""
    if ratio == "balance":
        return max(0, int(counts.max()) - n_rare)
    if isinstance(ratio, str) and ratio.startswith(REAL_PERCENTAGE_PREFIX):
        percentage = float(ratio[len(REAL_PERCENTAGE_PREFIX):])
        return int(round(int(counts.sum()) * (100.0 / percentage - 1.0)))
    return int(round(float(ratio) * n_rare))


def bank_size(counts: np.ndarray, rare_class: int, multiple: int) -> int:
    """Images a generator job samples into its bank, from the cell's real training counts per class."""
    counts = np.asarray(counts)
    n_rare = int(counts[rare_class]) if rare_class < len(counts) else 0
    return max(multiple * n_rare, int(counts.max()) - n_rare, 1)


def no_held_back_note(method: str, n_jobs: int) -> tuple[str, int]:
    """The one line (reason, count) for jobs of a method that adds held-back real images (``needs_held_back``) left
    out where the rare count keeps every rare training image (``all``, or a number equal to the class size)."""
    return (f"{method} job(s) where the rare count keeps every rare training image (rare_count all or the class "
            f"size: no held-back real images to add)", n_jobs)
