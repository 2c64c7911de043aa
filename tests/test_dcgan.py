"""The class-conditional DCGAN: it learns BreastMNIST (FID drops), is deterministic, round-trips, rejects bad config."""

import numpy as np
import pytest

from benchmark.core import registry
from benchmark.generators import audit as A
from benchmark.generators._common import CorruptArtifactError
from benchmark.generators.dcgan import DCGAN, architecture
from tests.generator_helpers import breastmnist, one_torch_thread  # noqa: F401 (fixtures)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TINY = dict(batch_size=32, nz=32, ngf=32, ndf=32, embed_dim=8, log_every=50)


@pytest.fixture(scope="module")
def trained(one_torch_thread, breastmnist, tmp_path_factory):
    images, labels = breastmnist
    out = tmp_path_factory.mktemp("dcgan_grids")
    model = DCGAN(2, (1, 28, 28), steps=200, grid_every=100, **TINY)
    log = model.fit(images, labels, seed=0, out_dir=out)
    return model, log, out, images, labels


@pytest.mark.slow
def test_a_few_hundred_steps_lower_the_fid(trained):
    model, log, _, images, labels = trained
    rare = images[labels == 0]
    untrained = DCGAN(2, (1, 28, 28), steps=200, **TINY)
    untrained._build(0)  # the same initial weights fit() started from
    extractor, _ = A.feature_extractor("random_cnn", 1)
    real = A.extract_features(extractor, rare)
    fid_before = A.fid_kid(A.extract_features(extractor, untrained.sample(len(rare), 0, seed=1)), real)["fid"]
    fid_after = A.fid_kid(A.extract_features(extractor, model.sample(len(rare), 0, seed=1)), real)["fid"]
    print(f"DCGAN 200 steps, random_cnn_v1 FID on the rare class: before {fid_before:.3f}, after {fid_after:.3f}")
    assert fid_after < 0.25 * fid_before


@pytest.mark.slow
def test_fit_log_and_fixed_noise_grids(trained):
    from PIL import Image

    _, log, out, _, _ = trained
    assert log["steps"] == 200 and log["seconds"] > 0 and log["log_steps"] == [50, 100, 150, 200]
    assert len(log["loss_d"]) == len(log["loss_g"]) == len(log["loss_fm"]) == 4
    assert all(np.isfinite(log["loss_d"])) and all(np.isfinite(log["loss_g"]))
    assert log["perceptual"].startswith("perceptual loss off: no local VGG weights")
    assert [p.name for p in sorted(out.glob("*.png"))] == ["grid_step000100.png", "grid_step000200.png"]
    grid = Image.open(out / "grid_step000200.png")
    assert grid.size == (8 * 30 + 2, 2 * 30 + 2)  # 8 fixed-noise columns, one row per class, 2 px padding


@pytest.mark.slow
def test_save_load_round_trip_gives_identical_samples(trained, tmp_path):
    model, _, _, _, _ = trained
    model.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "generator.safetensors"]
    loaded = DCGAN.from_folder(tmp_path)
    np.testing.assert_array_equal(loaded.sample(20, 0, seed=7), model.sample(20, 0, seed=7))
    again = DCGAN(2, (1, 28, 28), **TINY)
    again.load(tmp_path)
    np.testing.assert_array_equal(again.sample(5, 1, seed=3), model.sample(5, 1, seed=3))


def test_fit_and_sample_are_deterministic(breastmnist):
    images, labels = breastmnist
    samples = []
    for _ in range(2):
        model = DCGAN(2, (1, 28, 28), steps=3, **TINY)
        model.fit(images[:64], labels[:64], seed=5)
        samples.append(model.sample(6, 1, seed=2))
    np.testing.assert_array_equal(samples[0], samples[1])
    assert samples[0].dtype == np.uint8 and samples[0].shape == (6, 1, 28, 28)
    assert not np.array_equal(model.sample(6, 1, seed=3), samples[0])
    np.testing.assert_array_equal(model.sample(3, 1, seed=2), samples[0][:3])  # a sample does not depend on n


@pytest.mark.parametrize("size,channels,expected", [(28, 1, (7, 2)), (32, 3, (4, 3)), (64, 1, (4, 4)),
                                                    (128, 3, (4, 5))])
def test_architecture_follows_the_resolution(size, channels, expected):
    assert architecture(size) == expected
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, channels, size, size), dtype=np.uint8)
    model = DCGAN(3, (channels, size, size), steps=1, batch_size=4, nz=8, ngf=8, ndf=8, embed_dim=4)
    model.fit(images, np.array([0, 1, 2, 0, 1, 2, 0, 1]), seed=0)
    out = model.sample(2, 2, seed=0)
    assert out.shape == (2, channels, size, size) and out.dtype == np.uint8


def test_perceptual_loss_only_with_local_weights(breastmnist, tmp_path):
    import torch
    from safetensors.torch import save_file
    from torchvision.models.vgg import cfgs, make_layers

    images, labels = breastmnist
    missing = DCGAN(2, (1, 28, 28), steps=1, vgg_weights=str(tmp_path / "absent.safetensors"), **TINY)
    assert "not found" in missing.fit(images[:32], labels[:32], seed=0)["perceptual"]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        features = make_layers(cfgs["D"])[:4]  # VGG16 conv-relu-conv-relu: a small stand-in for real weights
    save_file({f"features.{k}": v for k, v in features.state_dict().items()}, str(tmp_path / "vgg.safetensors"))
    model = DCGAN(2, (1, 28, 28), steps=2, log_every=1, vgg_weights=str(tmp_path / "vgg.safetensors"), vgg_layers=4,
                  **{k: v for k, v in TINY.items() if k != "log_every"})
    log = model.fit(images[:32], labels[:32], seed=0)
    assert log["perceptual"].startswith("perceptual loss on") and len(log["loss_perceptual"]) == 2
    partial = DCGAN(2, (1, 28, 28), steps=1, vgg_weights=str(tmp_path / "vgg.safetensors"), vgg_layers=9, **TINY)
    assert "lacks VGG16 feature weights" in partial.fit(images[:32], labels[:32], seed=0)["perceptual"]


def test_bad_config_and_input_are_rejected():
    with pytest.raises(ValueError, match="did you mean 'ngf'"):
        DCGAN(2, (1, 28, 28), nfg=32)
    with pytest.raises(ValueError, match="image size 30"):
        DCGAN(2, (1, 30, 30))
    with pytest.raises(ValueError, match="real_label"):
        DCGAN(2, (1, 28, 28), real_label=1.5)
    with pytest.raises(ValueError, match="unknown config key.*'kind'"):  # harness keys stop at registry.create
        DCGAN(2, (1, 28, 28), kind="generative")
    assert isinstance(registry.create("generator", "dcgan_small", num_classes=2, image_shape=(1, 28, 28)), DCGAN)
    model = DCGAN(2, (1, 28, 28), steps=1, **{k: v for k, v in TINY.items()})
    with pytest.raises(ValueError, match="uint8"):
        model.fit(np.zeros((4, 1, 28, 28), np.float32), np.zeros(4, np.int64), seed=0)
    with pytest.raises(RuntimeError, match="fit"):
        model.sample(1, 0, seed=0)


def test_corrupt_artifact_is_detected(breastmnist, tmp_path):
    images, labels = breastmnist
    model = DCGAN(2, (1, 28, 28), steps=1, **TINY)
    model.fit(images[:32], labels[:32], seed=0)
    model.save(tmp_path)
    weights = tmp_path / "generator.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CorruptArtifactError, match="generator.safetensors.*--force"):
        DCGAN.from_folder(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CorruptArtifactError, match="config.json"):
        DCGAN.from_folder(tmp_path)
