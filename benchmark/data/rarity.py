"""Rarity: which class is rare and which of its training images a cell keeps (paired across methods, nested across
rare counts)."""

from __future__ import annotations

import numpy as np

from benchmark.core.errors import UserError


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


def rare_order(train_labels: np.ndarray, rare_class: int, seed: int) -> np.ndarray:
    """Indices of the rare class's training images in the cell's one seeded permutation (`seed` depends on the
    dataset, rare class, seed and fold, never on the rare count or the method)."""
    return np.random.default_rng(seed).permutation(np.flatnonzero(train_labels == rare_class))


def rare_split(train_labels: np.ndarray, rare_class: int, rare_count, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held_back): sorted indices of the training images a cell keeps — every non-rare image and the first
    `rare_count` rare images of the permutation — and the rare images it removes, in permutation order (so
    held_back continues the kept prefix; empty at `all`). A smaller rare count keeps a subset of a larger one."""
    order = rare_order(train_labels, rare_class, seed)
    keep_count = resolve_rare_count(rare_count, len(order))
    keep = np.concatenate([np.flatnonzero(train_labels != rare_class), order[:keep_count]])
    return np.sort(keep), order[keep_count:]


def rare_subsample(train_labels: np.ndarray, rare_class: int, rare_count, seed: int) -> np.ndarray:
    """Sorted indices of the training images a cell keeps (see rare_split). Val and test are never subsampled."""
    return rare_split(train_labels, rare_class, rare_count, seed)[0]
