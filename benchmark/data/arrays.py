"""The memory-mapped image cache: a dataset's decoded uint8 (N, C, H, W) images written once per content, size and
decoding settings as one ``.npy`` file (atomic, named by a hash of all that), then opened memory-mapped, so a
large dataset is never held whole in a process: its splits are slices (views) of the mapping and the kernel's page
cache shares it between every job of a node. Also: how many bytes of an array a process really holds.

Where: ``$GENMED_ARRAY_CACHE_DIR``, else ``arrays/`` beside the hash cache (``$GENMED_CACHE_DIR``, else
``~/.cache/genmed-rare/``); ``GENMED_ARRAY_CACHE_DIR=off`` keeps every dataset in memory (no files). Image folders,
``metadata.csv`` and NIfTI datasets always use it (it also saves decoding every file in every job process);
``.npz`` and MedMNIST files only when their images take at least ``$GENMED_MEMMAP_MIN_MB`` (default 256) MB.
The files hold real patient images: they are created private to you (the results mode, 0600 by default) in a
0700 folder. Nothing deletes them; remove the folder to reclaim the space (it is rebuilt on demand).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import mmap
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from benchmark.core.errors import UserError

ARRAY_CACHE_ENV = "GENMED_ARRAY_CACHE_DIR"
MEMMAP_MIN_ENV = "GENMED_MEMMAP_MIN_MB"
DEFAULT_MEMMAP_MIN_MB = 256
CACHE_VERSION = 1  # bump when decoding changes what a cached file holds


def cache_folder() -> Path | None:
    """The folder of the image cache, or None when ``$GENMED_ARRAY_CACHE_DIR`` is ``off``."""
    from benchmark.data.cache import hash_cache_path

    configured = (os.environ.get(ARRAY_CACHE_ENV) or "").strip()
    if configured.lower() in ("off", "0", "none", "false"):
        return None
    return Path(configured).expanduser() if configured else hash_cache_path().parent / "arrays"


def memmap_min_bytes() -> int:
    """Image bytes from which an ``.npz`` dataset is memory-mapped (``$GENMED_MEMMAP_MIN_MB``, default 256)."""
    text = os.environ.get(MEMMAP_MIN_ENV)
    try:
        value = float(text) if text not in (None, "") else DEFAULT_MEMMAP_MIN_MB
    except ValueError:
        value = -1
    if value < 0:
        raise UserError(f"${MEMMAP_MIN_ENV} is {text!r}; give a number of megabytes ≥ 0 (0 memory-maps every "
                        f".npz dataset; the default is {DEFAULT_MEMMAP_MIN_MB}).")
    return int(value * 2**20)


def npz_image_bytes(path: Path, fix: str = "Delete it and download it again.") -> int:
    """Bytes of the train/val/test images of an .npz, from its array headers (no image data read)."""
    from benchmark.data.validate import npz_headers

    headers = npz_headers(path, fix)
    return sum(int(np.prod(headers[f"{s}_images"][0], dtype=np.int64)) * headers[f"{s}_images"][1].itemsize
               for s in ("train", "val", "test") if f"{s}_images" in headers)


def npz_is_mapped(path: Path, fix: str = "Delete it and download it again.") -> bool:
    """Whether an .npz dataset is memory-mapped: the cache is on and its images take ≥ $GENMED_MEMMAP_MIN_MB."""
    return cache_folder() is not None and npz_image_bytes(path, fix) >= memmap_min_bytes()


def cache_path(key: dict) -> Path | None:
    """The cache file of a dataset version: ``<folder>/<sha256 of key and CACHE_VERSION>.npy``. `key` must hold
    everything the images depend on (content hash, size, channels, decoding settings, split order)."""
    folder = cache_folder()
    if folder is None:
        return None
    text = json.dumps({"cache_version": CACHE_VERSION, **key}, sort_keys=True, default=str)
    return folder / f"{hashlib.sha256(text.encode()).hexdigest()[:32]}.npy"


def open_cached(path: Path, count: int, image_shape: tuple | None = None) -> np.ndarray | None:
    """The cached images at `path` opened memory-mapped copy-on-write (writes stay private to the process, the file
    is never changed), or None when there is no file or it does not hold `count` uint8 images of `image_shape`."""
    try:
        images = np.load(path, mmap_mode="c", allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) != count or \
            (image_shape is not None and tuple(images.shape[1:]) != tuple(image_shape)):
        return None
    return images


@contextmanager
def _build_lock(path: Path):
    """One process builds a cache file at a time (fcntl.flock on ``<name>.lock``); the others wait, then open it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def cached_images(key: dict, count: int, write, image_shape: tuple | None = None) -> np.ndarray:
    """The images of `key`, memory-mapped from the cache; built first when absent: ``write(allocate)`` fills the
    array that ``allocate(shape)`` returns (a writable memory map of a temporary file, renamed into place only
    when `write` returned: readers never see a partial file). Without a cache folder, ``allocate`` is np.empty
    and the images stay in memory. `count`: the number of images expected (a file holding another is rebuilt)."""
    from benchmark.run.run_dir import atomic_path

    path = cache_path(key)
    if path is None:
        return _filled(write, lambda shape: np.empty(shape, dtype=np.uint8))
    images = open_cached(path, count, image_shape)
    if images is not None:
        return images
    with _build_lock(path):
        images = open_cached(path, count, image_shape)  # built by another process while this one waited
        if images is None:
            with atomic_path(path, suffix=".npy") as tmp:
                def allocate(shape):
                    return np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=tuple(shape))

                filled = _filled(write, allocate)
                if isinstance(filled, np.memmap):
                    filled.flush()
                del filled
            images = open_cached(path, count, image_shape)
    if images is None:
        raise UserError(f"The image cache file {path} could not be read back after writing it. Check the free space "
                        f"and permissions of {path.parent}, or set {ARRAY_CACHE_ENV}=off.")
    return images


def _filled(write, allocate) -> np.ndarray:
    holder = []

    def keep(shape):
        holder.append(allocate(shape))
        return holder[-1]

    result = write(keep)
    return result if result is not None else holder[-1]


def is_mapped(array: np.ndarray) -> bool:
    """Whether `array`'s memory is a file mapping (a view of a memmap), not memory the process owns."""
    while array is not None:
        if isinstance(array, (np.memmap, mmap.mmap)):
            return True
        array = getattr(array, "base", None)
    return False


def resident_bytes(*arrays) -> int:
    """Bytes of `arrays` the process holds in its own memory: memory-mapped arrays (page cache, shared and
    reclaimable) count 0."""
    return sum(int(a.nbytes) for a in arrays if a is not None and not is_mapped(a))
