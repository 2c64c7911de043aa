"""Batched inference over uint8 images held in memory: the one loop that the audit's feature extraction and
launch/predict.py share (training's own evaluation gathers across processes instead: run/train.py predict)."""

from __future__ import annotations

import numpy as np


def map_batches(fn, images: np.ndarray, batch_size: int, device) -> list:
    """``fn(batch)`` under ``torch.no_grad()`` for consecutive uint8 batches of `images` (N, C, H, W) moved to
    `device`, in order; each result moved to the CPU."""
    import torch

    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size])).to(device)
            out.append(fn(batch).cpu())
    return out
