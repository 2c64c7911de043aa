"""In-memory dataset splits (uint8 NCHW images, int64 labels), the checks every source applies, and file hashing."""

from __future__ import annotations

import hashlib
import json
import os
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmark.core.errors import UserError

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


def to_nchw(images: np.ndarray, where: str) -> np.ndarray:
    """(N,H,W) or (N,H,W,C) uint8 → contiguous (N,C,H,W)."""
    if images.dtype != np.uint8:
        raise UserError(f"{where}: images must be uint8, got {images.dtype}. Convert to 0-255 uint8 first.")
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4:
        images = images.transpose(0, 3, 1, 2)
    else:
        raise UserError(f"{where}: images must have shape (N,H,W) or (N,H,W,C), got {images.shape}.")
    return np.ascontiguousarray(images)


def flat_labels(labels: np.ndarray, where: str) -> np.ndarray:
    """Labels shaped (N,) or (N,1) (the official MedMNIST files use (N,1)) → int64 (N,)."""
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise UserError(f"{where}: labels must have shape (N,) or (N,1), got {labels.shape} "
                        "(multi-label tasks are not supported).")
    return labels.astype(np.int64)


def read_npz(path: Path, keys=None) -> dict:
    """Arrays of an .npz file; a truncated or corrupt file raises a UserError naming it."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in (keys or npz.files)}
    except FileNotFoundError:
        raise UserError(f"Dataset file {path} does not exist.") from None
    except KeyError as exc:
        raise UserError(f"Dataset file {path} has no array {exc}; a MedMNIST-format file has "
                        "train_images, train_labels, val_images, val_labels, test_images, test_labels.") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise UserError(f"Dataset file {path} is truncated or corrupt ({type(exc).__name__}: {exc}). "
                        "Delete it and download it again.") from None


def splits_from_arrays(arrays: dict, where: str) -> dict:
    splits = {}
    for split in SPLITS:
        images = to_nchw(arrays[f"{split}_images"], f"{where} [{split}_images]")
        labels = flat_labels(arrays[f"{split}_labels"], f"{where} [{split}_labels]")
        if len(images) != len(labels):
            raise UserError(f"{where}: {split} has {len(images)} images but {len(labels)} labels.")
        splits[split] = Split(images, labels)
    return splits


def hash_cache_path() -> Path:
    """Where content hashes are cached: $GENMED_CACHE_DIR/sha256.json, else ~/.cache/genmed-rare/sha256.json
    ($XDG_CACHE_HOME honoured) — per user, outside the repository, shared by a cluster's nodes when home is."""
    configured = os.environ.get("GENMED_CACHE_DIR")
    folder = Path(configured).expanduser() if configured else \
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "genmed-rare"
    return folder / "sha256.json"


# A file modified less than this long ago may be modified again within the same mtime tick (the "racy git"
# problem), so its hash is computed but not cached: a cached hash always describes settled content.
SETTLED_NS = 2_000_000_000


def is_settled(mtime_ns: int) -> bool:
    return time.time_ns() - mtime_ns > SETTLED_NS


def _cached_digest(cache_key: str, compute, cacheable: bool = True) -> str:
    """`compute()` once per cache key; the cache is a small JSON file shared by every process of the machine."""
    if not cacheable:
        return compute()
    cache_file = hash_cache_path()
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if cache_key in cache:
        return cache[cache_key]
    cache[cache_key] = compute()
    try:
        from benchmark.run.run_dir import write_bytes_atomic

        write_bytes_atomic(cache_file, json.dumps(cache).encode())
    except OSError:
        pass
    return cache[cache_key]


def file_sha256(path: Path) -> str:
    """sha256 of a file, cached by (real path, size, mtime, inode) so big dataset files are hashed once per
    machine (and per cache folder); a replaced or rewritten file is hashed again."""
    path = Path(path).resolve()
    stat = path.stat()

    def compute() -> str:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    return _cached_digest(f"{path}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ino}", compute,
                          is_settled(stat.st_mtime_ns))


def files_sha256(root: Path, files) -> str:
    """Content hash of a dataset made of many files: sha256 over the sorted relative paths (POSIX) and each
    file's bytes (length-prefixed). Cached like `file_sha256`, by the listing's paths, sizes and mtimes."""
    root = Path(root).resolve()
    entries = sorted((Path(f).resolve().relative_to(root).as_posix(), Path(f).resolve()) for f in files)
    listing = hashlib.sha256()
    settled = True
    for rel, path in entries:
        stat = path.stat()
        settled = settled and is_settled(stat.st_mtime_ns)
        listing.update(f"{rel}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ino}\n".encode())

    def compute() -> str:
        digest = hashlib.sha256()
        for rel, path in entries:
            data = path.read_bytes()
            digest.update(rel.encode() + b"\0" + str(len(data)).encode() + b"\0")
            digest.update(data)
        return digest.hexdigest()

    return _cached_digest(f"tree:{root}|{len(entries)}|{listing.hexdigest()}", compute, settled)


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
