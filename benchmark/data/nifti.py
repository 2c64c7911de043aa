"""NIfTI datasets: volumes (3D) or slices (2D) organised by class, ``root/<class>/*.nii[.gz]`` (optionally under
``train|val|test/``), read with nibabel into the same uint8 (N, C, H, W) form as every other dataset.

Registry entry (``docs/datasets.md`` has complete examples)::

    target: benchmark.data.nifti:NiftiDataset
    version: 1
    config:
      root: /data/mri                  # root/original/benign/*.nii.gz → root: /data/mri/original
      image_size: 64
      slices: middle                   # middle | all | every_<k> (e.g. every_4), along `axis`
      axis: 2                          # 0, 1 or 2 of the RAS-reoriented volume (2: axial)
      window: [1, 99]                  # intensity percentiles of each volume mapped to 0 and 255
      canonical: true                  # reorient to the closest RAS+ orientation first (nibabel.as_closest_canonical)
      channels: 1                      # 1 (default) or 3 (grey repeated)
      split_ratios: {train: 0.7, val: 0.1, test: 0.2}
      split_seed: 0
      group_pattern: "(sub-\\d+)"      # optional: files of one patient (several volumes or 2D slices) share a split

Slice policy, for each 3D volume: ``middle`` takes the middle slice (index n // 2) along `axis`; ``all`` every slice;
``every_<k>`` every k-th slice, the leftover split between both ends (indices (n mod k) // 2, + k, …). A 2D file
(or 3D with one slice along `axis`) gives its single slice; a 4D file with one volume (last axis 1) counts as 3D.
Intensities: each volume is windowed to uint8 by its own percentiles (`window`) over its finite voxels, before
slicing, so every slice of a volume shares one mapping; slices are resized like images (PIL bicubic, antialiased).

Split policy (no patient leakage): splits are drawn per file (volume) — or per `group_pattern` group — stratified by
class, so all slices of one volume (and all files of one group) always land in the same split.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from benchmark.core.errors import UserError
from benchmark.data.folders import FileDataset
from benchmark.data.images import check_inside, conform_image, scan_class_folders, uint8_array

NIFTI_SUFFIXES = (".nii", ".nii.gz")
SLICE_POLICIES = "middle | all | every_<k>"


def _nibabel_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nibabel")
    except PackageNotFoundError:
        return "?"


def parse_slices(slices) -> tuple[str, int]:
    """('middle' | 'all' | 'every', k)."""
    text = str(slices).strip().lower()
    if text in ("middle", "all"):
        return text, 1
    match = re.fullmatch(r"every_(\d+)", text)
    if match and int(match.group(1)) >= 1:
        return "every", int(match.group(1))
    raise UserError(f"slices must be {SLICE_POLICIES} (e.g. every_4), got {slices!r}.")


def slice_indices(n: int, policy: tuple[str, int]) -> list:
    kind, step = policy
    if n <= 1:
        return [0]
    if kind == "middle":
        return [n // 2]
    if kind == "all":
        return list(range(n))
    return list(range((n % step) // 2, n, step))


def _load_error(path, exc) -> UserError:
    return UserError(f"Cannot read NIfTI file {path} ({type(exc).__name__}: {exc}). Replace or remove the file.")


def _spatial_shape(shape: tuple, path) -> tuple:
    shape = tuple(int(s) for s in shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) not in (2, 3):
        raise UserError(f"NIfTI file {path} has shape {shape}; expected a 2D slice or a 3D volume "
                        "(a 4D series must be split into volumes first).")
    return shape


def volume_shape(path, canonical: bool) -> tuple:
    """The (reoriented) spatial shape of a NIfTI file from its header alone."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
        shape = _spatial_shape(img.shape, path)
        if canonical and len(shape) == 3:
            ornt = nib.orientations.io_orientation(img.affine)
            out = [0, 0, 0]
            for axis, (target, _) in enumerate(ornt):
                out[int(target)] = shape[axis]
            shape = tuple(out)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types for bad files
        raise _load_error(path, exc) from None
    return shape


def read_volume(path, canonical: bool) -> np.ndarray:
    """Voxel data as float32, 2D or 3D, reoriented to RAS+ when `canonical`."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
        _spatial_shape(img.shape, path)
        if canonical and len(img.shape) >= 3:
            img = nib.as_closest_canonical(img)
        data = np.asarray(img.get_fdata(dtype=np.float32))
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise _load_error(path, exc) from None
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    return data


def window_uint8(data: np.ndarray, window, path) -> np.ndarray:
    """Percentile windowing of one volume to uint8 (its own `window` percentiles → 0 and 255)."""
    finite = np.isfinite(data)
    if not finite.any():
        raise UserError(f"NIfTI file {path} has no finite voxel values.")
    low, high = np.percentile(data[finite], [float(window[0]), float(window[1])])
    scale = float(high - low) if high > low else 1.0
    scaled = (np.where(finite, data, low) - low) / scale
    return np.clip(np.rint(scaled * 255.0), 0, 255).astype(np.uint8)


def volume_slices(path, image_size: int, channels: int = 1, slices="middle", axis: int = 2, window=(1, 99),
                  canonical: bool = True) -> tuple[np.ndarray, list]:
    """(uint8 (n, channels, image_size, image_size), slice indices) of one NIfTI file under the slice policy."""
    from PIL import Image

    data = window_uint8(read_volume(path, canonical), window, path)
    if data.ndim == 2:
        planes, indices = [data], [0]
    else:
        indices = slice_indices(data.shape[axis], parse_slices(slices))
        planes = [np.take(data, i, axis=axis) for i in indices]
    out = np.stack([conform_image(Image.fromarray(np.ascontiguousarray(p), "L"), image_size, channels)
                    for p in planes])
    return out, indices


class NiftiDataset(FileDataset):
    kind = "NIfTI"

    def __init__(self, name: str, root, image_size: int, slices: str = "middle", axis: int = 2, window=(1, 99),
                 canonical: bool = True, channels: int | None = 1, **config):
        super().__init__(name, root, image_size, channels=channels or 1, **config)
        self.policy = parse_slices(slices)
        self.slices = slices
        if axis not in (0, 1, 2):
            raise UserError(f"dataset {name!r}: axis must be 0, 1 or 2, got {axis!r}.")
        self.axis = int(axis)
        if not (isinstance(window, (list, tuple)) and len(window) == 2 and 0 <= window[0] < window[1] <= 100):
            raise UserError(f"dataset {name!r}: window must be [low, high] percentiles with 0 ≤ low < high ≤ 100, "
                            f"got {window!r}.")
        self.window = tuple(float(w) for w in window)
        self.canonical = bool(canonical)
        self._counts: dict = {}

    def decode_settings(self) -> dict:
        return {"slices": str(self.slices), "axis": self.axis, "window": list(self.window),
                "canonical": self.canonical, "nibabel": _nibabel_version()}

    def _scan(self) -> tuple[list, list]:
        return scan_class_folders(self.root, NIFTI_SUFFIXES, self.label_names, self.exclude, self.where)

    def _count(self, path: Path) -> int:
        if path not in self._counts:
            shape = volume_shape(path, self.canonical)
            self._counts[path] = 1 if len(shape) == 2 else len(slice_indices(shape[self.axis], self.policy))
        return self._counts[path]

    def _read(self, files: list, allocate=None, slots=None) -> np.ndarray:
        total = sum(self._count(f) for f in files)
        out = (allocate or uint8_array)((total, self.channels, self.image_size, self.image_size))
        at = 0
        for i, path in enumerate(files):
            at = at if slots is None else int(slots[i])
            check_inside(path, self.root, self.where)
            images, _ = volume_slices(path, self.image_size, self.channels, self.slices, self.axis, self.window,
                                      self.canonical)
            if len(images) != self._count(path):
                raise UserError(f"{path}: expected {self._count(path)} slices from its header, read {len(images)}.")
            out[at:at + len(images)] = images
            at += len(images)
        return out
