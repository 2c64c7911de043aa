"""Bounded memory (issue 21, item 5): the memory-mapped image cache (written once, reused, content-hashed), splits
and cells as views of it, the bundle cache bounded by bytes, and --dry-run's memory lines and warning."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmark.core.errors import UserError
from benchmark.data import dataset_source
from benchmark.data.arrays import cache_folder, is_mapped
from benchmark.plan.grid import Grid, expand
from benchmark.run.cell import build_cell, load_bundle
from tests.dataset_makers import class_image, make_folders, make_npz, write_png, write_registry

SPLIT_COUNTS = {"train": {"a": 12, "b": 6}, "val": {"a": 3, "b": 3}, "test": {"a": 4, "b": 3}}


@pytest.fixture
def folder_dataset(tmp_path, monkeypatch):
    """An image-folder dataset with explicit split folders (so each split's files are known), registered as
    `folders`; the caches (hashes, images) live under tmp_path."""
    root = make_folders(tmp_path / "data", {}, splits=SPLIT_COUNTS)
    write_registry(tmp_path, monkeypatch, {"folders": {
        "target": "benchmark.data.folders:FolderDataset", "config": {"root": str(root), "image_size": 16}}})
    monkeypatch.delenv("GENMED_ARRAY_CACHE_DIR", raising=False)
    monkeypatch.delenv("GENMED_CACHE_DIR", raising=False)
    yield root
    load_bundle.cache_clear()


def decoded(root: Path, split: str, size: int = 16) -> np.ndarray:
    """The split's images decoded independently with PIL (class folders in order, files sorted), as (N, 1, H, W)."""
    files = [f for cls in ("a", "b") for f in sorted((root / split / cls).glob("*.png"))]
    return np.stack([np.asarray(Image.open(f).convert("L").resize((size, size), Image.Resampling.BICUBIC))[None]
                     for f in files])


def cache_files() -> list:
    return sorted(cache_folder().glob("*.npy"))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def spec_for(dataset: str, **axes):
    base = {"dataset": [dataset], "image_size": [16], "generator": ["none"], "backbone": ["tinynet"]}
    return expand(Grid("t", None, {**base, **{k: [v] for k, v in axes.items()}}, [], [], {}, "test"))[0]


def test_the_image_cache_is_written_once_reused_and_keyed_by_content(folder_dataset):
    bundle = dataset_source("folders").load(16)
    [path] = cache_files()
    assert path.stat().st_mode & 0o077 == 0  # real patient images: private to the user
    first = (path.stat().st_mtime_ns, sha256(path))
    for split in ("train", "val", "test"):
        assert is_mapped(bundle.splits[split].images)
        assert np.array_equal(bundle.splits[split].images, decoded(folder_dataset, split))
    assert np.array_equal(np.load(path), np.concatenate([decoded(folder_dataset, s) for s in ("train", "val", "test")]))
    again = dataset_source("folders").load(16)  # a new source object: nothing shared in memory
    assert cache_files() == [path] and (path.stat().st_mtime_ns, sha256(path)) == first
    assert np.array_equal(again.splits["val"].images, bundle.splits["val"].images)
    write_png(folder_dataset / "val" / "b" / "img000.png", class_image(0, 77))  # new content → a new cache file
    changed = dataset_source("folders").load(16)
    assert len(cache_files()) == 2 and changed.sha256 != bundle.sha256
    assert np.array_equal(changed.splits["val"].images, decoded(folder_dataset, "val"))
    assert (path.stat().st_mtime_ns, sha256(path)) == first


def test_without_the_cache_the_same_images_stay_in_memory(folder_dataset, monkeypatch):
    mapped = dataset_source("folders").load(16)
    monkeypatch.setenv("GENMED_ARRAY_CACHE_DIR", "off")
    in_memory = dataset_source("folders").load(16)
    for split in ("train", "val", "test"):
        assert not is_mapped(in_memory.splits[split].images)
        assert np.array_equal(in_memory.splits[split].images, mapped.splits[split].images)
        assert np.array_equal(in_memory.splits[split].labels, mapped.splits[split].labels)
    assert in_memory.resident_bytes() > 0 and mapped.resident_bytes() == sum(
        s.labels.nbytes for s in mapped.splits.values())


def test_a_cell_is_a_view_of_the_cache_where_it_keeps_every_image(folder_dataset):
    everything = build_cell(spec_for("folders", rare_count="all"))
    bundle = load_bundle("folders", 16)
    [path] = cache_files()
    cache = np.load(path, mmap_mode="r")
    assert np.shares_memory(everything.real.images, bundle.splits["train"].images)
    assert is_mapped(everything.real.images) and np.array_equal(everything.real.images, cache[:18])
    assert is_mapped(bundle.splits["test"].images) and np.array_equal(bundle.splits["test"].images, cache[-7:])
    copied = 0
    for seed in range(4):  # a subsample: a view when its kept indices are one range, else one copy of them
        some = build_cell(spec_for("folders", rare_count=2, seed=seed))
        contiguous = bool(np.all(np.diff(some.kept_indices) == 1))
        assert np.shares_memory(some.real.images, bundle.splits["train"].images) == contiguous
        assert np.array_equal(some.real.images, decoded(folder_dataset, "train")[some.kept_indices])
        assert some.n_rare == 2 and len(some.real.labels) == 12 + 2
        copied += not contiguous
    assert copied  # the copy path ran


def test_a_large_npz_is_memory_mapped_split_by_split(tmp_path, monkeypatch):
    path = make_npz(tmp_path / "d.npz", {"train": [6, 4], "val": [2, 2], "test": [3, 2]}, size=8)
    write_registry(tmp_path, monkeypatch, {"mine": {"target": "benchmark.data.npz:NpzDataset",
                                                    "config": {"path": str(path), "image_size": 8}}})
    monkeypatch.delenv("GENMED_ARRAY_CACHE_DIR", raising=False)
    monkeypatch.delenv("GENMED_CACHE_DIR", raising=False)
    small = dataset_source("mine").load(8)  # below $GENMED_MEMMAP_MIN_MB (256 MB): in memory
    assert not is_mapped(small.splits["train"].images) and not cache_folder().exists()
    monkeypatch.setenv("GENMED_MEMMAP_MIN_MB", "0")
    mapped = dataset_source("mine").load(8)
    with np.load(path) as raw:
        for split in ("train", "val", "test"):
            assert is_mapped(mapped.splits[split].images)
            assert np.array_equal(mapped.splits[split].images, raw[f"{split}_images"][:, None])
            assert np.array_equal(mapped.splits[split].labels, raw[f"{split}_labels"][:, 0])
    assert len(cache_files()) == 1


def test_the_bundle_cache_evicts_by_bytes(tmp_path, monkeypatch):
    datasets = {}
    for name in ("one", "two"):
        path = make_npz(tmp_path / f"{name}.npz", {"train": [40, 20], "val": [5, 5], "test": [5, 5]}, size=28)
        datasets[name] = {"target": "benchmark.data.npz:NpzDataset", "config": {"path": str(path), "image_size": 28}}
    write_registry(tmp_path, monkeypatch, datasets)
    monkeypatch.setenv("GENMED_ARRAY_CACHE_DIR", "off")
    one = load_bundle("one", 28)
    size = one.resident_bytes()
    assert size == sum(s.images.nbytes + s.labels.nbytes for s in one.splits.values())  # 80 images of 784 B + labels
    monkeypatch.setenv("GENMED_BUNDLE_CACHE_MB", str(1.5 * size / 2**20))  # room for one bundle, not two
    load_bundle("two", 28)
    assert load_bundle.keys() == [("two", 28)] and load_bundle.held_bytes() == size
    monkeypatch.setenv("GENMED_BUNDLE_CACHE_MB", str(2.5 * size / 2**20))  # room for two
    assert load_bundle("one", 28) is not one  # it was dropped: loaded again
    assert load_bundle.keys() == [("two", 28), ("one", 28)]
    assert load_bundle("two", 28) is load_bundle("two", 28)
    load_bundle.cache_clear()
    monkeypatch.setenv("GENMED_BUNDLE_CACHE_MB", "0")  # the bundle just loaded always stays
    load_bundle("one", 28)
    load_bundle("two", 28)
    assert load_bundle.keys() == [("two", 28)]
    monkeypatch.setenv("GENMED_BUNDLE_CACHE_MB", "lots")
    with pytest.raises(UserError, match=r"\$GENMED_BUNDLE_CACHE_MB is 'lots'"):
        load_bundle.cache_clear()
        load_bundle("two", 28)
    load_bundle.cache_clear()


def test_a_fold_gathers_train_and_val_without_concatenating(folder_dataset):
    from benchmark.data.folds import fold_bundle, fold_indices

    bundle = dataset_source("folders").load(16)
    train, val = bundle.splits["train"], bundle.splits["val"]
    folded = fold_bundle(bundle, 3, 2, seed=5)
    pool_images = np.concatenate([train.images, val.images])  # the independent computation
    pool_labels = np.concatenate([train.labels, val.labels])
    kept, held = fold_indices(train.labels, val.labels, 3, 2, 5)
    assert np.array_equal(folded.splits["train"].images, pool_images[kept])
    assert np.array_equal(folded.splits["val"].images, pool_images[held])
    assert np.array_equal(folded.splits["val"].labels, pool_labels[held])
    assert folded.splits["test"] is bundle.splits["test"]


def dry_run(tmp_path, capsys, *extra) -> tuple[str, str]:
    from launch import grid as grid_cli

    path = tmp_path / "g.yaml"
    path.write_text("name: g\naxes: {dataset: [folders], image_size: [16], generator: [none, oversample], "
                    "synthetic_ratio: [1], backbone: [tinynet], rare_count: [all, 2]}\ntraining: {epochs: 1}\n")
    code = grid_cli.main(["--grid", str(path), "--dry-run", "--results", str(tmp_path / "results"), *extra])
    out = capsys.readouterr()
    assert code == 0
    return out.out, out.err


def test_dry_run_prints_the_memory_of_a_job_and_warns_past_the_profile(folder_dataset, tmp_path, capsys):
    from benchmark.plan.memory import PROCESS_BASE_BYTES, gb

    out, err = dry_run(tmp_path, capsys, "--executor", "debug")
    lines = [line for line in out.splitlines() if line.startswith("memory ")]
    image = 1 * 16 * 16  # channels not declared: 3 assumed before decoding
    assert lines[0].startswith(f"memory folders @16px: 31 images × {3 * image:,} bytes = {gb(31 * 3 * image)} "
                               "memory-mapped")
    assert "channels unknown before decoding: 3 assumed" in lines[0]
    # the largest job: oversample × 1 at rare count 2 copies the 14 kept images and concatenates 14 + 2
    assert f"holds up to {gb(PROCESS_BASE_BYTES + (14 + 16) * 3 * image)}" in lines[0]
    assert "oversample" in lines[0] and "rare=2" in lines[0]
    assert lines[1].startswith("memory this machine:") and lines[1].endswith(": fits")
    assert "warning: memory" not in err
    profile = tmp_path / "tiny.yaml"
    profile.write_text("description: too small\nmem_gb: 0.5\n")
    out, err = dry_run(tmp_path, capsys, "--cluster-profile", str(profile))
    assert "memory cluster profile tiny (" in out and "0.5 GB per node for 1 process(es)" in out
    assert "warning: memory: a node of cluster profile tiny would need ~1.00 GB but " in err
    assert "tiny.yaml gives mem_gb 0.5; raise mem_gb" in err
