"""The method interface: how a method changes a cell's real training set, and the fit/sample generator contract."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


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

# Keys of a method entry's config that tell the harness how to run the method, not the method itself (they enter
# the key like the rest of the config, but are not constructor arguments of the methods in this package).
# benchmark.job, benchmark.plan.check_generator_configs, benchmark.generators.stage and _common.HARNESS_KEYS
# keep lists of their own.
METHOD_HARNESS_KEYS = frozenset({"kind", "uses_synthetic_ratio", "needs_held_back"})


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


class Method:
    """A method on the `generator` axis. Built from its registry entry's config (``Method(**config)``)."""

    uses_synthetic_ratio = True

    def __init__(self, **config):
        self.config = config

    def build_training_set(self, real: TrainingSet, rare_class: int, synthetic_ratio: float, num_classes: int,
                           seed: int, held_back: TrainingSet | None = None) -> TrainingSet:
        """The training set for one job from the cell's real (already rarity-subsampled) training images.

        `held_back`: the cell's rare-class training images that rarity subsampling removed, in the seeded order
        that continues the kept ones (empty at rare_count all). Only methods whose entry says
        ``needs_held_back: true`` (real_extra) may use them; every other method ignores them."""
        raise NotImplementedError


def check_method_configs(generator_entries: dict) -> None:
    """Build every non-generative method of a grid once from its entry's config (cheap: no data, no torch), so a
    bad hyper-parameter (a negative focal gamma, a typo in a key) stops the grid before any job starts."""
    from benchmark.errors import UserError

    problems = []
    for name, entry in generator_entries.items():
        if entry.config.get("kind") in ("generative", "external"):
            continue  # generative: plan.check_generator_configs; external: checked with its bank
        try:
            entry.load()(**entry.config)
        except UserError as exc:
            problems.append(f"method {name!r} ({entry.source}): {exc}")
    if problems:
        raise UserError("Invalid method config(s); nothing was started:\n  - " + "\n  - ".join(problems))


class Generator:
    """A generative model: fit once per cell on its real training images, then sample images of a class.

    Contract (every implementation, every test relies on it):
      - ``fit(images, labels, seed)`` sees only the cell's training-split images after rarity subsampling:
        uint8 (N, C, H, W) and int64 (N,) numpy arrays;
      - ``sample(n, class_index, seed)`` returns uint8 (n, C, H, W) in the training images' shape;
      - ``save(folder)`` / ``load(folder)`` round-trip the fitted model (safetensors, no pickles).
    """

    def __init__(self, num_classes: int, image_shape: tuple[int, int, int], **config):
        self.num_classes = num_classes
        self.image_shape = tuple(image_shape)
        self.config = config

    def fit(self, images: np.ndarray, labels: np.ndarray, seed: int) -> dict:
        raise NotImplementedError

    def sample(self, n: int, class_index: int, seed: int) -> np.ndarray:
        raise NotImplementedError

    def save(self, folder) -> None:
        raise NotImplementedError

    def load(self, folder) -> None:
        raise NotImplementedError
