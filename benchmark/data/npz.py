"""A user's own dataset in MedMNIST .npz format (train/val/test images and labels) at a path, validated from its
array headers and labels before any job (benchmark.data.validate)."""

from __future__ import annotations

from pathlib import Path

from benchmark.core.errors import UserError
from benchmark.data import validate
from benchmark.data.bundle import DataBundle, file_sha256, flat_labels, npz_splits, read_npz

REWRITE = ("Write it again with numpy.savez(path, train_images=…, train_labels=…, val_images=…, val_labels=…, "
           "test_images=…, test_labels=…).")


class NpzDataset:
    """Registry entry config: ``path`` (absolute, or relative to the working directory), ``image_size``,
    optional ``label_names``, ``task`` (default: binary-class for 2 classes, else multi-class) and ``layout``
    (``nhwc``, the default: colour images stored (N, H, W, C) as MedMNIST does; ``nchw``: (N, C, H, W))."""

    def __init__(self, name: str, path: str, image_size: int, label_names: list | None = None,
                 task: str | None = None, layout: str | None = None):
        if layout not in (None, "nhwc", "nchw"):
            raise UserError(f"dataset {name!r}: layout must be nhwc ((N, H, W, C), the default) or nchw "
                            f"((N, C, H, W)), got {layout!r}.")
        self.layout = layout
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
        """The label arrays, after checking the whole file without reading its images: the array headers (dtype,
        layout, size, a label per image), every member's CRC (once per file content) and the label values."""
        path = self.ensure(size)
        validate.check_npz_images(validate.npz_headers(path, REWRITE), path, size, self.layout)
        validate.check_npz_integrity(path, REWRITE)
        arrays = read_npz(path, [f"{s}_labels" for s in ("train", "val", "test")], REWRITE)
        labels = {s: flat_labels(arrays[f"{s}_labels"], f"{path} [{s}_labels]") for s in ("train", "val", "test")}
        validate.check_label_sets(labels, self.num_classes, str(path))
        return labels

    def image_channels(self, size: int) -> int | None:
        """Channels per image, from the array header (no image data read)."""
        shape = validate.npz_headers(self.ensure(size), REWRITE).get("train_images", ((),))[0]
        return 1 if len(shape) == 3 else int(shape[1] if self.layout == "nchw" else shape[3]) if len(shape) == 4 \
            else None

    def memory_mapped(self, size: int) -> bool:
        """Whether ``load`` memory-maps the images (image bytes ≥ $GENMED_MEMMAP_MIN_MB, cache on)."""
        from benchmark.data.arrays import npz_is_mapped

        return npz_is_mapped(self.ensure(size), REWRITE)

    def load(self, size: int) -> DataBundle:
        self.load_labels(size)  # the same checks as planning (a file replaced since then is caught here)
        splits = npz_splits(self.ensure(size), str(self.file), self.content_sha256(size), self.layout, REWRITE)
        num_classes = self.num_classes or int(max(int(s.labels.max()) for s in splits.values()) + 1)
        label_names = self.label_names or [str(i) for i in range(num_classes)]
        return DataBundle(self.name, size, self.task, num_classes, label_names, splits,
                          self.content_sha256(size), str(self.file))
