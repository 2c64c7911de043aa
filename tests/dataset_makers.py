"""Small datasets built on the fly for tests (no committed data): PNG class folders, metadata.csv, NIfTI, .npz,
and a registry folder holding entries for them."""

from pathlib import Path

import numpy as np
import yaml


def write_png(path: Path, array: np.ndarray) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def class_image(cls: int, i: int, shape=(20, 30), rgb: bool = False) -> np.ndarray:
    """A learnable pattern: class 0 bright left half, class 1 bright right half, plus noise."""
    rng = np.random.default_rng(1000 * cls + i)
    image = rng.integers(0, 60, shape).astype(np.uint8)
    half = shape[1] // 2
    if cls == 0:
        image[:, :half] += 150
    else:
        image[:, half:] += 150
    return np.repeat(image[..., None], 3, axis=2) if rgb else image


def make_folders(root: Path, counts: dict, splits: dict | None = None, shape=(20, 30), rgb=False) -> Path:
    """root/<class>/<i>.png (or root/<split>/<class>/<i>.png with `splits` = {split: {class: n}})."""
    layout = splits or {None: counts}
    for split, per_class in layout.items():
        for cls, (name, n) in enumerate(per_class.items()):
            for i in range(n):
                folder = root / split / name if split else root / name
                offset = {None: 0, "train": 0, "val": 300, "test": 600}.get(split, 900)
                write_png(folder / f"img{i:03d}.png", class_image(cls, i + offset, shape, rgb))
    return root


def make_csv(root: Path, rows: list, header=("path", "label", "split", "note")) -> Path:
    """metadata.csv in `root` with `rows` (tuples in header order); images named in rows are created."""
    root.mkdir(parents=True, exist_ok=True)
    lines = [",".join(header)]
    for row in rows:
        lines.append(",".join(str(v) for v in row))
    path = root / "metadata.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def make_volume(path: Path, shape=(12, 10, 8), value: float = 0.0, seed: int = 0, dims: int = 3) -> Path:
    import nibabel as nib

    rng = np.random.default_rng(seed)
    data = rng.normal(value, 1.0, shape[:dims]).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return path


# A ~0.4 M-parameter timm test network (no small-input adaptation): training tests stay fast on 2 cores.
TINY_BACKBONE = {"target": "benchmark.run.backbones:TimmBackbone",
                 "config": {"model_name": "test_resnet"}}


def write_registry(tmp_path: Path, monkeypatch, datasets: dict, backbones: dict | None = None) -> Path:
    """registry folder with dataset entries {name: {target, config}} and the backbone `tinynet` (plus
    `backbones`); GENMED_REGISTRY_PATH points at it."""
    folder = tmp_path / "reg" / "datasets"
    folder.mkdir(parents=True, exist_ok=True)
    for name, entry in datasets.items():
        (folder / f"{name}.yaml").write_text(yaml.safe_dump({"version": 1, **entry}))
    backbone_folder = tmp_path / "reg" / "backbones"
    backbone_folder.mkdir(parents=True, exist_ok=True)
    for name, entry in {"tinynet": TINY_BACKBONE, **(backbones or {})}.items():
        (backbone_folder / f"{name}.yaml").write_text(yaml.safe_dump({"version": 1, **entry}))
    monkeypatch.setenv("GENMED_REGISTRY_PATH", str(tmp_path / "reg"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    from benchmark.run.cell import load_bundle

    load_bundle.cache_clear()
    return folder


def make_npz(path: Path, n_per_class: dict, size: int = 28, seed: int = 0) -> Path:
    """A MedMNIST-format .npz with two learnable classes; n_per_class = {split: [n0, n1]}."""
    arrays = {}
    for split, counts in n_per_class.items():
        images, labels = [], []
        for cls, n in enumerate(counts):
            for i in range(n):
                images.append(class_image(cls, i + 100 * seed + (0 if split == "train" else 500 + len(split)),
                                          (size, size)))
                labels.append(cls)
        arrays[f"{split}_images"] = np.stack(images)
        arrays[f"{split}_labels"] = np.array(labels, dtype=np.int64)[:, None]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path
