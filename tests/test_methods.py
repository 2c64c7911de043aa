"""Baseline methods: what each does to a cell's real training set."""

import numpy as np
import pytest

from benchmark import registry
from benchmark.generators.base import TrainingSet


def real_set():
    labels = np.array([0] * 10 + [1] * 40)
    images = np.arange(50, dtype=np.uint8)[:, None, None, None].repeat(4, 2).repeat(4, 3)
    return TrainingSet(images, labels, np.zeros(50, dtype=bool))


def method(name):
    entry = registry.get("generator", name)
    return entry.load()(**entry.config)


def test_none_returns_the_real_images_unchanged():
    real = real_set()
    assert method("none").build_training_set(real, 0, 0.0, 2, seed=1) is real


def test_class_weight_is_inverse_frequency_with_mean_one():
    out = method("class_weight").build_training_set(real_set(), 0, 0.0, 2, seed=1)
    expected = np.array([50 / 10 / 2, 50 / 40 / 2])
    assert out.class_weights == pytest.approx(expected / expected.mean())
    assert out.class_weights[0] / out.class_weights[1] == pytest.approx(4.0)


@pytest.mark.parametrize("ratio,extra", [(1, 10), (2, 20), (2.5, 25), (0, 0)])
def test_oversample_duplicates_rare_real_images_evenly(ratio, extra):
    real = real_set()
    out = method("oversample").build_training_set(real, 0, float(ratio), 2, seed=3)
    assert len(out.labels) == 50 + extra
    assert out.is_synthetic.sum() == extra and (out.labels[out.is_synthetic] == 0).all()
    duplicated = out.images[out.is_synthetic][:, 0, 0, 0]
    assert set(duplicated) <= set(range(10))
    if extra:
        counts = np.bincount(duplicated, minlength=10)
        assert counts.max() - counts.min() <= 1
    assert out.counts(2) == {"real_per_class": [10, 40], "synthetic_per_class": [extra, 0]}
