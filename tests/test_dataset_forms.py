"""Image folders, metadata.csv and NIfTI datasets (built on the fly): the uint8 form, resizing, channels, splits,
content hashes, registry use, and every bad input giving a clear error that names the file."""

import json
import os

import numpy as np
import pytest

from benchmark.core.errors import UserError
from benchmark.data.bundle import SPLITS
from benchmark.data.folders import FolderDataset
from benchmark.data.metadata_csv import MetadataCsvDataset
from benchmark.data.nifti import NiftiDataset, slice_indices, volume_slices
from tests.dataset_makers import class_image, make_csv, make_folders, make_volume, write_png, write_registry


@pytest.fixture(autouse=True)
def private_hash_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def split_counts(bundle):
    return {s: np.bincount(bundle.splits[s].labels, minlength=bundle.num_classes).tolist() for s in SPLITS}


# --- image folders --------------------------------------------------------------------------------------------------

def test_class_folders_resize_convert_and_split_stratified_by_seed(tmp_path):
    root = make_folders(tmp_path / "busi", {"benign": 20, "malignant": 10}, rgb=True)
    bundle = FolderDataset("busi", root, image_size=16, channels=1).load(16)
    assert bundle.label_names == ["benign", "malignant"] and bundle.task == "binary-class"
    assert split_counts(bundle) == {"train": [14, 7], "val": [2, 1], "test": [4, 2]}  # 0.7/0.1/0.2 per class
    for split in bundle.splits.values():
        assert split.images.dtype == np.uint8 and split.images.shape[1:] == (1, 16, 16)
    again = FolderDataset("busi", root, image_size=16, channels=1).load(16)
    assert all((again.splits[s].images == bundle.splits[s].images).all() for s in SPLITS)
    other_seed = FolderDataset("busi", root, image_size=16, channels=1, split_seed=1).load(16)
    assert not np.array_equal(other_seed.splits["test"].images, bundle.splits["test"].images)
    colour = FolderDataset("busi", root, image_size=16, channels=3).load(16)
    assert colour.n_channels == 3 and colour.sha256 == bundle.sha256  # the hash is of the files, not the options
    # the left/right pattern survives the antialiased resize (bright half on the class's side)
    image = bundle.splits["train"].images[bundle.splits["train"].labels == 0][0, 0].astype(int)
    assert image[:, :8].mean() > image[:, 8:].mean() + 80


def test_split_folders_are_used_and_val_is_carved_from_train(tmp_path):
    root = make_folders(tmp_path / "d", {}, splits={"train": {"a": 10, "b": 10}, "test": {"a": 3, "b": 4}})
    bundle = FolderDataset("d", root, image_size=20).load(20)
    assert split_counts(bundle) == {"train": [9, 9], "val": [1, 1], "test": [3, 4]}
    assert bundle.n_channels == 1
    with_val = make_folders(tmp_path / "e", {}, splits={"train": {"a": 5, "b": 5}, "valid": {"a": 2, "b": 2},
                                                        "test": {"a": 2, "b": 2}})
    assert split_counts(FolderDataset("e", with_val, image_size=20).load(20)) == {
        "train": [5, 5], "val": [2, 2], "test": [2, 2]}


def test_group_pattern_keeps_a_patient_in_one_split(tmp_path):
    for cls, name in enumerate(["neg", "pos"]):
        for patient in range(6):
            for k in range(3):
                write_png(tmp_path / "d" / name / f"p{cls}{patient}_slice{k}.png", class_image(cls, patient * 3 + k))
    ds = FolderDataset("d", tmp_path / "d", image_size=20, group_pattern=r"(p\d+)_")
    files, _, splits, _ = ds.index
    by_patient = {}
    for f, s in zip(files, splits):
        by_patient.setdefault(f.name.split("_")[0], set()).add(s)
    assert all(len(s) == 1 for s in by_patient.values()) and len(by_patient) == 12
    assert {s for v in by_patient.values() for s in v} == {"train", "val", "test"}


def test_content_hash_is_cached_and_changes_with_any_byte_or_name(tmp_path):
    root = make_folders(tmp_path / "d", {"a": 4, "b": 4})
    for png in root.rglob("*.png"):  # settled files (a file written this second is hashed but not cached)
        os.utime(png, (png.stat().st_mtime - 3600,) * 2)
    first = FolderDataset("d", root, image_size=20, split_ratios=[0.5, 0.25, 0.25]).content_sha256()
    assert len(first) == 64 and (tmp_path / "cache" / "genmed-rare" / "sha256.json").is_file()
    assert FolderDataset("d", root, image_size=20, split_ratios=[0.5, 0.25, 0.25]).content_sha256() == first
    data = bytearray((root / "a" / "img000.png").read_bytes())
    write_png(root / "a" / "img000.png", 255 - class_image(0, 0))
    changed = FolderDataset("d", root, image_size=20, split_ratios=[0.5, 0.25, 0.25]).content_sha256()
    assert changed != first
    (root / "a" / "img000.png").write_bytes(bytes(data))
    os.rename(root / "a" / "img001.png", root / "a" / "img009.png")
    assert FolderDataset("d", root, image_size=20, split_ratios=[0.5, 0.25, 0.25]).content_sha256() not in (first,
                                                                                                           changed)


# --- metadata.csv ---------------------------------------------------------------------------------------------------

def csv_dataset(tmp_path, n=4, extra_rows=(), **config):
    root = tmp_path / "csvdata"
    rows = []
    for cls, label in enumerate(["benign", "malignant"]):
        for i in range(n):
            split = ("train", "train", "val", "test")[i % 4]
            rel = f"images/{label[:3]}_{i}.png"
            write_png(root / rel, class_image(cls, i))
            rows.append((rel, label, split, "ignored column"))
    make_csv(root, rows + list(extra_rows))
    return MetadataCsvDataset("derm", root / "metadata.csv", image_size=16, **config)


def test_metadata_csv_paths_labels_splits(tmp_path):
    ds = csv_dataset(tmp_path, n=8, label_names=["malignant", "benign"])
    bundle = ds.load(16)
    assert bundle.label_names == ["malignant", "benign"]
    assert split_counts(bundle) == {"train": [4, 4], "val": [2, 2], "test": [2, 2]}
    assert bundle.splits["train"].images.shape == (8, 1, 16, 16)
    hash_before = bundle.sha256
    csv_path = tmp_path / "csvdata" / "metadata.csv"
    csv_path.write_text(csv_path.read_text().replace("ignored column", "other note"))
    assert MetadataCsvDataset("derm", csv_path, image_size=16).content_sha256() != hash_before  # the CSV is hashed
    assert ds.load_labels(16)["val"].tolist() == [1, 1, 0, 0]


def test_metadata_csv_without_split_column_is_split_by_seed(tmp_path):
    root = tmp_path / "c"
    rows = []
    for cls in range(3):
        for i in range(10):
            write_png(root / f"{cls}_{i}.jpg", class_image(cls % 2, i))
            rows.append((f"{cls}_{i}.jpg", cls))
    make_csv(root, rows, header=("file", "diagnosis"))
    ds = MetadataCsvDataset("c", root / "metadata.csv", image_size=12, columns={"path": "file", "label": "diagnosis"})
    bundle = ds.load(12)
    assert bundle.label_names == ["0", "1", "2"] and bundle.task == "multi-class"
    assert split_counts(bundle) == {"train": [7, 7, 7], "val": [1, 1, 1], "test": [2, 2, 2]}


# --- NIfTI ----------------------------------------------------------------------------------------------------------

def make_nifti_tree(root, n_per_class=5, shape=(12, 10, 8)):
    for cls, name in enumerate(["benign", "malignant"]):
        for v in range(n_per_class):
            make_volume(root / "original" / name / f"vol{v}.nii.gz", shape, value=3.0 * cls, seed=10 * cls + v)
    return root / "original"


def test_nifti_slice_policies_windowing_and_no_volume_leakage(tmp_path):
    root = make_nifti_tree(tmp_path / "mri")
    middle = NiftiDataset("mri", root, image_size=16).load(16)
    assert middle.label_names == ["benign", "malignant"]
    assert sum(len(s) for s in middle.splits.values()) == 10 and middle.n_channels == 1
    every = NiftiDataset("mri", root, image_size=16, slices="every_3", axis=2)
    labels = every.load_labels(16)
    assert sum(len(v) for v in labels.values()) == 10 * len(slice_indices(8, ("every", 3))) == 30
    bundle = every.load(16)
    files, file_labels, file_splits, _ = every.index
    for split in SPLITS:  # all slices of a volume in its volume's split
        assert len(bundle.splits[split]) == 3 * int((file_splits == split).sum())
    assert slice_indices(8, ("every", 3)) == [1, 4, 7] and slice_indices(8, ("middle", 1)) == [4]
    slices, indices = volume_slices(files[0], 16, 1, "all", axis=0)
    assert slices.shape == (12, 1, 16, 16) and indices == list(range(12))
    assert slices.min() == 0 and slices.max() == 255  # 1st/99th percentile → 0/255
    two_d = tmp_path / "flat"
    for cls, name in enumerate(["a", "b"]):
        for v in range(4):
            make_volume(two_d / name / f"s{v}.nii", (9, 7), seed=v + 10 * cls, dims=2)
    flat = NiftiDataset("flat", two_d, image_size=8, channels=3, split_ratios=[0.5, 0.25, 0.25]).load(8)
    assert flat.splits["train"].images.shape == (4, 3, 8, 8)


def test_registry_entries_of_each_form_expand_and_load(tmp_path, monkeypatch):
    make_folders(tmp_path / "f", {"x": 6, "y": 6})
    root = make_nifti_tree(tmp_path / "n", n_per_class=4)
    csv_dataset(tmp_path)
    write_registry(tmp_path, monkeypatch, {
        "myfolders": {"target": "benchmark.data.folders:FolderDataset",
                      "config": {"root": str(tmp_path / "f"), "image_size": 32, "channels": 3}},
        "mycsv": {"target": "benchmark.data.metadata_csv:MetadataCsvDataset",
                  "config": {"path": str(tmp_path / "csvdata" / "metadata.csv"), "image_size": 32}},
        "mynifti": {"target": "benchmark.data.nifti:NiftiDataset",
                    "config": {"root": str(root), "image_size": 32, "slices": "all", "split_ratios": [0.5, 0.25, 0.25]}},
    })
    from benchmark.plan import identity
    from benchmark.plan.grid import Grid, expand
    from benchmark.run.cell import build_cell

    jobs = expand(Grid("t", None, {"dataset": ["myfolders", "mycsv", "mynifti"], "image_size": [32],
                                   "generator": ["none"], "backbone": ["resnet18"], "rare_count": [1]}, [], [], {},
                       "test"))
    lines = identity.check_data(jobs)
    assert any(line.startswith("mynifti@32: present") for line in lines)
    for spec in jobs:
        cell = build_cell(spec)
        assert cell.real.images.shape[2:] == (32, 32) and cell.n_rare == 1
        assert len(cell.bundle.sha256) == 64
    with pytest.raises(UserError, match="has no image_size 28"):
        expand(Grid("t", None, {"dataset": ["myfolders"], "generator": ["none"], "backbone": ["resnet18"]}, [], [],
                    {}, "test"))


# --- bad input ------------------------------------------------------------------------------------------------------

def test_unreadable_image_names_the_file(tmp_path):
    root = make_folders(tmp_path / "d", {"a": 4, "b": 4})
    (root / "b" / "img002.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(UserError, match=r"Cannot read image .*b/img002\.png"):
        FolderDataset("d", root, image_size=20, split_ratios=[0.5, 0.25, 0.25]).load(20)
    volume = make_nifti_tree(tmp_path / "n", n_per_class=3)
    (volume / "benign" / "vol1.nii.gz").write_bytes(b"garbage")
    with pytest.raises(UserError, match=r"Cannot read NIfTI file .*benign/vol1\.nii\.gz"):
        NiftiDataset("n", volume, image_size=8).load(8)


def test_unknown_label_and_bad_rows_in_the_csv_name_the_line(tmp_path):
    ds = csv_dataset(tmp_path, label_names=["benign", "malignant"], extra_rows=[("images/ben_0.png", "cyst", "train")])
    with pytest.raises(UserError, match=r"metadata\.csv:10: unknown label 'cyst' for images/ben_0\.png; known "
                                        r"labels: benign, malignant"):
        ds.load(16)
    missing = csv_dataset(tmp_path, extra_rows=[("images/none.png", "benign", "train")])
    with pytest.raises(UserError, match=r"metadata\.csv:10: image .*images/none\.png does not exist"):
        missing.load_labels(16)
    twice = csv_dataset(tmp_path, extra_rows=[("images/ben_1.png", "benign", "test")])
    with pytest.raises(UserError, match=r"metadata\.csv:10: images/ben_1\.png is listed again \(first at line 3\)"):
        twice.load(16)


def test_a_class_with_no_images_is_named(tmp_path):
    root = make_folders(tmp_path / "d", {"a": 5, "b": 5})
    (root / "empty").mkdir()
    with pytest.raises(UserError, match=r"class 'empty' has no images in .*d/empty"):
        FolderDataset("d", root, image_size=20).load(20)
    with pytest.raises(UserError, match=r"class 'c' has no images"):
        FolderDataset("d2", make_folders(tmp_path / "d2", {"a": 5, "b": 5}), image_size=20,
                      label_names=["a", "b", "c"]).load_labels(20)
    ds = csv_dataset(tmp_path)
    ds.csv_path.write_text("".join(line for line in ds.csv_path.read_text().splitlines(True) if "ben_3" not in line))
    with pytest.raises(UserError, match=r"class 'benign' has no images in split 'test' in .*metadata\.csv"):
        ds.load(16)


def test_mixed_channel_counts_name_both_files_unless_declared(tmp_path):
    root = make_folders(tmp_path / "d", {"a": 5, "b": 5})
    write_png(root / "b" / "img003.png", class_image(1, 3, rgb=True))
    with pytest.raises(UserError, match=r"Mixed channel counts: .*b/img003\.png has 3 channel\(s\) but .*a/img000\.png "
                                        r"has 1.*Declare 'channels: 1'"):
        FolderDataset("d", root, image_size=20).load(20)
    assert FolderDataset("d", root, image_size=20, channels=1).load(20).n_channels == 1


def test_paths_outside_the_dataset_root_are_refused(tmp_path):
    outside = write_png(tmp_path / "elsewhere.png", class_image(0, 0))
    ds = csv_dataset(tmp_path, extra_rows=[("../elsewhere.png", "benign", "train")])
    with pytest.raises(UserError, match=r"metadata\.csv:10: .*elsewhere\.png is outside the dataset root"):
        ds.load_labels(16)
    absolute = csv_dataset(tmp_path, extra_rows=[(str(outside), "benign", "train")])
    with pytest.raises(UserError, match="is outside the dataset root"):
        absolute.load_labels(16)
    root = make_folders(tmp_path / "d", {"a": 5, "b": 5})
    (root / "a" / "link.png").symlink_to(outside)
    with pytest.raises(UserError, match=r"a/link\.png is outside the dataset root"):
        FolderDataset("d", root, image_size=20).load_labels(20)


def test_a_job_on_bad_data_fails_before_training_and_records_the_file(tmp_path, monkeypatch):
    """A file that breaks after planning (the planning check itself refuses it: test_bad_inputs.py) fails the job
    before any training, and its error.json names the file."""
    root = make_folders(tmp_path / "d", {"a": 6, "b": 6})
    write_registry(tmp_path, monkeypatch, {"broken": {"target": "benchmark.data.folders:FolderDataset",
                                                      "config": {"root": str(root), "image_size": 28}}})
    from benchmark.core.errors import UserError
    from benchmark.plan.grid import Grid, expand
    from benchmark.run.job import execute

    grid = Grid("t", None, {"dataset": ["broken"], "generator": ["none"], "backbone": ["resnet18"]}, [], [],
                {"epochs": 1}, "test")
    spec = expand(grid)[0]
    (root / "a" / "img004.png").write_bytes(b"broken")
    with pytest.raises(UserError, match=r"a/img004\.png"):
        expand(grid)
    run_dir = tmp_path / "runs" / spec.key
    assert execute(spec, run_dir) == "failed"
    error = json.loads((run_dir / "error.json").read_text())
    assert "UserError: Cannot read image" in error["error"] and "a/img004.png" in error["error"]
    assert not (run_dir / "result.json").exists() and not (run_dir / "tensorboard").exists()
