"""Datasets: registry-named sources that load splits into memory as uint8 (N, C, H, W) arrays."""

from __future__ import annotations

import os
from pathlib import Path

from benchmark import registry


def data_dir() -> Path:
    """Where dataset files live: $GENMED_DATA_DIR, else medmnist's own default (~/.medmnist) to reuse downloads."""
    configured = os.environ.get("GENMED_DATA_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".medmnist"


def dataset_source(name: str):
    """The source object of a registered dataset (cheap: reads no image data)."""
    from benchmark.errors import UserError

    entry = registry.get("dataset", name)
    source_cls = entry.load()
    try:
        return source_cls(name=entry.name, **entry.config)
    except TypeError as exc:
        if "argument" not in str(exc):
            raise
        raise UserError(f"dataset {entry.name!r} ({entry.source}): its config does not fit {entry.target} ({exc}). "
                        "Fix the setting's name in the registry entry (docs/datasets.md lists them).") from None
