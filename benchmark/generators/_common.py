"""Helpers shared by the neural generators and the audit: config checks, device, uint8 <-> tensors, artifacts, grids."""

from __future__ import annotations

import difflib
import json
from pathlib import Path

import numpy as np

from benchmark.core.errors import UserError


class GeneratorConfigError(UserError, ValueError):
    """A bad generator config value (unknown key, sampler, negative guidance …), raised before anything runs."""


class CorruptArtifactError(UserError, ValueError):
    """A saved generator folder that is missing files or cannot be read; rebuild it (``--force``)."""


def resolve_config(name: str, defaults: dict, config: dict) -> dict:
    """``defaults`` updated by ``config``; an unknown key is an error naming the close matches and the valid keys."""
    unknown = sorted(set(config) - set(defaults))
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, list(defaults), n=2, cutoff=0.6)
            hints.append(f"{key!r}" + (f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""))
        raise GeneratorConfigError(
            f"{name}: unknown config key(s) {', '.join(hints)}. Valid keys: {', '.join(sorted(defaults))}."
        )
    return {**defaults, **config}


def choose_device(requested=None):
    """``requested`` if given (e.g. "cpu", "cuda:1"), else cuda when available, else cpu."""
    import torch

    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def check_training_data(images: np.ndarray, labels: np.ndarray, image_shape: tuple, num_classes: int):
    """Validate the fit() inputs of the Generator contract; returns labels as int64 (N,)."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"fit() expects uint8 images (N, C, H, W), got {getattr(images, 'dtype', type(images))} "
                         f"with shape {getattr(images, 'shape', None)}")
    if tuple(images.shape[1:]) != tuple(image_shape):
        raise ValueError(f"fit() images have shape {images.shape[1:]}, the generator was built for {image_shape}")
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if len(labels) != len(images):
        raise ValueError(f"fit() got {len(images)} images but {len(labels)} labels")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes - 1}], got range [{labels.min()}, {labels.max()}]")
    return labels


def check_class_index(class_index: int, num_classes: int) -> int:
    if not 0 <= int(class_index) < num_classes:
        raise ValueError(f"class_index must lie in [0, {num_classes - 1}], got {class_index}")
    return int(class_index)


def to_signed(images: np.ndarray, device):
    """uint8 (N, C, H, W) -> float32 tensor in [-1, 1]."""
    import torch

    return torch.from_numpy(images).to(device=device, dtype=torch.float32).div_(127.5).sub_(1.0)


def to_uint8(x) -> np.ndarray:
    """float tensor in [-1, 1] -> uint8 numpy (N, C, H, W) (values outside [-1, 1] are clipped)."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to("cpu").numpy().astype(np.uint8)


def class_balanced_probabilities(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-image sampling probabilities that give each present class the same share of every batch."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = 1.0 / counts[labels]
    return weights / weights.sum()


def save_artifact(folder, meta: dict, tensors: dict[str, dict]) -> None:
    """Write ``config.json`` and one ``<name>.safetensors`` per state dict in ``tensors`` (no pickles)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, state in tensors.items():
        save_file({k: v.detach().to("cpu").contiguous() for k, v in state.items()}, str(folder / f"{name}.safetensors"))
    (folder / "config.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def read_artifact(folder, expected_class: str, names: list[str]) -> tuple[dict, dict[str, dict]]:
    """Read what :func:`save_artifact` wrote; a missing or unreadable file raises :class:`CorruptArtifactError`."""
    from safetensors.torch import load_file

    folder = Path(folder)
    hint = "Delete the folder or rebuild the generator artifact (--force)."
    try:
        meta = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise CorruptArtifactError(f"Generator artifact {folder}: cannot read config.json ({exc}). {hint}") from exc
    if meta.get("class") != expected_class:
        raise CorruptArtifactError(
            f"Generator artifact {folder} holds a {meta.get('class')!r} model, not {expected_class!r}. {hint}")
    tensors = {}
    for name in names:
        path = folder / f"{name}.safetensors"
        try:
            tensors[name] = load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types for truncated or garbled files
            raise CorruptArtifactError(f"Generator artifact {folder}: cannot read {path.name} ({exc}). {hint}") from exc
    return meta, tensors


def image_grid(images: np.ndarray, ncols: int, pad: int = 2, pad_value: int = 255) -> np.ndarray:
    """uint8 (N, C, H, W) -> one uint8 (H', W') or (H', W', 3) image with the tiles in rows of ``ncols``."""
    n, c, h, w = images.shape
    nrows = max(1, -(-n // ncols))
    grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), pad_value, dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, ncols)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[y:y + h, x:x + w] = images[i].transpose(1, 2, 0)
    return grid[..., 0] if c == 1 else grid


def save_grid(path, images: np.ndarray, ncols: int) -> Path:
    """Save ``image_grid(images, ncols)`` as a PNG; returns the path."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = image_grid(images, ncols)
    if grid.ndim == 3 and grid.shape[2] != 3:  # e.g. 2- or 4-channel data: show the first channel
        grid = grid[..., 0]
    Image.fromarray(grid).save(path)
    return path
