"""A cell's real training data: the dataset split after rarity subsampling, shared by every method of the cell,
and the per-process cache of loaded datasets (bounded by bytes)."""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass

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


BUNDLE_CACHE_ENV = "GENMED_BUNDLE_CACHE_MB"
DEFAULT_BUNDLE_CACHE_MB = 2048


class BundleCache:
    """Dataset bundles loaded once per process (packed jobs of one dataset share them), bounded by the bytes the
    process holds for them (``DataBundle.resident_bytes``: memory-mapped images count 0), not by their number:
    the least recently used bundles are dropped while the total exceeds ``$GENMED_BUNDLE_CACHE_MB`` (default
    2048); the bundle just loaded always stays. Called like the ``lru_cache`` it replaces, with ``cache_clear``."""

    def __init__(self, load):
        self._load = load
        self._bundles: OrderedDict = OrderedDict()

    @staticmethod
    def max_bytes() -> int:
        text = os.environ.get(BUNDLE_CACHE_ENV)
        try:
            value = float(text) if text not in (None, "") else DEFAULT_BUNDLE_CACHE_MB
        except ValueError:
            value = -1
        if value < 0:
            raise UserError(f"${BUNDLE_CACHE_ENV} is {text!r}; give the megabytes of datasets a process may keep "
                            f"loaded (≥ 0; default {DEFAULT_BUNDLE_CACHE_MB}).")
        return int(value * 2**20)

    def __call__(self, dataset: str, image_size: int) -> DataBundle:
        key = (dataset, int(image_size))
        if key in self._bundles:
            self._bundles.move_to_end(key)
            return self._bundles[key]
        bundle = self._load(dataset, int(image_size))
        self._bundles[key] = bundle
        limit = self.max_bytes()
        while len(self._bundles) > 1 and self.held_bytes() > limit:
            self._bundles.popitem(last=False)
        return bundle

    def held_bytes(self) -> int:
        return sum(b.resident_bytes() for b in self._bundles.values())

    def keys(self) -> list:
        return list(self._bundles)

    def cache_clear(self) -> None:
        self._bundles.clear()


def _load(dataset: str, image_size: int) -> DataBundle:
    return dataset_source(dataset).load(image_size)


load_bundle = BundleCache(_load)


def _subset(split, indices: np.ndarray) -> TrainingSet:
    """The images and labels at `indices`: views of the split (no copy) when they are all of it or a
    contiguous range, else one copy of the selection (what training needs contiguous)."""
    n = len(indices)
    if n and indices[-1] - indices[0] == n - 1 and (n == 1 or bool(np.all(np.diff(indices) == 1))):
        part = slice(int(indices[0]), int(indices[0]) + n)
        return TrainingSet(split.images[part], split.labels[part], np.zeros(n, dtype=bool))
    return TrainingSet(np.take(split.images, indices, axis=0), split.labels[indices], np.zeros(n, dtype=bool))


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
