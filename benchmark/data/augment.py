"""Batched augmentation on the training device: flips, small rotations, brightness/contrast jitter."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B,C,H,W) → float in [0, 1] (on the images' device)."""
    return images.float().div_(255.0)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] → [-1, 1]: the same fixed normalisation for every dataset, method and split."""
    return x.sub(0.5).div_(0.5)


def augment(x: torch.Tensor, config: dict, generator: torch.Generator) -> torch.Tensor:
    """Random per-sample transforms of a float batch in [0, 1], drawn from `generator` (reproducible).

    config: hflip, vflip (bool), rotate_degrees, brightness, contrast (float; 0 disables each).
    """
    batch = x.shape[0]
    device = x.device

    def uniform(low, high):
        return torch.rand(batch, generator=generator, device=device) * (high - low) + low

    if config.get("hflip"):
        flip = torch.rand(batch, generator=generator, device=device) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if config.get("vflip"):
        flip = torch.rand(batch, generator=generator, device=device) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-2), x)
    degrees = float(config.get("rotate_degrees") or 0)
    if degrees > 0:
        angle = uniform(-degrees, degrees) * (math.pi / 180.0)
        cos, sin = torch.cos(angle), torch.sin(angle)
        zeros = torch.zeros_like(cos)
        theta = torch.stack([torch.stack([cos, -sin, zeros], 1), torch.stack([sin, cos, zeros], 1)], 1)
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    brightness = float(config.get("brightness") or 0)
    if brightness > 0:
        x = x + uniform(-brightness, brightness)[:, None, None, None]
    contrast = float(config.get("contrast") or 0)
    if contrast > 0:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * uniform(1 - contrast, 1 + contrast)[:, None, None, None] + mean
    return x.clamp_(0.0, 1.0)
