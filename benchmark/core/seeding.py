"""Seeds derived by hashing the components they depend on (never the method: that is what makes runs paired).

Every seed of a job derives from resolved values (the rare class's index, never the word `minority`) of its cell:
the dataset (entry and resolution), the rare class, the seed and, for cross-validated jobs (k_folds > 0), the fold.
None depends on rare_count: a cell's rare-class training images are permuted once and rare_count n keeps the first
n (nested subsamples), and model initialisation, data order and generator seeds are shared across rare counts, so
a trend over rare count compares like with like.
"""

import hashlib
import json


def derive_seed(*components) -> int:
    """A 31-bit seed that depends only on `components` (stable across Python runs and machines)."""
    payload = json.dumps([str(c) for c in components], separators=(",", ":")).encode()
    return int.from_bytes(hashlib.sha256(payload).digest()[:4], "big") & 0x7FFFFFFF


def _cell(dataset_id: str, rare_class: int, seed: int, fold: int, k_folds: int) -> tuple:
    fold_parts = ("fold", k_folds, fold) if k_folds else ()
    return (dataset_id, int(rare_class), int(seed), *fold_parts)


def rarity_seed(dataset_id: str, *, rare_class: int, seed: int, fold: int = 0, k_folds: int = 0) -> int:
    """Seed of the permutation of the cell's rare-class training images: shared by every method, backbone and
    rare count of a (dataset, rare class, seed, fold)."""
    return derive_seed("rarity", *_cell(dataset_id, rare_class, seed, fold, k_folds))


def fold_seed(dataset_entry_hash: str, k_folds: int, seed: int) -> int:
    """Seed of the stratified k-fold partition of train+val: depends on the dataset (entry, not resolution), k and
    the seed only, so every method, backbone, rarity setting and resolution of a seed sees the same folds."""
    return derive_seed("folds", dataset_entry_hash, k_folds, seed)


def init_seed(dataset_id: str, *, rare_class: int, seed: int, backbone: str, fold: int = 0,
              k_folds: int = 0) -> int:
    """Seed of model initialisation and data order: shared by every method (and rare count) of a (cell, backbone)."""
    return derive_seed("init", *_cell(dataset_id, rare_class, seed, fold, k_folds), backbone)


def generator_seed(dataset_id: str, *, rare_class: int, seed: int, generator: str, fold: int = 0,
                   k_folds: int = 0) -> int:
    """Seed of a generator's training and sampling: independent of backbone, synthetic ratio and rare count."""
    return derive_seed("generator", *_cell(dataset_id, rare_class, seed, fold, k_folds), generator)
