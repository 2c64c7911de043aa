"""Datasets: registry-named sources that load splits into memory as uint8 (N, C, H, W) arrays."""

from __future__ import annotations

import os
from pathlib import Path

from benchmark.core import registry


def data_dir() -> Path:
    """Where dataset files live: $GENMED_DATA_DIR, else medmnist's own default (~/.medmnist) to reuse downloads."""
    configured = os.environ.get("GENMED_DATA_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".medmnist"


def dataset_source(name: str):
    """The source object of a registered dataset (cheap: reads no image data)."""
    return registry.create("dataset", name)
