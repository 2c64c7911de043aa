"""Fixtures shared by the generator and audit tests: the real BreastMNIST training split, one torch thread."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def breastmnist(real_data_dir) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 (546, 1, 28, 28), int64 (546,)): the real training split (labels may be stored as (N, 1))."""
    with np.load(real_data_dir / "breastmnist.npz") as data:
        images = data["train_images"]
        labels = data["train_labels"].reshape(-1).astype(np.int64)
    if images.ndim == 3:
        images = images[:, None]
    return images, labels


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small CPU models run faster on one thread, and on a busy shared machine OpenMP barriers do not stall."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
