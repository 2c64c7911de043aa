"""Seeds derived by hashing the components they depend on (never the method: that is what makes runs paired)."""

import hashlib
import json


def derive_seed(*components) -> int:
    """A 31-bit seed that depends only on `components` (stable across Python runs and machines)."""
    payload = json.dumps([str(c) for c in components], separators=(",", ":")).encode()
    return int.from_bytes(hashlib.sha256(payload).digest()[:4], "big") & 0x7FFFFFFF


def rarity_seed(dataset_id: str, rare_class, rare_count, seed: int, fold: int = 0, k_folds: int = 0) -> int:
    """Seed of the rare-class subsample: shared by every method and backbone of a cell. A cross-validation fold
    (k_folds > 0) is part of the cell; the fixed split (k_folds 0) keeps the seeds it always had."""
    if k_folds:
        return derive_seed("rarity", dataset_id, rare_class, rare_count, seed, "fold", k_folds, fold)
    return derive_seed("rarity", dataset_id, rare_class, rare_count, seed)


def fold_seed(dataset_entry_hash: str, k_folds: int, seed: int) -> int:
    """Seed of the stratified k-fold partition of train+val: depends on the dataset (entry, not resolution), k and
    the seed only, so every method, backbone, rarity setting and resolution of a seed sees the same folds."""
    return derive_seed("folds", dataset_entry_hash, k_folds, seed)


def init_seed(dataset_id: str, rare_class, rare_count, seed: int, backbone: str) -> int:
    """Seed of model initialisation and data order: shared by every method of a (cell, backbone)."""
    return derive_seed("init", dataset_id, rare_class, rare_count, seed, backbone)


def generator_seed(dataset_id: str, rare_class, rare_count, seed: int, generator: str) -> int:
    """Seed of a generator's training and sampling: independent of backbone and synthetic ratio."""
    return derive_seed("generator", dataset_id, rare_class, rare_count, seed, generator)
