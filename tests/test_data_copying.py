"""Meehan et al.'s data-copying test (benchmark.stats.data_copying) on planted Gaussian banks and real BreastMNIST
images, its Mann-Whitney z against scipy, its null distribution by simulation, and the audit's ct_* columns."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from benchmark.stats import data_copying as D
from tests.generator_helpers import breastmnist, one_torch_thread  # noqa: F401 (fixtures)

DIM = 8


def gaussian(rng, n, dim=DIM):
    return rng.standard_normal((n, dim))


def near_copies(train, m, rng, noise=0.05):
    """m points, each a random training point plus a small perturbation: a bank that copies its training set."""
    return train[rng.integers(0, len(train), m)] + noise * rng.standard_normal((m, train.shape[1]))


def test_near_copies_give_a_strongly_negative_ct_and_fresh_draws_a_value_near_zero():
    rng = np.random.default_rng(0)
    train, test = gaussian(rng, 20), gaussian(rng, 46)
    copied = D.data_copying_test(train, test, near_copies(train, 400, rng))
    fresh = D.data_copying_test(train, test, gaussian(rng, 400))
    far = D.data_copying_test(train, test, 2.0 * gaussian(rng, 400))  # too spread: farther than real data
    assert copied.n_cells == 4 and copied.cells_used >= 3  # 20 training, 46 test images: the documented rule
    assert copied.ct < -3 and copied.z < -5 and copied.p_value < 1e-6
    assert abs(fresh.z) < 2.5 and abs(fresh.ct) < 2 and 0.01 < fresh.p_value < 0.99
    assert far.ct > 3 and far.p_value > 0.999


def test_one_cell_ct_is_the_mann_whitney_z_of_scipy_on_brute_force_distances():
    rng = np.random.default_rng(1)
    train, test, generated = gaussian(rng, 15), gaussian(rng, 30), 0.9 * gaussian(rng, 50)
    result = D.data_copying_test(train, test, generated, n_cells=1)

    def nn(points):  # plain numpy: every pairwise distance, then the minimum
        return np.sqrt(((points[:, None, :] - train[None, :, :]) ** 2).sum(-1)).min(1)

    test_d, gen_d = nn(test), nn(generated)
    assert len(np.unique(np.concatenate([test_d, gen_d]))) == 80  # no ties: scipy's tie correction is moot
    mw = sps.mannwhitneyu(gen_d, test_d, alternative="less", method="asymptotic", use_continuity=True)
    z_scipy = sps.norm.ppf(mw.pvalue)
    assert D.mann_whitney_z(test_d, gen_d) == pytest.approx(z_scipy, abs=1e-9)
    assert result.ct == pytest.approx(z_scipy, abs=1e-9) and result.z == pytest.approx(result.ct)  # one cell: SD 1
    u = sum((g > t) + 0.5 * (g == t) for g in gen_d for t in test_d)  # U by counting pairs
    assert mw.statistic == pytest.approx(u)


def test_ct_is_the_test_share_weighted_mean_of_the_counted_cells():
    rng = np.random.default_rng(2)
    train, test = gaussian(rng, 40), gaussian(rng, 100)
    generated = np.concatenate([gaussian(rng, 200), 4.0 + gaussian(rng, 3)])  # a few points far off
    result = D.data_copying_test(train, test, generated, n_cells=5)
    cells = result.cells
    assert sum(c["n_train"] for c in cells) == 40 and sum(c["n_test"] for c in cells) == 100
    assert sum(c["n_generated"] for c in cells) == 203
    used = [c for c in cells if c["used"]]
    assert all(c["n_generated"] >= D.MIN_GENERATED_PER_CELL for c in used) and len(used) == result.cells_used
    assert all(not c["used"] for c in cells if c["n_generated"] < D.MIN_GENERATED_PER_CELL)
    w = np.array([c["n_test"] for c in used], float)
    zs = np.array([c["z_u"] for c in used])
    assert result.ct == pytest.approx(float(w @ zs / w.sum()))
    assert result.z == pytest.approx(result.ct / math.sqrt(((w / w.sum()) ** 2).sum()))
    assert result.tau == pytest.approx(D.MIN_GENERATED_PER_CELL / 203)


def test_under_the_null_the_standardised_ct_is_roughly_standard_normal():
    zs, cts = [], []
    for s in range(100):  # ~6 s on a busy 2-core CPU
        rng = np.random.default_rng(1000 + s)
        r = D.data_copying_test(gaussian(rng, 20, 4), gaussian(rng, 46, 4), gaussian(rng, 200, 4), seed=s)
        zs.append(r.z)
        cts.append(r.ct)
    zs = np.array(zs)
    assert abs(zs.mean()) < 0.3 and 0.8 < zs.std(ddof=1) < 1.2
    assert sps.kstest(zs, "norm").pvalue > 0.01
    assert np.mean(np.array(zs) < sps.norm.ppf(0.05)) < 0.12  # the one-sided 5 % test keeps roughly its size
    assert np.std(cts, ddof=1) < 0.85  # C_T itself: a weighted mean of ~4 cells' z, SD below 1


def test_number_of_cells_rule():
    assert D.number_of_cells(20, 46, 400) == 4      # RetinaMNIST at rare count 20
    assert D.number_of_cells(20, 127, 379) == 4     # BreastMNIST at rare count 20
    assert D.number_of_cells(100, 47, 800) == 4
    assert D.number_of_cells(500, 500, 5000) == D.MAX_CELLS
    assert D.number_of_cells(3, 6, 10) == 1


def test_too_small_samples_give_nan_with_a_reason_and_bad_input_is_refused():
    rng = np.random.default_rng(3)
    r = D.data_copying_test(gaussian(rng, 20), gaussian(rng, 3), gaussian(rng, 100))
    assert math.isnan(r.ct) and math.isnan(r.p_value) and "held-back" in r.note
    with pytest.raises(ValueError, match="feature dimensions differ"):
        D.data_copying_test(gaussian(rng, 20), gaussian(rng, 30, 5), gaussian(rng, 100))
    with pytest.raises(ValueError, match="2-D"):
        D.data_copying_test(gaussian(rng, 20)[0], gaussian(rng, 30), gaussian(rng, 100))
    with pytest.raises(ValueError, match="n_cells"):
        D.data_copying_test(gaussian(rng, 20), gaussian(rng, 30), gaussian(rng, 100), n_cells=21)


# ------------------------------------------------------------------------------------------------------------------
# Real BreastMNIST images, through the audit
# ------------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def malignant(breastmnist):
    """The 147 malignant training images in a seeded order: 20 'kept' (T), 60 'held back' (P), the rest unseen."""
    images, labels = breastmnist
    rare = images[labels == 0]
    return rare[np.random.default_rng(0).permutation(len(rare))]


@pytest.mark.usefixtures("one_torch_thread")
def test_real_breastmnist_copies_versus_held_out_images(malignant):
    from benchmark.generators import audit as A

    module, _ = A.feature_extractor("random_cnn", 1)
    kept, held_back, unseen = malignant[:20], malignant[20:80], malignant[80:]
    rng = np.random.default_rng(4)
    copies = kept[rng.integers(0, 20, 200)].astype(np.int16) + rng.integers(-3, 4, (200, 1, 28, 28))
    copies = np.clip(copies, 0, 255).astype(np.uint8)
    copied = A.data_copying_columns(kept, held_back, module, A.extract_features(module, copies))
    fresh = A.data_copying_columns(kept, held_back, module, A.extract_features(module, unseen))
    assert copied["ct_feature_extractor"] == "random_cnn_v1" and copied["ct_cells"] == 4
    assert copied["ct"] < -3 and copied["ct_p"] < 1e-4
    assert abs(fresh["ct_z"]) < 2.5 and fresh["ct_n_generated"] == len(unseen) and fresh["ct_n_test"] == 60


@pytest.mark.usefixtures("one_torch_thread")
def test_audit_adds_ct_columns_and_says_why_when_it_cannot(malignant, breastmnist):
    from benchmark.generators import audit as A

    images, _ = breastmnist
    kept, held_back = malignant[:20], malignant[20:80]
    bank = malignant[80:]
    with_held = A.audit(bank, kept, images[:200], held_back=held_back)
    assert set(A.CT_COLUMNS) <= set(with_held) and np.isfinite(with_held["ct"])
    assert with_held["ct_feature_extractor"] == with_held["feature_extractor"]  # no domain extractor: the generic one
    external = A.audit(bank, kept, images[:200])
    assert math.isnan(external["ct"]) and "external bank" in external["ct_note"]
    everything = A.audit(bank, kept, images[:200], held_back=malignant[:0])
    assert math.isnan(everything["ct"]) and everything["ct_n_test"] == 0 and "holds back no" in everything["ct_note"]
