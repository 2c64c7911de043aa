"""Torch layers that adapt a timm backbone to small inputs; imported lazily by ``benchmark.run.backbones``."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn


class ResizeInput(nn.Module):
    """Bilinearly resizes the input to `size` × `size` before `model` (``resize_below`` in a backbone's config)."""

    def __init__(self, model: nn.Module, size: int):
        super().__init__()
        self.size = size
        self.model = model

    def forward(self, x):
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return self.model(x)
