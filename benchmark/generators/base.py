"""The method interface: how a method changes a cell's real training set, and the fit/sample generator contract."""

from __future__ import annotations

import numpy as np

from benchmark.core.training_set import REAL_PERCENTAGE_PREFIX, TrainingSet, mixing_mode_problem, synthetic_count  # noqa: F401  (re-exported for plug-ins)
from benchmark.core.training_set import added_mask, apply_mixing  # noqa: F401  (re-exported for plug-ins)


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
        ``needs_held_back: true`` (real_extra) may use them; every other method ignores them.

        A method that adds images returns `real`'s images first, in their order, then the added ones: the grid's
        `mixing` axis (``apply_mixing``: pretrain_finetune, synthetic_rare_only) tells them apart that way."""
        raise NotImplementedError


def check_method_configs(generator_entries: dict) -> None:
    """Build every non-generative method of a grid once from its entry's config (cheap: no data, no torch), so a
    bad hyper-parameter (a negative focal gamma, a typo in a key) stops the grid before any job starts."""
    from benchmark.core import registry
    from benchmark.core.errors import UserError

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
