"""Rarity: which class is rare and which of its training images a cell keeps (paired across methods)."""

from __future__ import annotations

import numpy as np

from benchmark.errors import UserError


def resolve_rare_class(rare_class, train_labels: np.ndarray, num_classes: int) -> int:
    """'minority' → the least frequent class of the train split (lowest index on ties); an int is checked."""
    counts = np.bincount(train_labels, minlength=num_classes)
    if rare_class == "minority":
        return int(np.argmin(counts))
    if not 0 <= int(rare_class) < num_classes:
        raise UserError(f"rare_class {rare_class} is out of range (classes 0..{num_classes - 1}).")
    return int(rare_class)


def resolve_rare_count(rare_count, available: int, where: str = "") -> int:
    if rare_count == "all":
        return available
    count = int(rare_count)
    if count < 1 or count > available:
        raise UserError(f"{where}rare_count={rare_count} is impossible: the rare class has {available} training "
                        f"images. Use a value between 1 and {available}, or 'all'.")
    return count


def rare_subsample(train_labels: np.ndarray, rare_class: int, rare_count, seed: int) -> np.ndarray:
    """Sorted indices of the training images a cell keeps: every non-rare image and `rare_count` rare ones.

    The choice depends only on the labels, the rare class, the count and `seed` (derived from the cell, never
    from the method), so every method of a cell trains on exactly the same real images. Val and test are never
    subsampled.
    """
    rare_idx = np.flatnonzero(train_labels == rare_class)
    keep_count = resolve_rare_count(rare_count, len(rare_idx))
    rng = np.random.default_rng(seed)
    kept_rare = rng.choice(rare_idx, size=keep_count, replace=False) if keep_count < len(rare_idx) else rare_idx
    keep = np.concatenate([np.flatnonzero(train_labels != rare_class), kept_rare])
    return np.sort(keep)
