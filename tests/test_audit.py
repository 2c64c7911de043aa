"""The synthetic-image audit against independent computations: nearest neighbours, copy rate, FID, PRDC, files."""

import numpy as np
import pytest
from tests.generator_helpers import breastmnist, one_torch_thread  # noqa: F401 (fixtures)

from benchmark.generators import audit as A

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(breastmnist):
    images, labels = breastmnist
    return images, labels, images[labels == 0]


@pytest.fixture(scope="module")
def extractor():
    module, _ = A.feature_extractor("random_cnn", 1)
    return module


@pytest.fixture(scope="module")
def copies_audit(data, tmp_path_factory):
    """Synthetic set = 40 exact copies of training images (rare and common): everything must flag them."""
    images, _, rare = data
    picks = np.random.default_rng(0).choice(len(images), 40, replace=False)
    out = tmp_path_factory.mktemp("audit")
    return picks, out, A.audit(images[picks], rare, images, out_dir=out)


def brute_force_nn(queries, refs, exclude_self=False):
    """Plain numpy: all pairwise distances, argmin (self excluded by index)."""
    q = queries.reshape(len(queries), -1).astype(np.float64)
    r = refs.reshape(len(refs), -1).astype(np.float64)
    d = np.sqrt(((q[:, None, :] - r[None, :, :]) ** 2).sum(-1))
    if exclude_self:
        np.fill_diagonal(d, np.inf)
    return d.argmin(1), d.min(1)


@pytest.mark.slow
def test_exact_copies_are_flagged(copies_audit, data):
    picks, _, result = copies_audit
    assert result["copy_rate"] == 1.0
    assert result["copy_rate_feature"] == 1.0
    assert result["nn_pixel_min"] == 0.0 and result["nn_pixel_mean"] == 0.0
    assert result["nn_feature_mean"] < 1e-5
    assert result["ssim_nn_mean"] == pytest.approx(1.0, abs=1e-6)
    assert result["copy_threshold_pixel"] > 0  # the definition needs a positive threshold on real data


@pytest.mark.slow
def test_noise_is_not_a_copy(data):
    images, _, rare = data
    noise = np.random.default_rng(1).integers(0, 256, (30, 1, 28, 28), dtype=np.uint8)
    result = A.audit(noise, rare, images)
    assert result["copy_rate"] == 0.0 and result["copy_rate_feature"] == 0.0
    assert result["precision"] == 0.0 and result["coverage"] == 0.0
    assert result["ssim_nn_mean"] < 0.2


def test_nearest_neighbours_match_brute_force(data):
    images, _, _ = data
    rng = np.random.default_rng(2)
    synthetic = np.clip(images[rng.choice(len(images), 25)].astype(int) + rng.integers(-40, 40, (25, 1, 28, 28)),
                        0, 255).astype(np.uint8)
    refs = images[:200]
    scale = A.pixel_scale(refs)
    idx, dist = A.nearest_neighbours(synthetic, refs, scale=scale, chunk=64)  # several chunks on both sides
    bf_idx, bf_dist = brute_force_nn(synthetic.astype(np.float64) / 255.0, refs.astype(np.float64) / 255.0)
    np.testing.assert_array_equal(idx, bf_idx)
    np.testing.assert_allclose(dist, bf_dist / np.sqrt(28 * 28), rtol=1e-10)  # RMS difference in [0, 1] units


def test_copy_threshold_is_fifth_percentile_of_train_nn(data):
    images, _, _ = data
    train = images[:150]
    scale = A.pixel_scale(train)
    threshold, dist = A.copy_threshold(train, scale=scale)
    _, bf = brute_force_nn(train.astype(np.float64) * scale, train.astype(np.float64) * scale, exclude_self=True)
    np.testing.assert_allclose(np.sort(dist), np.sort(bf), rtol=1e-10)
    assert threshold == pytest.approx(np.percentile(bf, 5.0), rel=1e-10)
    planted = np.concatenate([train[:3], train[:3]])  # exact duplicates in the training set: distance 0, not skipped
    _, dup = A.copy_threshold(planted)
    assert dup.tolist() == [0.0] * 6


def test_fid_of_a_set_against_itself_is_zero_and_matches_scipy(data, extractor):
    images, labels, rare = data
    from scipy import linalg

    f_rare = A.extract_features(extractor, rare)
    f_common = A.extract_features(extractor, images[labels == 1][:147])
    same = A.fid_kid(f_rare, f_rare)
    assert abs(same["fid"]) < 1e-3 and abs(same["kid_mean"]) < 1e-3
    other = A.fid_kid(f_common, f_rare)
    mu1, mu2 = f_rare.mean(0), f_common.mean(0)
    s1, s2 = np.cov(f_rare, rowvar=False), np.cov(f_common, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    reference = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean)
    assert other["fid"] == pytest.approx(reference, rel=1e-3)
    assert other["fid"] > 100 * max(abs(same["fid"]), 1e-6)


def brute_force_prdc(real, fake, k):
    def dist(a, b):
        return np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1))

    r_rad = np.sort(dist(real, real), axis=1)[:, k]
    f_rad = np.sort(dist(fake, fake), axis=1)[:, k]
    d = dist(real, fake)
    precision = np.mean([any(d[i, j] <= r_rad[i] for i in range(len(real))) for j in range(len(fake))])
    recall = np.mean([any(d[i, j] <= f_rad[j] for j in range(len(fake))) for i in range(len(real))])
    density = sum(d[i, j] <= r_rad[i] for i in range(len(real)) for j in range(len(fake))) / (k * len(fake))
    coverage = np.mean([d[i].min() <= r_rad[i] for i in range(len(real))])
    return precision, recall, density, coverage


def test_prdc_matches_brute_force():
    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(40, 6)), rng.normal(0.5, 1.2, size=(30, 6))
    got = A.prdc(real, fake, k=5)
    expected = brute_force_prdc(real, fake, 5)
    assert [got[k] for k in ("precision", "recall", "density", "coverage")] == pytest.approx(expected)
    same = A.prdc(real, real, k=5)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0


@pytest.mark.slow
def test_audit_columns_and_files(copies_audit, data):
    from PIL import Image

    picks, out, result = copies_audit
    for key in ("fid", "kid_mean", "kid_std", "precision", "recall", "density", "coverage", "nn_pixel_mean",
                "nn_feature_mean", "copy_rate", "ssim_nn_mean", "feature_extractor"):
        assert key in result
    assert all(isinstance(v, (int, float, str)) for v in result.values())  # flat record columns
    assert result["feature_extractor"] == "random_cnn_v1" or "inception" in result["feature_extractor"]
    assert result["n_synthetic"] == 40 and result["n_train"] == 546
    pairs = Image.open(out / A.CLOSEST_PAIRS_PNG)
    assert pairs.size[0] > 8 * 28 and pairs.size[1] > 4 * 28
    Image.open(out / A.REAL_VS_SYNTHETIC_PNG).verify()
    nearest = np.load(out / A.NEAREST_NPZ)
    images = data[0]
    # the nearest image of each copy is identical to it (BreastMNIST has near-duplicates, so compare content)
    np.testing.assert_array_equal(images[nearest["nn_pixel_index"]], images[picks])


def test_feature_extractor_is_fixed_and_offline(data):
    images, _, _ = data
    a, note = A.feature_extractor("auto", 1)
    b, _ = A.feature_extractor("random_cnn", 1)
    if A.inception_weights() is None:
        assert a.name == "random_cnn_v1"
        assert "torch-fidelity is not installed" in note or "no local Inception weights" in note
        with pytest.raises(ValueError, match="torch-fidelity"):
            A.feature_extractor("inception", 1)
    np.testing.assert_array_equal(A.extract_features(b, images[:8]), A.extract_features(b, images[:8]))
    assert A.extract_features(b, images[:8]).shape == (8, 240)
    with pytest.raises(ValueError, match="random_cnn"):
        A.feature_extractor("vgg", 1)


def test_bad_input_is_rejected(data):
    images, _, rare = data
    with pytest.raises(ValueError, match="uint8"):
        A.audit(images.astype(np.float32), rare, images)
    with pytest.raises(ValueError, match="shapes differ"):
        A.audit(np.zeros((4, 1, 32, 32), np.uint8), rare, images)
