"""Dataset validation before anything starts: .npz structure from the array headers (dtype, layout, sizes, object
arrays, truncation), label values (NaN, fractional, negative, out of range, empty splits, one class, classes
without training images) and image files (name encoding, decoding, PIL's decompression-bomb limit).

Every check raises a UserError naming the file and the fix. The sources call these from ``load_labels`` — what
``launch/grid.py --dry-run`` (and every consumer of a grid) reads — so bad data stops the grid before any job.
The expensive checks (every .npz member's CRC, every image decoded) run once per file content: their success is
cached with the content hashes (``benchmark.data.bundle.hash_cache_path``).
"""

from __future__ import annotations

import os
import warnings
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from benchmark.core.errors import UserError

MAX_PIXELS_ENV = "GENMED_MAX_IMAGE_PIXELS"  # raises PIL's decompression-bomb limit (default 89,478,485 pixels)
CHECK_VERSION = 1  # bump when a cached "valid" verdict would change
NPZ_SPLIT_KEYS = [f"{s}_{kind}" for s in ("train", "val", "test") for kind in ("images", "labels")]


# ------------------------------------------------------------------------------------------------ labels
def int_labels(labels: np.ndarray, where: str) -> np.ndarray:
    """1-D labels → int64: integer and boolean labels as they are, integer-valued floats (0.0, 1.0) converted;
    NaN, infinite, fractional, negative and text labels are refused with the first offending index."""
    kind = labels.dtype.kind
    if kind in "US":
        raise UserError(f"{where}: labels are text ({labels.dtype}); store class indices 0..K-1 and put the class "
                        "names in the registry entry's label_names.")
    if kind not in "biuf":
        raise UserError(f"{where}: labels have dtype {labels.dtype}; store integer class indices 0..K-1.")
    if kind == "f":
        bad = np.flatnonzero(~np.isfinite(labels))
        if len(bad):
            raise UserError(f"{where}: {len(bad)} label(s) are NaN or infinite (first at index {bad[0]}: "
                            f"{labels[bad[0]]}). Give every image a class index 0..K-1 or remove the image.")
        bad = np.flatnonzero(labels != np.round(labels))
        if len(bad):
            raise UserError(f"{where}: {len(bad)} label(s) are not whole numbers (first at index {bad[0]}: "
                            f"{labels[bad[0]]}); labels are class indices 0..K-1, not probabilities or scores.")
    bad = np.flatnonzero(labels < 0)
    if len(bad):
        raise UserError(f"{where}: {len(bad)} negative label(s) (first at index {bad[0]}: {labels[bad[0]]}); "
                        "labels are class indices 0..K-1 (no -1 for 'unknown': remove those images).")
    return labels.astype(np.int64)


def check_label_sets(labels: dict, num_classes: int | None, where: str) -> int:
    """Labels of every split (int64, already through `int_labels`): no empty split, none outside
    0..num_classes-1 (when declared), at least two classes, every class in every split. Returns the class count."""
    for split, values in labels.items():
        if len(values) == 0:
            raise UserError(f"{where}: split {split!r} has no images. Every split (train, val, test) needs images "
                            "of every class.")
    highest = max(int(v.max()) for v in labels.values())
    if num_classes is not None and highest >= num_classes:
        split = next(s for s, v in labels.items() if int(v.max()) == highest)
        index = int(np.argmax(labels[split]))
        raise UserError(f"{where}: label {highest} ({split} index {index}) is outside 0..{num_classes - 1} (the "
                        f"{num_classes} label_names). Fix the label, or add its class to label_names.")
    k = num_classes or highest + 1
    if k < 2:
        raise UserError(f"{where}: every image has label 0: a classifier needs at least two classes.")
    for split, values in labels.items():
        missing = np.flatnonzero(np.bincount(values, minlength=k) == 0)
        if len(missing):
            classes = ", ".join(map(str, missing.tolist()))
            raise UserError(f"{where}: class(es) {classes} of 0..{k - 1} have no {split} images. Labels must be "
                            "consecutive class indices, each class present in train, val and test: renumber them, "
                            "or move images of the class into that split.")
    return k


# ------------------------------------------------------------------------------------------------ .npz files
def image_array_problem(shape: tuple, dtype: np.dtype, layout: str | None) -> str | None:
    """Why an image array of `shape` and `dtype` cannot be read as uint8 images (None when it can)."""
    if dtype != np.uint8:
        return (f"images must be uint8 (0-255), got {dtype}. Convert them first, e.g. "
                "np.clip(np.rint(x * 255), 0, 255).astype(np.uint8) for floats in 0-1.")
    if layout not in (None, "nhwc", "nchw"):
        return f"layout must be nhwc or nchw, got {layout!r}."
    if len(shape) == 3:
        return None
    if len(shape) != 4:
        return f"images must have shape (N,H,W), (N,H,W,C) or, with layout: nchw, (N,C,H,W); got {tuple(shape)}."
    channels = shape[1] if layout == "nchw" else shape[3]
    if channels in (1, 3):
        return None
    if layout != "nchw" and shape[1] in (1, 3):
        return (f"shape {tuple(shape)} looks channels-first (N, C, H, W) with C={shape[1]}. Store (N, H, W, C) "
                "(np.transpose(images, (0, 2, 3, 1))) or add 'layout: nchw' to the dataset's registry config.")
    return f"images have {channels} channels (shape {tuple(shape)}); use 1 (grey) or 3 (RGB), e.g. drop alpha."


def npz_headers(path: Path, fix: str) -> dict:
    """{array name: (shape, dtype)} read from the .npy headers inside an .npz, without reading the data; a file
    that is empty, not a zip, cut short, or holds object arrays or more data than it stores is a UserError."""
    where = f"Dataset file {path}"
    out = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                        np.lib.format.read_array_header_2_0
                    shape, _, dtype = reader(member)
                    header_end = member.tell()
                name = info.filename[:-4]
                if dtype.hasobject:
                    raise UserError(f"{where} holds an object (pickled) array {name!r}, which the harness never "
                                    "loads (allow_pickle stays False): store plain numeric arrays with numpy.savez.")
                needed = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
                if needed > info.file_size - header_end:
                    raise UserError(f"{where}: array {name!r} declares shape {shape} ({needed} bytes) but stores "
                                    f"{info.file_size - header_end} bytes: the file is corrupt. {fix}")
                out[name] = (tuple(shape), dtype)
    except FileNotFoundError:
        raise UserError(f"{where} does not exist.") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, zlib.error) as exc:
        raise UserError(f"{where} is empty, truncated or not an .npz ({type(exc).__name__}: {exc}). {fix}") from None
    return out


def check_npz_integrity(path: Path, fix: str) -> None:
    """Every member of the .npz reads back with its CRC (zipfile.testzip), once per file content (cached)."""
    from benchmark.data.cache import _cached_digest, is_settled

    path = Path(path).resolve()
    stat = path.stat()

    def test() -> str:
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
            bad = f"({type(exc).__name__}: {exc})"
        if bad:
            raise UserError(f"Dataset file {path} is truncated or corrupt: {bad} does not read back intact. {fix}")
        return "ok"

    _cached_digest(f"npz-ok:{CHECK_VERSION}|{path}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ino}", test,
                   is_settled(stat.st_mtime_ns))


def check_npz_images(headers: dict, path: Path, image_size: int, layout: str | None) -> None:
    """The six MedMNIST arrays present; images uint8 of the declared size and a readable layout, one label each."""
    missing = [k for k in NPZ_SPLIT_KEYS if k not in headers]
    if missing:
        raise UserError(f"Dataset file {path} lacks {', '.join(missing)} (has {', '.join(sorted(headers)) or 'none'}"
                        "); a MedMNIST-format file has train_images, train_labels, val_images, val_labels, "
                        "test_images, test_labels.")
    for split in ("train", "val", "test"):
        where = f"{path} [{split}_images]"
        shape, dtype = headers[f"{split}_images"]
        problem = image_array_problem(shape, dtype, layout)
        if problem:
            raise UserError(f"{where}: {problem}")
        height, width = (shape[2], shape[3]) if len(shape) == 4 and layout == "nchw" else (shape[1], shape[2])
        if (height, width) != (image_size, image_size):
            raise UserError(f"{where}: images are {height}×{width}, the registry entry says image_size "
                            f"{image_size}. Fix image_size (images must be square) or resize the images.")
        n_labels = headers[f"{split}_labels"][0][:1]
        if n_labels != shape[:1]:
            raise UserError(f"{path}: {split} has {shape[0]} images but {n_labels[0] if n_labels else 0} labels; "
                            "every image needs one label.")


# ------------------------------------------------------------------------------------------------ image files
def shown(path) -> str:
    """A path for a message: as it is, or escaped (ascii) when its name is not valid UTF-8."""
    text = str(path)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return ascii(text)


def check_utf8_name(path: Path, where: str) -> None:
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        raise UserError(f"{where}: the file name {shown(path)} is not valid UTF-8 (its bytes are in another "
                        "encoding). Rename it, e.g. `convmv -f latin1 -t utf8 --notest <folder>`.") from None


def pixel_limit() -> int:
    from PIL import Image

    configured = os.environ.get(MAX_PIXELS_ENV)
    if not configured:
        return int(Image.MAX_IMAGE_PIXELS or 89_478_485)
    try:
        return int(configured)
    except ValueError:
        raise UserError(f"${MAX_PIXELS_ENV} must be a whole number of pixels, got {configured!r}.") from None


@contextmanager
def opened_image(path):
    """``PIL.Image.open(path)`` with the decompression-bomb limit enforced as an error (PIL only warns between
    the limit and twice it): an image above it is a UserError naming the file, its size and the fix."""
    from PIL import Image

    limit = pixel_limit()
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = limit
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                with Image.open(path) as img:
                    yield img
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                raise UserError(f"Image {shown(path)} is too large to decode safely ({exc}). Downscale it, or if "
                                f"it is genuine raise ${MAX_PIXELS_ENV} (now {limit} pixels).") from None
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def check_image_file(path: Path) -> None:
    """`path` decodes completely (truncated data, a file that is not an image and a decompression bomb are
    UserErrors naming it)."""
    import struct

    from PIL import UnidentifiedImageError

    try:
        with opened_image(path) as img:
            img.load()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error) as exc:
        raise UserError(f"Cannot read image {shown(path)} ({type(exc).__name__}: {exc}). Replace or remove the "
                        "file.") from None


def check_image_files(root: Path, files: list) -> None:
    """Every image file of a dataset decodes (once per content: the verdict is cached by the listing's names,
    sizes and modification times)."""
    from benchmark.data.cache import _cached_digest, tree_signature

    for path in files:
        check_utf8_name(path, f"dataset {shown(root)}")
    signature, entries, settled = tree_signature(root, files)

    def check() -> str:
        for _, path in entries:
            check_image_file(path)
        return "ok"

    _cached_digest(f"images-ok:{CHECK_VERSION}|{signature}", check, settled)
