"""MedMNIST (v2/v3) 2D datasets through medmnist.INFO: URLs, MD5s, split sizes, labels, download with checks."""

from __future__ import annotations

import importlib.util
import shutil
import urllib.error
import urllib.request
from functools import lru_cache
from pathlib import Path

from benchmark.core.errors import UserError
from benchmark.data import data_dir
from benchmark.data.bundle import DataBundle, file_md5, file_sha256, npz_splits, read_npz

SIZES = (28, 64, 128, 224)


@lru_cache(maxsize=1)
def medmnist_info() -> dict:
    """medmnist.INFO without importing the medmnist package (its __init__ imports torch)."""
    spec = importlib.util.find_spec("medmnist")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("The 'medmnist' package is not installed; run `pip install medmnist`.")
    info_path = Path(list(spec.submodule_search_locations)[0]) / "info.py"
    info_spec = importlib.util.spec_from_file_location("_genmed_medmnist_info", info_path)
    module = importlib.util.module_from_spec(info_spec)
    info_spec.loader.exec_module(module)
    return {"version": module.__version__, "INFO": module.INFO}


def task_support(task: str) -> str | None:
    """None when the task trains correctly as single-label classification, else the reason it is refused."""
    if task.startswith("multi-label"):
        return (f"task type {task!r} is refused: a multi-label dataset has no single rare class to subsample, "
                "and training it as multi-class would be wrong")
    return None


class MedMNIST:
    """One 2D MedMNIST dataset (flag) at its available sizes. Binary and multi-class are first-class;
    ordinal regression (RetinaMNIST) trains as multi-class; multi-label (ChestMNIST) is refused."""

    def __init__(self, name: str, flag: str):
        info = medmnist_info()["INFO"]
        if flag not in info:
            raise UserError(f"dataset {name!r}: {flag!r} is not a MedMNIST flag; known: {', '.join(sorted(info))}.")
        self.name = name
        self.flag = flag
        self.info = info[flag]
        self.task = self.info["task"]
        self.label_names = [self.info["label"][str(i)] for i in range(len(self.info["label"]))]
        self.num_classes = len(self.label_names)
        self.sizes = list(SIZES)
        reason = task_support(self.task)
        self.unsupported_reason = f"dataset {name!r}: {reason}." if reason else None

    def _suffix(self, size: int) -> str:
        return "" if size == 28 else f"_{size}"

    def filename(self, size: int) -> str:
        return f"{self.flag}{self._suffix(size)}.npz"

    def path(self, size: int) -> Path:
        return data_dir() / self.filename(size)

    def url(self, size: int) -> str:
        return self.info[f"url{self._suffix(size)}"]

    def md5(self, size: int) -> str:
        return self.info[f"MD5{self._suffix(size)}"]

    def is_present(self, size: int) -> bool:
        return self.path(size).is_file()

    def ensure(self, size: int) -> Path:
        """The file's path, downloading it (with MD5 check) when it is not on disk."""
        path = self.path(size)
        if not path.is_file():
            self.download(size)
        return path

    def download(self, size: int) -> None:
        path, url, md5 = self.path(size), self.url(size), self.md5(size)
        how_to_fix = (f"Download it by hand from {url} (MD5 {md5}) and save it as {path}, "
                      "or point GENMED_DATA_DIR at the folder that holds it.")
        from benchmark.run.run_dir import atomic_path

        with atomic_path(path, suffix=".part") as tmp:  # a failed or wrong download leaves nothing behind
            try:
                with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
                    shutil.copyfileobj(response, out)
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                raise UserError(f"Dataset {self.name!r} ({self.filename(size)}) is not in {path.parent} and the "
                                f"download failed ({exc}). {how_to_fix}") from None
            actual = file_md5(tmp)
            if actual != md5:
                raise UserError(f"Downloaded {url} has MD5 {actual}, expected {md5}; the file was discarded. "
                                f"{how_to_fix}")

    def check_split_sizes(self, counts: dict, path: Path) -> None:
        """The check medmnist applies to a file on disk: split sizes against INFO."""
        expected = self.info["n_samples"]
        wrong = {s: (counts[s], expected[s]) for s in expected if counts.get(s) != expected[s]}
        if wrong:
            detail = ", ".join(f"{s}: {got} (expected {want})" for s, (got, want) in wrong.items())
            raise UserError(f"{path} does not match MedMNIST {self.flag!r} split sizes ({detail}). "
                            f"Replace it with the official file from {self.url(28)}.")

    def content_sha256(self, size: int) -> str:
        """sha256 of the file (cached by path, size and mtime): it enters every job key and record."""
        return file_sha256(self.ensure(size))

    def load_labels(self, size: int) -> dict:
        """Only the label arrays (for rarity checks before any job runs)."""
        from benchmark.data.bundle import flat_labels

        from benchmark.data.validate import check_label_sets

        path = self.ensure(size)
        arrays = read_npz(path, [f"{s}_labels" for s in ("train", "val", "test")])
        labels = {s: flat_labels(arrays[f"{s}_labels"], f"{path} [{s}_labels]") for s in ("train", "val", "test")}
        self.check_split_sizes({s: len(v) for s, v in labels.items()}, path)
        check_label_sets(labels, self.num_classes, str(path))
        return labels

    def image_channels(self, size: int) -> int:
        return int(self.info["n_channels"])

    def memory_mapped(self, size: int) -> bool:
        """Whether ``load`` memory-maps the images (image bytes ≥ $GENMED_MEMMAP_MIN_MB, cache on)."""
        from benchmark.data.arrays import npz_is_mapped

        return self.is_present(size) and npz_is_mapped(self.path(size))

    def load(self, size: int) -> DataBundle:
        path = self.ensure(size)
        splits = npz_splits(path, str(path), self.content_sha256(size))
        self.check_split_sizes({s: len(v) for s, v in splits.items()}, path)
        for split in splits.values():
            if split.images.shape[-1] != size or split.images.shape[-2] != size:
                raise UserError(f"{path}: images are {split.images.shape[-2:]} but size {size} was requested.")
            if len(split.labels) and (split.labels.min() < 0 or split.labels.max() >= self.num_classes):
                raise UserError(f"{path}: labels outside 0..{self.num_classes - 1}.")
        return DataBundle(self.name, size, self.task, self.num_classes, self.label_names, splits,
                          self.content_sha256(size), str(path))
