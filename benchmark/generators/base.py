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
    """A method on the `generator` axis, built by ``registry.create("generator", name)`` from its entry's config."""

    needs_held_back = False  # True: uses the cell's held-back real images; its entry must say needs_held_back: true

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
    from benchmark import registry
    from benchmark.errors import UserError

    problems = []
    for name, entry in generator_entries.items():
        if entry.config.get("kind") in ("generative", "external"):
            continue  # generative: plan.check_generator_configs; external: checked with its bank
        try:
            method = registry.create("generator", entry)
        except UserError as exc:
            problems.append(f"method {name!r} ({entry.source}): {exc}")
            continue
        if method.needs_held_back and entry.config.get("needs_held_back") is not True:
            problems.append(f"method {name!r} ({entry.source}): {entry.target} adds held-back real images, so its "
                            "entry must say needs_held_back: true (the grid then leaves it out at rare_count all, "
                            "where no real image is held back).")
    if problems:
        raise UserError("Invalid method config(s); nothing was started:\n  - " + "\n  - ".join(problems))


class Generator:
    """A generative model: fit once per cell on its real training images, then sample images of a class.

    Contract (every implementation, every test relies on it):
      - ``fit(images, labels, seed, out_dir=None)`` sees only the cell's training-split images after rarity
        subsampling: uint8 (N, C, H, W) and int64 (N,) numpy arrays; `out_dir` (the run folder, or None) may receive
        training logs and sample grids; returns a small JSON-able log;
      - ``sample(n, class_index, seed)`` returns uint8 (n, C, H, W) in the training images' shape;
      - ``save(folder)`` / ``load(folder)`` / ``from_folder(folder)`` round-trip the fitted model: ``config.json``
        (class, num_classes, image_shape, resolved config) and one ``<name>.safetensors`` per network in
        ``weight_names`` (no pickles). A subclass sets ``artifact_class``, ``defaults`` and ``weight_names`` and
        implements ``sampling_weights`` (its state dicts) and ``restore_weights`` (rebuild and load them).
    """

    artifact_class = ""
    defaults: dict = {}
    weight_names: tuple[str, ...] = ()

    def __init__(self, num_classes: int, image_shape: tuple[int, int, int], **config):
        self.num_classes = num_classes
        self.image_shape = tuple(image_shape)
        self.config = config
        self.cfg: dict = {}

    def fit(self, images: np.ndarray, labels: np.ndarray, seed: int, out_dir=None) -> dict:
        raise NotImplementedError

    def sample(self, n: int, class_index: int, seed: int) -> np.ndarray:
        raise NotImplementedError

    def sampling_weights(self) -> dict[str, dict]:
        """{weight name: state dict} of the fitted networks that sampling needs (raises if not fitted)."""
        raise NotImplementedError

    def restore_weights(self, tensors: dict[str, dict]) -> None:
        """Rebuild the networks from ``self.cfg`` and load `tensors` (a RuntimeError if they do not fit)."""
        raise NotImplementedError

    def save(self, folder) -> None:
        from benchmark.generators._common import save_artifact

        weights = self.sampling_weights()
        meta = {"class": self.artifact_class, "num_classes": self.num_classes, "image_shape": list(self.image_shape),
                "config": {k: v for k, v in self.cfg.items() if k != "device"}}
        save_artifact(folder, meta, weights)

    def load(self, folder) -> None:
        from benchmark.generators._common import CorruptArtifactError, choose_device, read_artifact

        meta, tensors = read_artifact(folder, self.artifact_class, list(self.weight_names))
        self.num_classes = int(meta["num_classes"])
        self.image_shape = tuple(meta["image_shape"])
        self.cfg = {**self.defaults, **meta["config"], "device": self.cfg.get("device")}
        self.config = dict(meta["config"])
        self.device = choose_device(self.cfg["device"])
        try:
            self.restore_weights(tensors)
        except RuntimeError as exc:
            raise CorruptArtifactError(f"Generator artifact {folder}: weights do not fit its config.json ({exc}). "
                                       "Rebuild the generator artifact (--force).") from exc

    @classmethod
    def from_folder(cls, folder, device=None):
        """The generator rebuilt from ``save()``'s folder, on `device` (default: cuda when available, else cpu)."""
        model = cls.__new__(cls)
        Generator.__init__(model, 1, (1, 28, 28))
        model.cfg = {"device": device}
        model.load(folder)
        return model
