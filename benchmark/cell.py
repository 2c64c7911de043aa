"""A cell's real training data: the dataset split after rarity subsampling, shared by every method of the cell."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from benchmark.data import dataset_source
from benchmark.data.bundle import DataBundle
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
    """The real training images of `spec`'s cell. Depends on (dataset, rare_class, rare_count, seed) only."""
    bundle = load_bundle(spec.dataset, spec.image_size)
    train = bundle.splits["train"]
    rare_class = resolve_rare_class(spec.rare_class, train.labels, bundle.num_classes)
    seed = rarity_seed(spec.dataset_id, spec.rare_class, spec.rare_count, spec.seed)
    keep = rare_subsample(train.labels, rare_class, spec.rare_count, seed)
    real = TrainingSet(train.images[keep], train.labels[keep], np.zeros(len(keep), dtype=bool))
    return Cell(bundle, rare_class, keep, real)
