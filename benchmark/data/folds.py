"""Cross-validation: stratified k-fold partitions of a dataset's train+val images (the test split is never in one).

Fold ``f`` (1..k) of a bundle has as training split the train+val images outside part ``f`` and as validation split
(model selection) part ``f``; the test split is the dataset's own, unchanged. The partition depends only on the
labels and a seed derived from (dataset, k, seed) (``JobSpec.fold_seed``), never on the method or the backbone,
so every method of a (cell, seed, fold) trains on the same images. Rarity subsampling happens afterwards, inside
the fold's training part (``benchmark.run.cell.build_cell``).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from benchmark.core.errors import UserError
from benchmark.data.bundle import DataBundle, Split


def fold_assignment(labels: np.ndarray, k_folds: int, seed: int, where: str = "dataset") -> np.ndarray:
    """Part index (0..k-1) of every sample: each class shuffled with `seed` and dealt round-robin, continuing where
    the previous class stopped, so per-class and total part sizes differ by at most one."""
    labels = np.asarray(labels)
    if k_folds < 2:
        raise UserError(f"k_folds must be ≥ 2, got {k_folds}.")
    counts = np.bincount(labels) if len(labels) else np.zeros(0, dtype=np.int64)
    too_small = [(c, int(n)) for c, n in enumerate(counts) if 0 < n < k_folds]
    if too_small:
        detail = ", ".join(f"class {c}: {n}" for c, n in too_small)
        raise UserError(f"{where}: {k_folds}-fold cross-validation needs at least {k_folds} train+val images per "
                        f"class, but {detail}. Use fewer folds (k_folds) or the fixed split (k_folds: 0).")
    rng = np.random.default_rng(seed)
    parts = np.empty(len(labels), dtype=np.int64)
    offset = 0
    for cls in np.flatnonzero(counts):
        members = rng.permutation(np.flatnonzero(labels == cls))
        parts[members] = (offset + np.arange(len(members))) % k_folds
        offset = (offset + len(members)) % k_folds
    return parts


def fold_indices(train_labels: np.ndarray, val_labels: np.ndarray, k_folds: int, fold: int, seed: int,
                 where: str = "dataset") -> tuple[np.ndarray, np.ndarray]:
    """(training, held-out) indices into the concatenation train + val for `fold` (1..k_folds)."""
    if not 1 <= int(fold) <= k_folds:
        raise UserError(f"{where}: fold {fold} is out of range 1..{k_folds}.")
    pool = np.concatenate([train_labels, val_labels])
    parts = fold_assignment(pool, k_folds, seed, where)
    return np.flatnonzero(parts != fold - 1), np.flatnonzero(parts == fold - 1)


def fold_labels(labels: dict, k_folds: int, fold: int, seed: int, where: str = "dataset") -> dict:
    """The split labels {train, val, test} of `fold`, from the dataset's split labels (for checks before a run)."""
    pool = np.concatenate([labels["train"], labels["val"]])
    train, held_out = fold_indices(labels["train"], labels["val"], k_folds, fold, seed, where)
    return {"train": pool[train], "val": pool[held_out], "test": labels["test"]}


def fold_bundle(bundle: DataBundle, k_folds: int, fold: int, seed: int) -> DataBundle:
    """`bundle` with train and val replaced by fold `fold`'s training and held-out parts of train+val (each one
    copy, gathered from train and val directly: train+val is never concatenated)."""
    train, val = bundle.splits["train"], bundle.splits["val"]
    train_idx, held_idx = fold_indices(train.labels, val.labels, k_folds, fold, seed, f"dataset {bundle.name!r}")
    splits = {"train": _gather(train, val, train_idx), "val": _gather(train, val, held_idx),
              "test": bundle.splits["test"]}
    return replace(bundle, splits=splits)


def _gather(first: Split, second: Split, indices: np.ndarray) -> Split:
    """The images and labels at sorted `indices` of first + second (indices ≥ len(first) index second), taken
    straight into the result (no temporary copy of the selection)."""
    n, cut = len(first), int(np.searchsorted(indices, len(first)))
    images = np.empty((len(indices), *first.images.shape[1:]), dtype=first.images.dtype)
    np.take(first.images, indices[:cut], axis=0, out=images[:cut])
    np.take(second.images, indices[cut:] - n, axis=0, out=images[cut:])
    labels = np.concatenate([first.labels[indices[:cut]], second.labels[indices[cut:] - n]])
    return Split(images, labels)
