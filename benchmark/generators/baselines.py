"""Baseline methods every generative method must beat: no change, inverse-frequency class weights, oversampling."""

from __future__ import annotations

import numpy as np

from benchmark.generators.base import Method, TrainingSet, synthetic_count


def inverse_frequency_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-class weights ∝ 1 / class count (0 for absent classes), normalised to mean 1 over present classes."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / num_classes, 0.0)
    return weights / weights[counts > 0].mean()


class Unchanged(Method):
    """`none`: the cell's real training images unchanged (the control; augmentation runs as for every method)."""

    def build_training_set(self, real, rare_class, synthetic_ratio, num_classes, seed, held_back=None):
        return real


class ClassWeight(Method):
    """`class_weight`: cross-entropy weighted by inverse class frequency, normalised to mean 1 over classes."""

    def build_training_set(self, real, rare_class, synthetic_ratio, num_classes, seed, held_back=None):
        weights = inverse_frequency_weights(real.labels, num_classes)
        return TrainingSet(real.images, real.labels, real.is_synthetic, weights.astype(np.float32),
                           {"class_weights": weights.round(6).tolist()})


class Oversample(Method):
    """`oversample`: rare real images duplicated up to `synthetic_ratio` × the real rare count, or up to class
    balance with ratio "balance" (cycling through a
    seeded permutation, so each image is repeated as evenly as possible); augmented like all training data."""

    def build_training_set(self, real, rare_class, synthetic_ratio, num_classes, seed, held_back=None):
        rare_idx = np.flatnonzero((real.labels == rare_class) & ~real.is_synthetic)
        extra = synthetic_count(synthetic_ratio, len(rare_idx), np.bincount(real.labels, minlength=num_classes))
        if extra == 0 or len(rare_idx) == 0:
            return real
        rng = np.random.default_rng(seed)
        repeats = -(-extra // len(rare_idx))
        order = np.concatenate([rng.permutation(rare_idx) for _ in range(repeats)])[:extra]
        return TrainingSet(
            np.concatenate([real.images, real.images[order]]),
            np.concatenate([real.labels, real.labels[order]]),
            np.concatenate([real.is_synthetic, np.ones(extra, dtype=bool)]),
            None,
            {"duplicated": extra},
        )
