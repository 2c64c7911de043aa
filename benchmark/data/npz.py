"""A user's own dataset in MedMNIST .npz format (train/val/test images and labels) at a path."""

from __future__ import annotations

from pathlib import Path

from benchmark.core.errors import UserError
from benchmark.data.bundle import DataBundle, file_sha256, flat_labels, read_npz, splits_from_arrays


class NpzDataset:
    """Registry entry config: ``path`` (absolute, or relative to the working directory), ``image_size``,
    optional ``label_names`` and ``task`` (default: binary-class for 2 classes, else multi-class)."""

    def __init__(self, name: str, path: str, image_size: int, label_names: list | None = None,
                 task: str | None = None):
        self.name = name
        self.file = Path(path).expanduser()
        self.sizes = [int(image_size)]
        self.label_names = list(label_names) if label_names else None
        self.num_classes = len(self.label_names) if self.label_names else None
        self.task = task or ("binary-class" if self.num_classes == 2 else "multi-class")
        self.unsupported_reason = None

    def path(self, size: int) -> Path:
        return self.file

    def is_present(self, size: int) -> bool:
        return self.file.is_file()

    def ensure(self, size: int) -> Path:
        if not self.file.is_file():
            raise UserError(f"Dataset {self.name!r}: file {self.file} does not exist. Fix 'path' in its registry "
                            "entry or create the file (MedMNIST .npz format).")
        return self.file

    def content_sha256(self, size: int) -> str:
        """sha256 of the file (cached by path, size and mtime): it enters every job key and record."""
        return file_sha256(self.ensure(size))

    def load_labels(self, size: int) -> dict:
        arrays = read_npz(self.ensure(size), [f"{s}_labels" for s in ("train", "val", "test")])
        return {s: flat_labels(arrays[f"{s}_labels"], f"{self.file} [{s}_labels]") for s in ("train", "val", "test")}

    def load(self, size: int) -> DataBundle:
        splits = splits_from_arrays(read_npz(self.ensure(size)), str(self.file))
        num_classes = self.num_classes or int(max(int(s.labels.max()) for s in splits.values()) + 1)
        label_names = self.label_names or [str(i) for i in range(num_classes)]
        for split in splits.values():
            if split.images.shape[-1] != size:
                raise UserError(f"{self.file}: images are {split.images.shape[-2:]}, entry says image_size {size}.")
            if split.labels.min() < 0 or split.labels.max() >= num_classes:
                raise UserError(f"{self.file}: labels outside 0..{num_classes - 1}.")
        return DataBundle(self.name, size, self.task, num_classes, label_names, splits,
                          self.content_sha256(size), str(self.file))
