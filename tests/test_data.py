"""Datasets and rarity on the real BreastMNIST: loading, checks, hashing, download path, pairing, no leakage."""

import hashlib
import http.server
import threading

import numpy as np
import pytest

from benchmark.core.errors import UserError
from benchmark.data import dataset_source
from benchmark.data.medmnist import MedMNIST
from benchmark.data.rarity import rare_subsample
from benchmark.plan.grid import Grid, expand
from benchmark.run.cell import build_cell, load_bundle


def spec_for(**axes):
    base = {"dataset": ["breastmnist"], "generator": ["none"], "backbone": ["resnet18"]}
    return expand(Grid("t", None, {**base, **{k: [v] for k, v in axes.items()}}, [], [], {}, "test"))[0]


def test_breastmnist_loads_as_uint8_nchw_with_its_sha256(data_env):
    bundle = dataset_source("breastmnist").load(28)
    assert {s: len(v) for s, v in bundle.splits.items()} == {"train": 546, "val": 78, "test": 156}
    train = bundle.splits["train"]
    assert train.images.shape == (546, 1, 28, 28) and train.images.dtype == np.uint8
    assert train.labels.dtype == np.int64 and train.labels.shape == (546,)
    assert bundle.class_counts("train").tolist() == [147, 399]
    assert bundle.sha256 == hashlib.sha256((data_env / "breastmnist.npz").read_bytes()).hexdigest()
    assert bundle.label_names == ["malignant", "normal, benign"]


def test_official_label_shape_n_by_1_is_accepted(data_env, tmp_path, monkeypatch):
    with np.load(data_env / "breastmnist.npz") as npz:
        arrays = {k: (npz[k][:, None] if k.endswith("labels") else npz[k]) for k in npz.files}
    np.savez(tmp_path / "breastmnist.npz", **arrays)
    monkeypatch.setenv("GENMED_DATA_DIR", str(tmp_path))
    bundle = dataset_source("breastmnist").load(28)
    assert bundle.splits["val"].labels.shape == (78,)
    assert bundle.class_counts("test").tolist() == [42, 114]


def test_truncated_file_is_a_clear_error(data_env, tmp_path, monkeypatch):
    data = (data_env / "breastmnist.npz").read_bytes()
    (tmp_path / "breastmnist.npz").write_bytes(data[: len(data) // 2])
    monkeypatch.setenv("GENMED_DATA_DIR", str(tmp_path))
    with pytest.raises(UserError, match=r"breastmnist\.npz is truncated or corrupt .*Delete it and download it again"):
        dataset_source("breastmnist").load(28)


def test_wrong_split_sizes_are_refused_like_medmnist(data_env, tmp_path, monkeypatch):
    with np.load(data_env / "breastmnist.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["train_images"], arrays["train_labels"] = arrays["train_images"][:500], arrays["train_labels"][:500]
    np.savez(tmp_path / "breastmnist.npz", **arrays)
    monkeypatch.setenv("GENMED_DATA_DIR", str(tmp_path))
    with pytest.raises(UserError, match=r"does not match MedMNIST 'breastmnist' split sizes \(train: 500 \(expected 546\)\)"):
        dataset_source("breastmnist").load(28)


def test_missing_file_offline_names_url_md5_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("GENMED_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(MedMNIST, "url", lambda self, size: "http://127.0.0.1:9/breastmnist.npz")
    with pytest.raises(UserError) as err:
        dataset_source("breastmnist").load(28)
    message = str(err.value)
    assert "http://127.0.0.1:9/breastmnist.npz" in message and "750601b1f35ba3300ea97c75c52ff8f6" in message
    assert str(tmp_path / "breastmnist.npz") in message
    assert not list(tmp_path.iterdir())


@pytest.fixture
def local_server(real_data_dir):
    handler = lambda *a, **kw: http.server.SimpleHTTPRequestHandler(*a, directory=str(real_data_dir), **kw)  # noqa
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/breastmnist.npz"
    server.shutdown()


def test_download_checks_md5_and_keeps_only_a_verified_file(local_server, real_data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("GENMED_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(MedMNIST, "url", lambda self, size: local_server)
    # The shared copy was re-saved by a third party: its MD5 differs from the official one, so it is rejected.
    with pytest.raises(UserError, match="has MD5 098de56cd2d92ef2f7170e6153c02849, expected 750601b1"):
        dataset_source("breastmnist").ensure(28)
    assert not list(tmp_path.iterdir())
    actual_md5 = hashlib.md5((real_data_dir / "breastmnist.npz").read_bytes()).hexdigest()
    monkeypatch.setattr(MedMNIST, "md5", lambda self, size: actual_md5)
    path = dataset_source("breastmnist").ensure(28)
    assert path.read_bytes() == (real_data_dir / "breastmnist.npz").read_bytes()


def test_rare_subsample_keeps_all_other_images_and_is_deterministic():
    labels = np.array([0] * 30 + [1] * 70)
    a = rare_subsample(labels, 0, 10, seed=7)
    assert len(a) == 80 and (labels[a] == 0).sum() == 10 and (labels[a] == 1).sum() == 70
    assert np.array_equal(a, rare_subsample(labels, 0, 10, seed=7))
    assert not np.array_equal(a, rare_subsample(labels, 0, 10, seed=8))
    assert np.array_equal(rare_subsample(labels, 0, "all", seed=1), np.arange(100))
    with pytest.raises(UserError, match="rare_count=31 is impossible: the rare class has 30 training images"):
        rare_subsample(labels, 0, 31, seed=0)


def test_every_method_and_backbone_of_a_cell_sees_the_same_real_images(data_env):
    reference = build_cell(spec_for(rare_count=20, seed=4, generator="none", backbone="resnet18"))
    for generator in ("class_weight", "oversample"):
        for backbone in ("resnet50", "densenet121"):
            other = build_cell(spec_for(rare_count=20, seed=4, generator=generator, backbone=backbone))
            assert np.array_equal(other.kept_indices, reference.kept_indices)
            assert np.array_equal(other.real.images, reference.real.images)
    assert reference.rare_class == 0 and reference.n_rare == 20
    assert len(reference.real.labels) == 399 + 20
    different_seed = build_cell(spec_for(rare_count=20, seed=5))
    assert not np.array_equal(different_seed.kept_indices, reference.kept_indices)


def test_val_and_test_are_never_subsampled(data_env):
    cell = build_cell(spec_for(rare_count=10, seed=0))
    full = load_bundle("breastmnist", 28)
    assert cell.bundle.splits["val"] is full.splits["val"] and len(full.splits["test"]) == 156
    train_hashes = {hashlib.sha1(im.tobytes()).hexdigest() for im in cell.real.images}
    full_train = {hashlib.sha1(im.tobytes()).hexdigest() for im in full.splits["train"].images}
    assert train_hashes <= full_train


def test_content_hashes_are_cached_outside_the_repo_only_once_the_file_has_settled(tmp_path, monkeypatch):
    import json
    import os

    from benchmark.data.bundle import file_sha256, hash_cache_path

    monkeypatch.setenv("GENMED_CACHE_DIR", str(tmp_path / "cache"))
    assert hash_cache_path() == tmp_path / "cache" / "sha256.json"
    path = tmp_path / "d.npz"
    path.write_bytes(b"first content")
    assert file_sha256(path) == hashlib.sha256(b"first content").hexdigest()
    assert not hash_cache_path().exists()  # just written: it could change again within the same mtime tick
    old = path.stat().st_mtime - 3600
    os.utime(path, (old, old))
    assert file_sha256(path) == hashlib.sha256(b"first content").hexdigest()
    cached = json.loads(hash_cache_path().read_text())
    assert list(cached.values()) == [hashlib.sha256(b"first content").hexdigest()]
    assert str(path.resolve()) in next(iter(cached))
    path.write_bytes(b"other content")  # same size, new mtime: hashed again
    assert file_sha256(path) == hashlib.sha256(b"other content").hexdigest()
    monkeypatch.delenv("GENMED_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hash_cache_path() == tmp_path / "xdg" / "genmed-rare" / "sha256.json"
