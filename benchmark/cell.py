"""A cell's real training data: the dataset split after rarity subsampling, shared by every method of the cell."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from benchmark.data import dataset_source
from benchmark.data.bundle import DataBundle
from benchmark.data.folds import fold_bundle
from benchmark.data.rarity import rare_subsample, resolve_rare_class
from benchmark.generators.base import TrainingSet
from benchmark.seeding import rarity_seed


@dataclass
class Cell:
    bundle: DataBundle
    rare_class: int
    kept_indices: np.ndarray  # indices into the train split
    real: TrainingSet

    @property
    def n_rare(self) -> int:
        return int((self.real.labels == self.rare_class).sum())


@lru_cache(maxsize=4)
def load_bundle(dataset: str, image_size: int) -> DataBundle:
    """Dataset splits, loaded once per process (packed jobs of one dataset share them)."""
    return dataset_source(dataset).load(image_size)


def build_cell(spec) -> Cell:
    """The real training images of `spec`'s cell. Depends on (dataset, rare_class, rare_count, seed, fold) only.

    With cross-validation (``spec.k_folds`` > 0) the bundle's train and val splits are the fold's training and
    held-out parts of train+val (test unchanged), and the rare class is subsampled inside the fold's training
    part; `kept_indices` then index that training part."""
    bundle = load_bundle(spec.dataset, spec.image_size)
    k_folds, fold = getattr(spec, "k_folds", 0), getattr(spec, "fold", 0)
    if k_folds:
        bundle = fold_bundle(bundle, k_folds, fold, spec.fold_seed)
    train = bundle.splits["train"]
    rare_class = resolve_rare_class(spec.rare_class, train.labels, bundle.num_classes)
    seed = rarity_seed(spec.dataset_id, spec.rare_class, spec.rare_count, spec.seed, fold, k_folds)
    keep = rare_subsample(train.labels, rare_class, spec.rare_count, seed)
    real = TrainingSet(train.images[keep], train.labels[keep], np.zeros(len(keep), dtype=bool))
    return Cell(bundle, rare_class, keep, real)
