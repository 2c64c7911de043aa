"""Shared by the image-folder, metadata.csv and NIfTI datasets (and prediction): reading image files into the
in-memory uint8 (C, H, W) form, class-folder scanning, stratified (grouped) splits, and checks naming the file.

Conversion policy (one function, :func:`read_image`, for training data and for ``launch/predict.py``):
  - grey modes (``1``, ``L``, ``LA``, 16-bit ``I;16``, 32-bit ``I``/``F``) have 1 channel, every other mode (RGB,
    RGBA, palette, CMYK, …) 3; alpha is dropped. 16-bit values are scaled by 1/257, 32-bit integer and float
    images min-max per image, to 0–255;
  - a declared ``channels: 1`` converts colour to grey (PIL's ITU-R 601-2 luma), ``channels: 3`` repeats grey;
    undeclared, every image of a dataset must have the same channel count (else an error names two files);
  - images are resized to ``image_size`` × ``image_size`` with PIL's antialiased bicubic filter (the aspect ratio
    is not kept; crop first if that matters), only when their size differs.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from benchmark.core.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "test": "test", "testing": "test"}
DEFAULT_RATIOS = {"train": 0.7, "val": 0.1, "test": 0.2}
GREY_MODES = ("1", "L", "LA", "La", "I", "F", "I;16", "I;16B", "I;16L", "I;16N")


def expand_path(path) -> Path:
    """A configured path with ``$VARS`` and ``~`` expanded (relative paths are relative to the working directory)."""
    return Path(os.path.expandvars(str(path))).expanduser()


def check_inside(path: Path, root: Path, where: str) -> Path:
    """`path` resolved (symlinks followed); a path that leaves the dataset root, and a symlink loop, are refused."""
    try:
        real, real_root = Path(path).resolve(), Path(root).resolve()
    except (RuntimeError, OSError) as exc:  # Python 3.11: RuntimeError("Symlink loop from …")
        raise UserError(f"{where}: {path} cannot be resolved ({exc}): a symbolic link loop. Remove the link or "
                        "point it at a real file.") from None
    if real != real_root and not real.is_relative_to(real_root):
        raise UserError(f"{where}: {path} is outside the dataset root {root} (resolves to {real}). Every file of a "
                        "dataset must lie under its root; copy the file there or fix the path.")
    return real


def natural_channels(mode: str) -> int:
    return 1 if mode in GREY_MODES else 3


def _to_uint8_image(img, path):
    """A PIL image in mode L or RGB (8 bits per channel), converted as the module docstring says."""
    from PIL import Image

    mode = img.mode
    if mode.startswith("I;16"):
        array = np.asarray(img, dtype=np.float64) / 257.0
        return Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8), "L")
    if mode in ("I", "F"):
        array = np.asarray(img, dtype=np.float64)
        finite = array[np.isfinite(array)]
        if finite.size == 0:
            raise UserError(f"Cannot read image {path}: it has no finite pixel values.")
        low, high = float(finite.min()), float(finite.max())
        scaled = (np.nan_to_num(array, nan=low) - low) / (high - low if high > low else 1.0)
        return Image.fromarray(np.clip(np.rint(scaled * 255), 0, 255).astype(np.uint8), "L")
    if mode in ("1", "LA", "La", "L"):
        return img.convert("L")
    return img.convert("RGB")


def read_image(path, image_size: int, channels: int | None = None) -> tuple[np.ndarray, int]:
    """(uint8 (C, image_size, image_size), the file's own channel count) for one image file; an unreadable file is
    a UserError naming it."""
    from PIL import UnidentifiedImageError

    from benchmark.data.validate import opened_image

    try:
        with opened_image(path) as img:  # PIL's decompression-bomb limit is an error naming the file
            img.load()
            own = natural_channels(img.mode)
            img = _to_uint8_image(img, path)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise UserError(f"Cannot read image {path} ({type(exc).__name__}: {exc}). Replace or remove the file.") \
            from None
    return conform_image(img, image_size, channels or own), own


def conform_image(img, image_size: int, channels: int):
    """A PIL L/RGB image → uint8 (channels, image_size, image_size): grey/colour conversion, then resizing."""
    from PIL import Image

    if channels == 1 and img.mode != "L":
        img = img.convert("L")
    elif channels == 3 and img.mode != "RGB":
        img = img.convert("RGB")
    if img.size != (image_size, image_size):
        img = img.resize((image_size, image_size), Image.Resampling.BICUBIC)
    array = np.asarray(img, dtype=np.uint8)
    return np.ascontiguousarray(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))


def conform_array(images: np.ndarray, image_size: int, channels: int) -> np.ndarray:
    """uint8 (N, C, H, W) → (N, channels, image_size, image_size); unchanged (same values) when it already fits."""
    from PIL import Image

    if images.shape[1:] == (channels, image_size, image_size):
        return images
    out = np.empty((len(images), channels, image_size, image_size), dtype=np.uint8)
    for i, image in enumerate(images):
        hwc = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
        if hwc.ndim == 3 and hwc.shape[2] != 3:
            hwc = hwc[..., 0]  # unusual channel counts: the first channel
        out[i] = conform_image(Image.fromarray(np.ascontiguousarray(hwc)), image_size, channels)
    return out


def uint8_array(shape) -> np.ndarray:
    """An uninitialised uint8 array (the default ``allocate`` of the readers)."""
    return np.empty(shape, dtype=np.uint8)


def load_images(paths: list, image_size: int, channels: int | None, root: Path | None = None,
                allocate=None, slots=None) -> np.ndarray:
    """Every image of `paths` as uint8 (N, C, H, W), fully read (in the order of `paths`) and checked before
    anything is returned. Undeclared channels: the first image's count, and a file with another count is an error
    naming both. ``allocate(shape)`` makes the output array (np.empty; the image cache passes a memory map of its
    file); ``slots[i]``: the row of ``paths[i]`` in it (default i)."""
    out, first = None, None
    for i, path in enumerate(paths):
        if root is not None:
            check_inside(path, root, "dataset")
        array, own = read_image(path, image_size, channels)
        if channels is None:
            if first is None:
                first = (path, own)
            elif own != first[1]:
                raise UserError(f"Mixed channel counts: {path} has {own} channel(s) but {first[0]} has {first[1]}. "
                                "Declare 'channels: 1' (grey) or 'channels: 3' (colour) in the dataset's registry "
                                "entry to convert every image.")
        if out is None:
            out = (allocate or uint8_array)((len(paths), array.shape[0], image_size, image_size))
        out[i if slots is None else slots[i]] = array
    if out is None:
        return np.empty((0, channels or 1, image_size, image_size), dtype=np.uint8)
    return out


def check_channels(channels) -> int | None:
    if channels is not None and channels not in (1, 3):
        raise UserError(f"channels must be 1 or 3 (or left out), got {channels!r}.")
    return channels


def parse_ratios(ratios, where: str) -> dict:
    """``split_ratios`` as {train, val, test} fractions summing to 1 (a mapping or a [train, val, test] list)."""
    if ratios is None:
        return dict(DEFAULT_RATIOS)
    if isinstance(ratios, (list, tuple)) and len(ratios) == 3:
        ratios = dict(zip(("train", "val", "test"), ratios))
    if not isinstance(ratios, dict) or set(ratios) != {"train", "val", "test"} or \
            not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in ratios.values()) or \
            abs(sum(ratios.values()) - 1.0) > 1e-6:
        raise UserError(f"{where}: split_ratios must be {{train: a, val: b, test: c}} (or [a, b, c]), each > 0 and "
                        f"summing to 1, got {ratios!r}.")
    return {k: float(v) for k, v in ratios.items()}


def group_ids(names: list, pattern: str | None, where: str) -> list:
    """The group (patient, volume) of each file: the first capture group of `pattern` (or its whole match) searched
    in the file's path relative to the dataset root, or the file itself. Files of one group share a split."""
    if not pattern:
        return [str(p) for p in names]
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise UserError(f"{where}: group_pattern {pattern!r} is not a valid regular expression ({exc}).") from None
    groups = []
    for path in names:
        match = regex.search(str(path))
        if not match:
            raise UserError(f"{where}: group_pattern {pattern!r} does not match {path}; every file needs a group "
                            "(patient/volume id), or remove group_pattern.")
        groups.append(match.group(1) if regex.groups else match.group(0))
    return groups


def stratified_split(labels: np.ndarray, groups: list, ratios: dict, seed: int, label_names: list,
                     where: str) -> np.ndarray:
    """'train'/'val'/'test' per item: within each class its groups are shuffled (seed derived from `seed` and the
    class name) and cut by `ratios`, so a group's items share a split and each split holds every class."""
    from benchmark.core.seeding import derive_seed

    labels = np.asarray(labels)
    by_group: dict = {}
    for i, (label, group) in enumerate(zip(labels, groups)):
        by_group.setdefault(group, []).append(i)
    for group, members in by_group.items():
        classes = {int(labels[i]) for i in members}
        if len(classes) > 1:
            names = ", ".join(label_names[c] for c in sorted(classes))
            raise UserError(f"{where}: group {group!r} has images of several classes ({names}); a group must belong "
                            "to one class. Fix group_pattern.")
    out = np.empty(len(labels), dtype=object)
    for cls, name in enumerate(label_names):
        class_groups = sorted(g for g, m in by_group.items() if labels[m[0]] == cls)
        n = len(class_groups)
        n_test = max(1, int(round(n * ratios["test"]))) if ratios["test"] > 0 else 0
        n_val = max(1, int(round(n * ratios["val"]))) if ratios["val"] > 0 else 0
        if n - n_test - n_val < 1:
            unit = "groups" if len(by_group) < len(labels) else "images"
            needed = 1 + (ratios["test"] > 0) + (ratios["val"] > 0)
            raise UserError(f"{where}: class {name!r} has {n} {unit}; splitting it into "
                            f"{'/'.join(s for s in ('train', 'val', 'test') if s == 'train' or ratios[s] > 0)} "
                            f"needs at least {needed}. Add images, or give explicit train/val/test folders.")
        order = np.random.default_rng(derive_seed("split", seed, name)).permutation(n)
        for rank, g in enumerate(order):
            split = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
            out[by_group[class_groups[g]]] = split
    return out


def scan_class_folders(root: Path, suffixes: tuple, label_names: list | None, exclude: list | None,
                       where: str) -> tuple[list, list]:
    """Files of ``root/<class>/**`` with `suffixes` (or of ``root/<split>/<class>/**``), as
    ([(path, class index, split or None)], label names). Checks: a declared class without images, an undeclared
    class folder, files outside the root, split folders mixed with class folders."""
    import fnmatch

    if not root.is_dir():
        raise UserError(f"{where}: dataset root {root} does not exist or is not a folder.")
    exclude = list(exclude or [])

    def visible_dirs(folder: Path) -> list:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))

    def files_in(folder: Path) -> list:
        from benchmark.data.validate import check_utf8_name

        found = []
        for path in sorted(folder.rglob("*")):
            if path.name.startswith(".") or not path.name.lower().endswith(suffixes):
                continue
            check_utf8_name(path, where)
            if path.is_symlink() and not path.exists():
                raise UserError(f"{where}: {path} is a broken symbolic link or a symlink loop. Remove it or point "
                                "it at a real image file.")
            if not path.is_file():
                continue
            if any(fnmatch.fnmatch(path.name, pattern) for pattern in exclude):
                continue
            check_inside(path, root, where)
            found.append(path)
        return found

    top = visible_dirs(root)
    split_dirs = {SPLIT_NAMES[p.name.lower()]: p for p in top if p.name.lower() in SPLIT_NAMES}
    if split_dirs:
        others = [p.name for p in top if p.name.lower() not in SPLIT_NAMES]
        if others:
            raise UserError(f"{where}: {root} mixes split folders ({', '.join(sorted(split_dirs))}) with other "
                            f"folders ({', '.join(others)}). Use either root/<split>/<class>/ or root/<class>/.")
        if "train" not in split_dirs or "test" not in split_dirs:
            raise UserError(f"{where}: {root} has split folders {sorted(split_dirs)}; a split layout needs at least "
                            "train/ and test/ (val/ is carved out of train/ when absent).")
        layout = {split: {p.name: p for p in visible_dirs(folder)} for split, folder in split_dirs.items()}
    else:
        layout = {None: {p.name: p for p in top}}
    found_classes = sorted({name for classes in layout.values() for name in classes})
    if label_names is None:
        names = found_classes
        if not names:
            raise UserError(f"{where}: {root} has no class folders; expected root/<class>/*.{suffixes[0][1:]} "
                            "(optionally under train/ val/ test/).")
    else:
        names = [str(n) for n in label_names]
        unknown = [c for c in found_classes if c not in names]
        if unknown:
            raise UserError(f"{where}: class folder(s) {', '.join(unknown)} under {root} are not in label_names "
                            f"{names}. Add them to label_names or move them out of the dataset root.")
    items = []
    for split, classes in layout.items():
        for index, name in enumerate(names):
            folder = classes.get(name)
            files = files_in(folder) if folder is not None else []
            shown = folder or (root / (split or "") / name)
            if not files:
                raise UserError(f"{where}: class {name!r} has no images in {shown} (looked for "
                                f"{', '.join('*' + s for s in suffixes)}). Add images or remove the class.")
            items += [(path, index, split) for path in files]
    return items, names
