"""The synthetic-image audit against independent computations: nearest neighbours, copy rate, FID, PRDC, files."""

import numpy as np
import pytest

from benchmark.generators import audit as A
from tests.generator_helpers import breastmnist, one_torch_thread  # noqa: F401 (fixtures)

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


# --- unbiased KID with its standard error, the FID minimum, the reference set, the in-domain extractor ----------


def test_kid_unbiased_matches_torchmetrics_and_a_leave_one_out_loop():
    import torch
    from torchmetrics.image.kid import poly_mmd

    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(30, 8)), rng.normal(0.3, 1.0, size=(30, 8))
    value, se = A.kid_unbiased(x, y)
    assert value == pytest.approx(float(poly_mmd(torch.from_numpy(x), torch.from_numpy(y))), rel=1e-10)

    def mmd(a, b):  # unbiased MMD² written out, unequal sizes allowed
        k = lambda u, v: (u @ v.T / u.shape[1] + 1.0) ** 3  # noqa: E731
        kaa, kbb = k(a, a), k(b, b)
        n, m = len(a), len(b)
        return ((kaa.sum() - np.trace(kaa)) / (n * (n - 1)) + (kbb.sum() - np.trace(kbb)) / (m * (m - 1))
                - 2 * k(a, b).mean())

    y = y[:23]
    value, se = A.kid_unbiased(x, y)
    assert value == pytest.approx(mmd(x, y), rel=1e-10)
    loo_x = np.array([mmd(np.delete(x, i, 0), y) for i in range(len(x))])
    loo_y = np.array([mmd(x, np.delete(y, j, 0)) for j in range(len(y))])
    jack = (len(x) - 1) / len(x) * ((loo_x - loo_x.mean()) ** 2).sum() \
        + (len(y) - 1) / len(y) * ((loo_y - loo_y.mean()) ** 2).sum()
    assert se == pytest.approx(np.sqrt(jack), rel=1e-8)
    assert np.isnan(A.kid_unbiased(x[:2], y)[0])


def test_fid_only_above_its_minimum_reference_size():
    rng = np.random.default_rng(5)
    small = A.distribution_metrics(rng.normal(size=(300, 10)), rng.normal(size=(19, 10)))
    assert small["fid_min_n"] == 20 and np.isnan(small["fid"])
    assert small["fid_note"].startswith("FID not reported: the reference set has 19 images, below the minimum 2 × 10")
    assert np.isfinite(small["kid"]) and small["kid_se"] > 0
    enough = A.distribution_metrics(rng.normal(size=(300, 10)), rng.normal(size=(20, 10)))
    assert np.isfinite(enough["fid"]) and enough["fid_note"].startswith("FID reported")


@pytest.fixture(scope="module")
def domain(breastmnist, tmp_path_factory):
    """The in-domain extractor at its default config, trained once on BreastMNIST's training split."""
    from benchmark.generators import extractor as E

    images, labels = breastmnist
    ident = E.identity({"name": "breastmnist-test"}, 28, "sha-of-test", labels, None, E.resolve({}))
    root = tmp_path_factory.mktemp("extractors")
    net, record, trained = E.ensure_extractor(root, images, labels, 2, ident)
    return net, record, trained, root, ident


@pytest.mark.slow
def test_domain_extractor_is_trained_once_and_reused(domain, breastmnist):
    from benchmark.generators import extractor as E

    net, record, trained, root, ident = domain
    assert trained and record["key"] == E.extractor_key(ident) and record["feature_dim"] == 64
    assert record["steps"] == 100 and record["train_balanced_accuracy"] > 0.8  # 20 epochs of 5 batches of 128
    record_file = root / record["key"] / E.RECORD_FILE
    mtime = record_file.stat().st_mtime_ns
    again, record2, trained2 = E.ensure_extractor(root, *breastmnist, 2, ident)
    assert not trained2 and record2 == record and record_file.stat().st_mtime_ns == mtime
    images = breastmnist[0][:16]
    np.testing.assert_allclose(A.extract_features(again, images), A.extract_features(net, images), atol=1e-6)
    assert sorted(p.name for p in (root / record["key"]).iterdir()) == [E.RECORD_FILE, E.WEIGHTS_FILE]


@pytest.mark.slow
@pytest.mark.parametrize("space,other_factor", [("random_cnn", 3), ("domain", 50)])
def test_real_vs_real_is_near_zero_and_far_below_noise_and_the_other_class(space, other_factor, domain, data):
    """One half of the rare class (malignant: 73 of its 147 training images) against the disjoint other half,
    against uniform noise (74 images) and against the other class (all 399 benign training images), on both
    feature spaces. The fixed random CNN barely tells benign from malignant (KID 0.0031 ± 0.0014 against a
    real-vs-real floor of 0.0007); the in-domain classifier separates them by two orders of magnitude more."""
    images, labels, rare = data
    module = domain[0] if space == "domain" else A.feature_extractor("random_cnn", 1)[0]
    order = np.random.default_rng(0).permutation(len(rare))
    half_a, half_b = rare[order[:73]], rare[order[73:]]
    noise = np.random.default_rng(1).integers(0, 256, (74, 1, 28, 28), dtype=np.uint8)
    f = lambda x: A.extract_features(module, x)  # noqa: E731
    kid = {name: A.kid_unbiased(f(half_a), f(x)) for name, x in (("real", half_b), ("noise", noise),
                                                                  ("other", images[labels == 1]))}
    print(space, {k: f"{v[0]:.5f} ± {v[1]:.5f}" for k, v in kid.items()})
    real, real_se = kid["real"]
    assert abs(real) <= 2 * real_se  # an unbiased estimate of 0: within its noise
    floor = abs(real) + 2 * real_se
    assert kid["noise"][0] > 50 * floor and kid["other"][0] > other_factor * floor
    assert kid["noise"][0] > kid["other"][0]


@pytest.mark.slow
def test_audit_reports_both_feature_spaces_against_the_reference_set(domain, data):
    images, labels, rare = data
    fit_rare = rare[:20]
    synthetic = np.clip(rare[20:60].astype(int) + np.random.default_rng(3).integers(-20, 20, (40, 1, 28, 28)),
                        0, 255).astype(np.uint8)
    result = A.audit(synthetic, fit_rare, np.concatenate([fit_rare, images[labels == 1]]), reference=rare,
                     domain_extractor=domain[0], domain_info={"extractor_key": domain[1]["key"]})
    assert result["reference_n"] == 147 and result["n_real_rare"] == 20 and result["fit_n"] == 20 + 399
    assert result["domain_feature_extractor"] == "domain_cnn_v1" and result["domain_feature_dim"] == 64
    assert result["domain_extractor_key"] == domain[1]["key"]
    assert np.isnan(result["fid"]) and "below the minimum 2 × 240" in result["fid_note"]  # 40 synthetic images
    for key in ("kid", "kid_se", "kid_mean", "kid_std", "precision", "coverage", "domain_kid", "domain_kid_se",
                "domain_precision", "domain_coverage", "domain_fid_note"):
        assert key in result and isinstance(result[key], (int, float, str))
    # the distribution columns use the reference set: the same as computing them directly on its features
    module = A.feature_extractor("random_cnn", 1)[0]
    direct = A.kid_unbiased(A.extract_features(module, synthetic), A.extract_features(module, rare))
    assert (result["kid"], result["kid_se"]) == pytest.approx(direct)


def test_a_bad_audit_extractor_setting_is_refused_before_any_job(tmp_path, monkeypatch):
    from pathlib import Path

    from benchmark.core.errors import UserError
    from benchmark.plan.grid import Grid, expand
    from benchmark.plan.checks import check_generator_configs
    from tests.registry_helpers import register_entry

    small = Path(__file__).resolve().parent.parent / "registry" / "generators" / "dcgan_small.yaml"
    for name, setting in (("dcgan_typo", "max_step"), ("dcgan_ok", "max_steps")):
        register_entry(tmp_path, monkeypatch, "generator", name,
                       f"include: {small}\nconfig: {{audit_extractor: {{{setting}: 3}}}}\n")

    def jobs(generator):
        return expand(Grid("t", None, {"dataset": ["breastmnist"], "generator": [generator], "backbone": ["resnet18"],
                                       "rare_count": [20]}, [], [], {}, "test"), resolve=False)

    with pytest.raises(UserError, match="'dcgan_typo'.*audit_extractor: unknown config key.*'max_step' .did you mean "
                                        "'max_steps'.*Nothing was started"):
        check_generator_configs(jobs("dcgan_typo"))
    check_generator_configs(jobs("dcgan_ok"))
