"""A cell's real training data: the dataset split after rarity subsampling, shared by every method of the cell."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from benchmark.core.errors import UserError
from benchmark.core.training_set import TrainingSet
from benchmark.data import dataset_source
from benchmark.data.bundle import DataBundle
from benchmark.data.folds import fold_bundle
from benchmark.data.rarity import rare_split, resolve_rare_class, resolve_rare_count


@dataclass
class Cell:
    bundle: DataBundle
    rare_class: int
    kept_indices: np.ndarray  # indices into the train split
    real: TrainingSet
    held_back: TrainingSet  # the rare training images rarity removed, in permutation order (empty at `all`)

    @property
    def n_rare(self) -> int:
        return int((self.real.labels == self.rare_class).sum())


@lru_cache(maxsize=4)
def load_bundle(dataset: str, image_size: int) -> DataBundle:
    """Dataset splits, loaded once per process (packed jobs of one dataset share them)."""
    return dataset_source(dataset).load(image_size)


def _subset(split, indices: np.ndarray) -> TrainingSet:
    return TrainingSet(split.images[indices], split.labels[indices], np.zeros(len(indices), dtype=bool))


def build_cell(spec) -> Cell:
    """The real training images of `spec`'s cell. Depends on (dataset, rare_class, rare_count, seed, fold) only.

    The rare class's training images are permuted once per (dataset, rare class, seed, fold) (`spec.rarity_seed`)
    and rare_count n keeps the first n; `held_back` holds the rest in order. With cross-validation
    (``spec.k_folds`` > 0) the bundle's train and val splits are the fold's training and held-out parts of
    train+val (test unchanged), and the rare class is subsampled inside the fold's training part; `kept_indices`
    then index that training part. The data must be what the spec's key was made from (its content hash and
    resolved rarity), else the job stops instead of writing a result under a key that describes other data."""
    resolved = spec._require_resolved("cell")
    bundle = load_bundle(spec.dataset, spec.image_size)
    if bundle.sha256 != resolved["dataset_sha256"]:
        raise UserError(f"{spec.name}: dataset {spec.dataset!r} ({bundle.path}) changed after this job was planned: "
                        f"its content hash is {bundle.sha256[:12]}…, the job's key was made for "
                        f"{resolved['dataset_sha256'][:12]}…. Run the grid again; the job gets a key for the new data.")
    k_folds, fold = getattr(spec, "k_folds", 0), getattr(spec, "fold", 0)
    if k_folds:
        bundle = fold_bundle(bundle, k_folds, fold, spec.fold_seed)
    train = bundle.splits["train"]
    rare_class = resolve_rare_class(spec.rare_class, train.labels, bundle.num_classes)
    available = int((train.labels == rare_class).sum())
    if (rare_class, resolve_rare_count(spec.rare_count, available)) != \
            (resolved["rare_class"], resolved["rare_count"]):
        raise UserError(f"{spec.name}: rarity resolves to class {rare_class} with "
                        f"{resolve_rare_count(spec.rare_count, available)} images here, but the job was planned "
                        f"with class {resolved['rare_class']} and {resolved['rare_count']}. Run the grid again.")
    keep, held = rare_split(train.labels, rare_class, resolved["rare_count"], spec.rarity_seed)
    return Cell(bundle, rare_class, keep, _subset(train, keep), _subset(train, held))
