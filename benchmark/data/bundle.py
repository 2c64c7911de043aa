"""Dataset splits (uint8 NCHW images, int64 labels; in memory, or views of the memory-mapped image cache of
benchmark.data.arrays), the checks every source applies, and file hashing."""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmark.core.errors import UserError
from benchmark.data.cache import SETTLED_NS, _cached_digest, hash_cache_path, is_settled, tree_signature  # noqa: F401

SPLITS = ("train", "val", "test")


@dataclass
class Split:
    images: np.ndarray  # uint8 (N, C, H, W)
    labels: np.ndarray  # int64 (N,)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class DataBundle:
    name: str
    image_size: int
    task: str
    num_classes: int
    label_names: list
    splits: dict = field(repr=False)
    sha256: str = ""
    path: str = ""

    @property
    def n_channels(self) -> int:
        return int(self.splits["train"].images.shape[1])

    def class_counts(self, split: str = "train") -> np.ndarray:
        return np.bincount(self.splits[split].labels, minlength=self.num_classes)

    def resident_bytes(self) -> int:
        """Bytes of the splits this process holds itself (memory-mapped images count 0: see arrays.resident_bytes)."""
        from benchmark.data.arrays import resident_bytes

        return resident_bytes(*(a for s in self.splits.values() for a in (s.images, s.labels)))


LAYOUTS = ("nhwc", "nchw")  # how an .npz stores colour images: (N, H, W, C), the MedMNIST default, or (N, C, H, W)


def to_nchw(images: np.ndarray, where: str, layout: str | None = None) -> np.ndarray:
    """(N,H,W), or (N,H,W,C) (``layout`` nhwc, the default) or (N,C,H,W) (``layout: nchw``), uint8 → contiguous
    (N,C,H,W) with C 1 or 3. An array that looks channels-first without ``layout: nchw`` is refused, never read as
    H-channel garbage."""
    from benchmark.data.validate import image_array_problem

    problem = image_array_problem(images.shape, images.dtype, layout)
    if problem:
        raise UserError(f"{where}: {problem}")
    if images.ndim == 3:
        images = images[:, None]
    elif layout != "nchw":
        images = images.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(images)


def flat_labels(labels: np.ndarray, where: str) -> np.ndarray:
    """Labels shaped (N,) or (N,1) (the official MedMNIST files use (N,1)) → int64 (N,). Integer, boolean and
    integer-valued float labels (0.0, 1.0) are accepted; NaN, infinite, fractional, negative and text labels are
    refused (benchmark.data.validate.int_labels)."""
    from benchmark.data.validate import int_labels

    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise UserError(f"{where}: labels must have shape (N,) or (N,1), got {labels.shape} "
                        "(multi-label tasks are not supported).")
    return int_labels(labels, where)


REDOWNLOAD = "Delete it and download it again."


def read_npz(path: Path, keys=None, fix: str = REDOWNLOAD) -> dict:
    """Arrays of an .npz file (never unpickled: allow_pickle stays False); a truncated or corrupt file, or one
    holding object arrays, raises a UserError naming it and ending with `fix`."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in (keys or npz.files)}
    except FileNotFoundError:
        raise UserError(f"Dataset file {path} does not exist.") from None
    except KeyError as exc:
        raise UserError(f"Dataset file {path} has no array {exc}; a MedMNIST-format file has "
                        "train_images, train_labels, val_images, val_labels, test_images, test_labels.") from None
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise UserError(f"Dataset file {path} holds object (pickled) arrays, which the harness never loads: "
                            "store plain numeric arrays (uint8 images, integer labels) with numpy.savez.") from None
        raise UserError(f"Dataset file {path} is truncated or corrupt (ValueError: {exc}). {fix}") from None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise UserError(f"Dataset file {path} is truncated or corrupt ({type(exc).__name__}: {exc}). {fix}") \
            from None


def splits_from_arrays(arrays: dict, where: str, layout: str | None = None) -> dict:
    splits = {}
    for split in SPLITS:
        images = to_nchw(arrays[f"{split}_images"], f"{where} [{split}_images]", layout)
        labels = flat_labels(arrays[f"{split}_labels"], f"{where} [{split}_labels]")
        if len(images) != len(labels):
            raise UserError(f"{where}: {split} has {len(images)} images but {len(labels)} labels.")
        splits[split] = Split(images, labels)
    return splits


def npz_splits(path: Path, where: str, content_sha256: str, layout: str | None = None, fix: str = REDOWNLOAD) -> dict:
    """The splits of a MedMNIST-format .npz: in memory (``splits_from_arrays``) when its images are small, else
    slices of one memory-mapped array in split order from the image cache (benchmark.data.arrays), written once
    per file content and layout by reading one split at a time."""
    from benchmark.data.arrays import cached_images, npz_is_mapped
    from benchmark.data.validate import npz_headers

    try:
        mapped = npz_is_mapped(path, fix)
    except UserError:  # a damaged file: read_npz names the problem as it always has
        mapped = False
    if not mapped:
        return splits_from_arrays(read_npz(path, fix=fix), where, layout)
    headers = npz_headers(path, fix)
    shapes = {s: headers.get(f"{s}_images", ((0,), None))[0] for s in SPLITS}
    arrays = read_npz(path, [f"{s}_labels" for s in SPLITS], fix)
    labels = {s: flat_labels(arrays[f"{s}_labels"], f"{where} [{s}_labels]") for s in SPLITS}
    for s in SPLITS:
        if shapes[s][0] != len(labels[s]):
            raise UserError(f"{where}: {s} has {shapes[s][0]} images but {len(labels[s])} labels.")
    bounds = np.cumsum([0] + [len(labels[s]) for s in SPLITS])
    images = cached_images({"form": "npz", "content": content_sha256, "layout": layout}, int(bounds[-1]),
                           lambda allocate: _write_npz_images(path, where, layout, fix, bounds, allocate))
    return {s: Split(images[bounds[i]:bounds[i + 1]], labels[s]) for i, s in enumerate(SPLITS)}


def _write_npz_images(path: Path, where: str, layout, fix: str, bounds, allocate) -> np.ndarray:
    """Each split's images, read alone, checked and written (as NCHW) into their slice of ``allocate``'s array."""
    from benchmark.data.validate import image_array_problem

    out = None
    for i, split in enumerate(SPLITS):
        raw = read_npz(path, [f"{split}_images"], fix)[f"{split}_images"]
        problem = image_array_problem(raw.shape, raw.dtype, layout)
        if problem:
            raise UserError(f"{where} [{split}_images]: {problem}")
        nchw = raw[:, None] if raw.ndim == 3 else raw if layout == "nchw" else raw.transpose(0, 3, 1, 2)
        if out is None:
            out = allocate((int(bounds[-1]), *nchw.shape[1:]))
        if nchw.shape[1:] != out.shape[1:]:
            raise UserError(f"{where}: {split}_images are {nchw.shape[1:]} (C, H, W) but {SPLITS[0]}_images are "
                            f"{out.shape[1:]}; every split must have one image shape.")
        out[bounds[i]:bounds[i + 1]] = nchw
    return out


def file_sha256(path: Path) -> str:
    """sha256 of a file, cached by (real path, size, mtime, inode) so big dataset files are hashed once per
    machine (and per cache folder); a replaced or rewritten file is hashed again."""
    path = Path(path).resolve()
    stat = path.stat()

    def compute() -> str:
        from benchmark.run.run_dir import sha256_file

        return sha256_file(path)

    return _cached_digest(f"{path}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ino}", compute,
                          is_settled(stat.st_mtime_ns))


def files_sha256(root: Path, files) -> str:
    """Content hash of a dataset made of many files: sha256 over the sorted relative paths (POSIX) and each
    file's bytes (length-prefixed). Cached like `file_sha256`, by the listing's paths, sizes and mtimes."""
    signature, entries, settled = tree_signature(root, files)

    def compute() -> str:
        digest = hashlib.sha256()
        for rel, path in entries:
            data = path.read_bytes()
            digest.update(rel.encode() + b"\0" + str(len(data)).encode() + b"\0")
            digest.update(data)
        return digest.hexdigest()

    return _cached_digest(f"tree:{signature}", compute, settled)


def file_md5(path: Path) -> str:
    from benchmark.run.run_dir import sha256_file

    return sha256_file(path, "md5")
