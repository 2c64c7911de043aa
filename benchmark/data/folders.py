"""Image-folder datasets: ``root/<class>/*.png|jpg|jpeg`` (optionally ``root/train|val|test/<class>/…``).

Registry entry (``docs/datasets.md`` has complete examples)::

    target: benchmark.data.folders:FolderDataset
    version: 1
    config:
      root: /data/busi                 # $VARS and ~ expanded; relative paths are relative to the working directory
      image_size: 64                   # every image is resized to 64×64 (PIL bicubic, antialiased)
      channels: 1                      # 1 (grey) or 3 (colour); left out: every image must have the same count
      label_names: [benign, malignant, normal]   # optional: fixes the class order (default: sorted folder names)
      split_ratios: {train: 0.7, val: 0.1, test: 0.2}   # without split folders: a stratified split …
      split_seed: 0                    # … drawn with this seed
      group_pattern: "^[^/]+/(p\\d+)"  # optional: files whose paths share this group stay in one split
      exclude: ["*_mask*"]             # optional: file-name patterns to skip (e.g. segmentation masks)

Without split folders the images are split per class (stratified) by `split_ratios` with `split_seed`; with
``train/`` and ``test/`` but no ``val/``, val is carved out of train the same way (ratio val / (train + val)).
Every image is read and checked before the dataset is returned; problems are UserErrors naming the file. The
decoded images are written once to the memory-mapped image cache (``benchmark.data.arrays``) and the splits are
slices of it, so a large dataset is not held in memory. Planning
(``load_labels``, what ``--dry-run`` reads) already decodes every image once per content (cached): a file that does
not decode, a name that is not valid UTF-8, an image above PIL's decompression-bomb limit, a single class, all stop
the grid before any job (benchmark.data.validate).
The content hash (``dataset_sha256`` of the records) is sha256 over the sorted relative paths and file bytes.
"""

from __future__ import annotations

import hashlib
from functools import cached_property
from pathlib import Path

import numpy as np

from benchmark.core.errors import UserError
from benchmark.data.arrays import cache_folder, cached_images
from benchmark.data.bundle import SPLITS, DataBundle, Split, files_sha256
from benchmark.data.images import (
    IMAGE_SUFFIXES, check_channels, expand_path, group_ids, load_images, parse_ratios, scan_class_folders,
    stratified_split
)


class FileDataset:
    """Common machinery of datasets made of many files: one declared size, an index of (file, class, split) with
    a per-file image count, and loading that reads everything before returning."""

    kind = "dataset"

    def __init__(self, name: str, root, image_size: int, channels: int | None = None, label_names: list | None = None,
                 split_ratios=None, split_seed: int = 0, group_pattern: str | None = None, task: str | None = None,
                 exclude: list | None = None):
        self.name = name
        self.root = expand_path(root)
        self.image_size = int(image_size)
        self.sizes = [self.image_size]
        self.channels = check_channels(channels)
        self.label_names = [str(n) for n in label_names] if label_names else None
        self.num_classes = len(self.label_names) if self.label_names else None
        self._task = task
        self.task = task or (None if self.num_classes is None else self._default_task(self.num_classes))
        self.split_ratios = parse_ratios(split_ratios, f"dataset {name!r}")
        self.split_seed = int(split_seed)
        self.group_pattern = group_pattern
        self.exclude = list(exclude or [])
        self.unsupported_reason = None

    @staticmethod
    def _default_task(num_classes: int) -> str:
        return "binary-class" if num_classes == 2 else "multi-class"

    @property
    def where(self) -> str:
        return f"dataset {self.name!r}"

    # --- the source interface -------------------------------------------------------------------------------
    def path(self, size: int) -> Path:
        return self.root

    def is_present(self, size: int) -> bool:
        return self.root.exists()

    def ensure(self, size: int) -> Path:
        if not self.root.exists():
            raise UserError(f"{self.where}: {self.root} does not exist. Fix the path in its registry entry or put "
                            "the data there.")
        self._check_size(size)
        return self.root

    def _check_size(self, size: int) -> None:
        if int(size) != self.image_size:
            raise UserError(f"{self.where} is declared at image_size {self.image_size}, not {size}.")

    def load_labels(self, size: int) -> dict:
        """Per split, the class of every image; the files are checked first (``_validate_files``)."""
        from benchmark.data.validate import check_label_sets

        self.ensure(size)
        files, _, _, label_names = self.index
        self._validate_files(files)
        labels, splits = self._image_labels()
        by_split = {s: labels[splits == s] for s in SPLITS}
        check_label_sets(by_split, len(label_names), self.where)
        return by_split

    def load(self, size: int) -> DataBundle:
        """The splits as slices of one uint8 array in split order (train, val, test; file order within each):
        memory-mapped from the image cache (benchmark.data.arrays, decoded once per content and settings), or in
        memory when the cache is off. Every image is read and checked before the cache file exists."""
        self.ensure(size)
        files, file_labels, file_splits, label_names = self.index
        rank = {split: i for i, split in enumerate(SPLITS)}
        order = np.argsort([rank[s] for s in file_splits], kind="stable")
        counts = np.array([self._count(f) for f in files], dtype=np.int64)[order]
        labels = np.repeat(file_labels[order], counts)
        bounds = np.cumsum([0] + [int(counts[file_splits[order] == s].sum()) for s in SPLITS])
        slots = np.empty(len(files), dtype=np.int64)  # files are read in listing order into split-ordered rows
        slots[order] = np.cumsum(counts) - counts
        images = cached_images(self.cache_key([files[i] for i in order], counts), len(labels),
                               lambda allocate: self._read(files, allocate, slots),
                               None if self.channels is None else (self.channels, self.image_size, self.image_size))
        if len(images) != len(labels):
            raise UserError(f"{self.where}: read {len(images)} images but the index expects {len(labels)}; the "
                            "files changed while loading. Run again.")
        bundle_splits = {s: Split(images[bounds[i]:bounds[i + 1]], labels[bounds[i]:bounds[i + 1]])
                         for i, s in enumerate(SPLITS)}
        task = self._task or self._default_task(len(label_names))
        return DataBundle(self.name, self.image_size, task, len(label_names), list(label_names), bundle_splits,
                          self.content_sha256(), str(self.root))

    def cache_key(self, ordered: list, counts: np.ndarray) -> dict:
        """What the decoded images depend on (the image cache's file name): content, size, channels, decoding
        settings (``decode_settings``), Pillow's version and the files in split order with their image counts."""
        import PIL

        root = (self.root if self.root.is_dir() else self.root.parent).resolve()
        listing = hashlib.sha256("\n".join(f"{Path(f).resolve().relative_to(root).as_posix()}|{n}"
                                           for f, n in zip(ordered, counts)).encode()).hexdigest()
        return {"form": f"{type(self).__module__}.{type(self).__name__}", "content": self.content_sha256(),
                "image_size": self.image_size, "channels": self.channels, "decode": self.decode_settings(),
                "pillow": PIL.__version__, "order": listing}

    def decode_settings(self) -> dict:
        """Settings besides size and channels that change the decoded images (a hook: NIfTI slicing)."""
        return {}

    def image_channels(self, size: int) -> int | None:
        """Channels per image: declared, else from the cache when built, else None (unknown before decoding)."""
        return self.channels

    def memory_mapped(self, size: int) -> bool:
        """Whether ``load`` memory-maps the images (always, unless the image cache is off)."""
        return cache_folder() is not None

    # --- hooks ---------------------------------------------------------------------------------------------
    def _scan(self) -> tuple[list, list]:
        """([(file, class index, split or None)], label names)."""
        raise NotImplementedError

    def _count(self, path: Path) -> int:
        """Images a file contributes (1 for an image file, the chosen slices of a volume)."""
        return 1

    def _read(self, files: list, allocate=None, slots=None) -> np.ndarray:
        """The images of `files` (read in that order) into ``allocate``'s array, file i from row ``slots[i]``."""
        return load_images(files, self.image_size, self.channels, self.root, allocate, slots)

    def _validate_files(self, files: list) -> None:
        """Checks of the files before any job (a hook: image datasets decode every file once per content)."""

    def hashed_files(self) -> list:
        return list(self.index[0])

    # --- shared ---------------------------------------------------------------------------------------------
    @cached_property
    def index(self) -> tuple[list, np.ndarray, np.ndarray, list]:
        """(files, class index per file, split per file, label names) with every file assigned to one split."""
        items, label_names = self._scan()
        files = [path for path, _, _ in items]
        labels = np.array([label for _, label, _ in items], dtype=np.int64)
        given = [split for _, _, split in items]
        root = self.root if self.root.is_dir() else self.root.parent
        groups = group_ids([Path(f).resolve().relative_to(root.resolve()).as_posix() for f in files],
                           self.group_pattern, self.where)
        splits = np.array(given, dtype=object)
        if all(s is None for s in given):
            splits = stratified_split(labels, groups, self.split_ratios, self.split_seed, label_names, self.where)
        elif "val" not in given:
            train = np.flatnonzero(splits == "train")
            fraction = self.split_ratios["val"] / (self.split_ratios["val"] + self.split_ratios["train"])
            carved = stratified_split(labels[train], [groups[i] for i in train],
                                      {"train": 1.0 - fraction, "val": fraction, "test": 0.0}, self.split_seed,
                                      label_names, self.where)
            splits[train] = carved
        self._check_groups(groups, splits)
        return files, labels, splits, label_names

    def _check_groups(self, groups: list, splits: np.ndarray) -> None:
        seen: dict = {}
        for group, split in zip(groups, splits):
            if seen.setdefault(group, split) != split:
                raise UserError(f"{self.where}: group {group!r} has files in both {seen[group]} and {split}; with "
                                "group_pattern every group must lie in one split folder.")

    def _image_labels(self) -> tuple[np.ndarray, np.ndarray]:
        """Per image (after expanding files into their images): class and split."""
        files, labels, splits, _ = self.index
        counts = np.array([self._count(f) for f in files], dtype=np.int64)
        return np.repeat(labels, counts), np.repeat(splits, counts).astype(str)

    def content_sha256(self, size: int | None = None) -> str:
        """sha256 over the sorted relative paths and bytes of the dataset's files (cached by their sizes and
        mtimes): it enters every job key and record."""
        root = self.root if self.root.is_dir() else self.root.parent
        return files_sha256(root, self.hashed_files())


class FolderDataset(FileDataset):
    """Class folders of PNG/JPEG images (see the module docstring)."""

    kind = "image folder"

    def _scan(self) -> tuple[list, list]:
        return scan_class_folders(self.root, IMAGE_SUFFIXES, self.label_names, self.exclude, self.where)

    def _validate_files(self, files: list) -> None:
        from benchmark.data.validate import check_image_files

        check_image_files(self.root, files)
