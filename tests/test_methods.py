"""Baseline methods: what each does to a cell's real training set."""

import numpy as np
import pytest

from benchmark.core import registry
from benchmark.core.training_set import TrainingSet, no_held_back_note


def real_set():
    labels = np.array([0] * 10 + [1] * 40)
    images = np.arange(50, dtype=np.uint8)[:, None, None, None].repeat(4, 2).repeat(4, 3)
    return TrainingSet(images, labels, np.zeros(50, dtype=bool))


def method(name):
    return registry.create("generator", name)


def test_none_returns_the_real_images_unchanged():
    real = real_set()
    assert method("none").build_training_set(real, 0, 0.0, 2, seed=1) is real


def test_class_weight_is_inverse_frequency_with_mean_one():
    out = method("class_weight").build_training_set(real_set(), 0, 0.0, 2, seed=1)
    expected = np.array([50 / 10 / 2, 50 / 40 / 2])
    assert out.class_weights == pytest.approx(expected / expected.mean())
    assert out.class_weights[0] / out.class_weights[1] == pytest.approx(4.0)


@pytest.mark.parametrize("ratio,extra", [(1, 10), (2, 20), (2.5, 25), (0, 0)])
def test_oversample_duplicates_rare_real_images_evenly(ratio, extra):
    real = real_set()
    out = method("oversample").build_training_set(real, 0, float(ratio), 2, seed=3)
    assert len(out.labels) == 50 + extra
    assert out.is_synthetic.sum() == extra and (out.labels[out.is_synthetic] == 0).all()
    duplicated = out.images[out.is_synthetic][:, 0, 0, 0]
    assert set(duplicated) <= set(range(10))
    if extra:
        counts = np.bincount(duplicated, minlength=10)
        assert counts.max() - counts.min() <= 1
    assert out.counts(2) == {"real_per_class": [10, 40], "synthetic_per_class": [extra, 0]}


# ------------------------------------------------------------------------------------ strong imbalance baselines


import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from scipy import stats as scipy_stats  # noqa: E402

from benchmark.core.errors import UserError  # noqa: E402
from benchmark.generators.imbalance import build_batch_transform, build_criterion, focal_loss, mixup_batch  # noqa: E402

LOGITS = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0], [-0.7, 1.5, 0.0], [0.3, 0.3, -2.0], [4.0, -3.0, 1.0]])
TARGETS = torch.tensor([0, 1, 1, 2, 0])


def np_log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def test_focal_entry_builds_the_paper_default_loss_and_keeps_the_images():
    real = real_set()
    out = method("focal").build_training_set(real, 0, 0.0, 2, seed=1)
    assert out.loss == {"name": "focal", "gamma": 2.0, "alpha": None}
    assert out.images is real.images and out.labels is real.labels and out.class_weights is None
    assert out.batch_transform is None and out.info == {"loss": out.loss}


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 5.0])
def test_focal_loss_equals_the_hand_computed_value(gamma):
    log_p = np_log_softmax(LOGITS.double().numpy())
    log_pt = log_p[np.arange(len(TARGETS)), TARGETS.numpy()]
    expected = np.mean(-((1.0 - np.exp(log_pt)) ** gamma) * log_pt)
    criterion = build_criterion({"name": "focal", "gamma": gamma, "alpha": None}, None, 0.0, "cpu")
    assert float(criterion(LOGITS, TARGETS)) == pytest.approx(expected, rel=1e-6)


def test_focal_with_gamma_zero_is_cross_entropy_also_with_label_smoothing():
    for smoothing in (0.0, 0.1):
        criterion = build_criterion({"name": "focal", "gamma": 0.0, "alpha": None}, None, smoothing, "cpu")
        assert float(criterion(LOGITS, TARGETS)) == pytest.approx(
            float(F.cross_entropy(LOGITS, TARGETS, label_smoothing=smoothing)), rel=1e-6)


def test_binary_softmax_focal_equals_torchvision_sigmoid_focal():
    from torchvision.ops import sigmoid_focal_loss

    z = torch.tensor([-2.0, -0.3, 0.0, 0.8, 3.1, 1.2])
    y = torch.tensor([0, 1, 1, 0, 1, 0])
    # softmax over (0, z) gives p(class 1) = sigmoid(z): the two-class softmax focal loss is the sigmoid one
    ours = focal_loss(torch.stack([torch.zeros_like(z), z], dim=1), y, gamma=2.0)
    theirs = sigmoid_focal_loss(z, y.float(), alpha=-1, gamma=2.0, reduction="mean")
    assert float(ours) == pytest.approx(float(theirs), rel=1e-6)


def test_focal_alpha_inverse_frequency_weights_each_sample_by_its_class():
    out = registry.get("generator", "focal").load()(gamma=2.0, alpha="inverse_frequency").build_training_set(
        real_set(), 0, 0.0, 2, seed=1)
    alpha = np.array(out.loss["alpha"])
    assert alpha == pytest.approx(method("class_weight").build_training_set(real_set(), 0, 0.0, 2, 1).class_weights,
                                  rel=1e-5)
    logits, targets = LOGITS[:, :2], torch.tensor([0, 1, 1, 0, 0])
    log_pt = np_log_softmax(logits.double().numpy())[np.arange(5), targets.numpy()]
    expected = np.mean(-alpha[targets.numpy()] * (1.0 - np.exp(log_pt)) ** 2 * log_pt)
    criterion = build_criterion(out.loss, None, 0.0, "cpu")
    assert float(criterion(logits, targets)) == pytest.approx(expected, rel=1e-5)


def test_logit_adjust_uses_the_training_prior_and_equals_the_hand_computation():
    out = method("logit_adjust").build_training_set(real_set(), 0, 0.0, 2, seed=1)
    assert out.loss == {"name": "logit_adjust", "tau": 1.0, "prior": [0.2, 0.8]}
    logits, targets = LOGITS[:, :2], torch.tensor([0, 1, 1, 0, 0])
    for tau in (1.0, 0.5):
        adjusted = logits.double().numpy() + tau * np.log([0.2, 0.8])
        expected = -np.mean(np_log_softmax(adjusted)[np.arange(5), targets.numpy()])
        criterion = build_criterion({**out.loss, "tau": tau}, None, 0.0, "cpu")
        assert float(criterion(logits, targets)) == pytest.approx(expected, rel=1e-6)
    # tau 0 is plain cross-entropy
    zero = build_criterion({**out.loss, "tau": 0.0}, None, 0.0, "cpu")
    assert float(zero(logits, targets)) == pytest.approx(float(F.cross_entropy(logits, targets)), rel=1e-6)


def test_default_criterion_is_the_weighted_cross_entropy_the_baselines_always_had():
    weights = np.array([2.0, 0.5], dtype=np.float32)
    criterion = build_criterion(None, weights, 0.0, "cpu")
    logits, targets = LOGITS[:, :2], torch.tensor([0, 1, 1, 0, 0])
    assert float(criterion(logits, targets)) == float(F.cross_entropy(logits, targets, weight=torch.tensor(weights)))
    with pytest.raises(ValueError, match="class_weights"):
        build_criterion({"name": "focal", "gamma": 2.0, "alpha": None}, weights, 0.0, "cpu")


def test_mixup_is_the_convex_combination_with_beta_lambda_and_a_batch_permutation():
    x = torch.arange(6 * 2 * 3 * 3, dtype=torch.float32).reshape(6, 2, 3, 3)
    labels = torch.tensor([0, 1, 0, 1, 1, 0])
    mixed, targets = mixup_batch(x, labels, 0.2, torch.Generator().manual_seed(7))
    # the same draws, reproduced independently: a uniform → the Beta(α, α) quantile (scipy.stats), a permutation
    replay = torch.Generator().manual_seed(7)
    u = float(torch.rand((), generator=replay, dtype=torch.float64))
    lam = scipy_stats.beta(0.2, 0.2).ppf(u)
    perm = torch.randperm(6, generator=replay)
    assert sorted(perm.tolist()) == list(range(6))
    assert torch.allclose(mixed, lam * x + (1 - lam) * x[perm], atol=1e-4)
    (w_a, y_a), (w_b, y_b) = targets
    assert w_a == pytest.approx(lam) and w_b == pytest.approx(1 - lam)
    assert torch.equal(y_a, labels) and torch.equal(y_b, labels[perm])


def test_mixup_loss_equals_cross_entropy_of_the_mixed_soft_targets():
    labels = TARGETS
    transform = build_batch_transform({"name": "mixup", "alpha": 0.2}, torch.Generator().manual_seed(3))
    _, targets = transform(torch.zeros(5, 1, 2, 2), labels)
    criterion = build_criterion(None, None, 0.0, "cpu")
    loss = sum(w * criterion(LOGITS, y) for w, y in targets)  # what train.py computes
    (lam, y_a), (_, y_b) = targets
    soft = lam * np.eye(3)[y_a.numpy()] + (1 - lam) * np.eye(3)[y_b.numpy()]
    expected = -np.mean((soft * np_log_softmax(LOGITS.double().numpy())).sum(axis=1))
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert float(loss) == pytest.approx(float(F.cross_entropy(LOGITS, torch.tensor(soft, dtype=torch.float32))),
                                        rel=1e-6)


def test_mixup_lambda_follows_beta_alpha_alpha():
    generator = torch.Generator().manual_seed(0)
    from benchmark.generators.imbalance import beta_sample

    draws = np.array([beta_sample(0.2, generator) for _ in range(4000)])
    assert ((0 <= draws) & (draws <= 1)).all()
    assert scipy_stats.kstest(draws, scipy_stats.beta(0.2, 0.2).cdf).pvalue > 0.01
    assert draws.var() == pytest.approx(1 / (4 * (2 * 0.2 + 1)), rel=0.1)  # Var Beta(a, a) = 1 / (4 (2a + 1))


def test_mixup_entry_sets_the_batch_transform_only():
    out = method("mixup").build_training_set(real_set(), 0, 0.0, 2, seed=1)
    assert out.batch_transform == {"name": "mixup", "alpha": 0.2} and out.loss is None


@pytest.mark.parametrize("name,config,message", [
    ("focal", {"gamma": -1}, "gamma must be a number ≥ 0"),
    ("focal", {"alpha": "balanced"}, "alpha must be null, 'inverse_frequency'"),
    ("focal", {"gama": 2}, "unknown config key"),
    ("logit_adjust", {"tau": "one"}, "tau must be a number"),
    ("mixup", {"alpha": 0}, "alpha must be a number > 0"),
])
def test_bad_method_configs_are_user_errors(name, config, message):
    entry = registry.get("generator", name)
    with pytest.raises(UserError, match=message):
        registry.create("generator", name, config={**entry.config, **config})


def test_method_configs_are_in_the_job_key():
    from benchmark.plan.grid import Grid, expand

    def key(name):
        return expand(Grid("t", None, {"dataset": ["breastmnist"], "generator": [name], "backbone": ["resnet18"]},
                           [], [], {}, "test"))[0]

    focal = key("focal")
    assert focal.entries["generator"]["config"]["gamma"] == 2.0
    assert key("mixup").entries["generator"]["config"]["alpha"] == 0.2
    assert key("logit_adjust").entries["generator"]["config"]["tau"] == 1.0
    assert len({key(n).key for n in ("none", "focal", "logit_adjust", "mixup")}) == 4


# --------------------------------------------------------------------------------------------------- real_extra

def held_back_set(n=25, rare_class=0):
    images = (100 + np.arange(n, dtype=np.uint8))[:, None, None, None].repeat(4, 2).repeat(4, 3)
    return TrainingSet(images, np.full(n, rare_class), np.zeros(n, dtype=bool))


@pytest.mark.parametrize("ratio,k", [(1, 10), (2, 20), (0.5, 5), (4, 25), ("balance", 25),
                                     ("real_percentage=80", 12)])
def test_real_extra_adds_the_first_k_held_back_real_images(ratio, k):
    real, pool = real_set(), held_back_set()
    out = method("real_extra").build_training_set(real, 0, ratio if isinstance(ratio, str) else float(ratio), 2,
                                                  seed=1, held_back=pool)
    wanted = {1: 10, 2: 20, 0.5: 5, 4: 40, "balance": 30, "real_percentage=80": 12}[ratio]  # 50 · (100/80 − 1)
    assert out.info == {"n_real_extra": k, "n_real_extra_available": 25, "n_real_extra_wanted": wanted}
    assert len(out.labels) == 50 + k and not out.is_synthetic.any()
    assert (out.images[:50] == real.images).all() and (out.images[50:] == pool.images[:k]).all()
    assert (out.labels[50:] == 0).all()
    assert out.counts(2) == {"real_per_class": [10 + k, 40], "synthetic_per_class": [0, 0]}


def test_real_extra_is_nested_across_ratios_and_empty_without_a_pool():
    real, pool = real_set(), held_back_set()
    m = method("real_extra")
    one = m.build_training_set(real, 0, 1.0, 2, seed=1, held_back=pool).images[50:]
    two = m.build_training_set(real, 0, 2.0, 2, seed=1, held_back=pool).images[50:]
    assert (two[:len(one)] == one).all()
    empty = held_back_set(0)
    out = m.build_training_set(real, 0, 2.0, 2, seed=1, held_back=empty)
    assert out.info["n_real_extra"] == 0 and out.info["n_real_extra_available"] == 0 and len(out.labels) == 50
    with pytest.raises(ValueError, match="held-back"):
        m.build_training_set(real, 0, 1.0, 2, seed=1)
    with pytest.raises(ValueError, match="other than the rare class"):
        m.build_training_set(real, 0, 1.0, 2, seed=1, held_back=held_back_set(5, rare_class=1))


def test_real_extra_entry_must_declare_needs_held_back(tmp_path, monkeypatch):
    from benchmark.generators.base import check_method_configs
    from tests.registry_helpers import register_entry

    register_entry(tmp_path, monkeypatch, "generator", "real_extra_bad",
                   "target: benchmark.generators.real_extra:RealExtra\nversion: 1\n"
                   "config: {kind: real_data, uses_synthetic_ratio: true}\n")
    with pytest.raises(UserError, match="real_extra_bad.*needs_held_back: true"):
        check_method_configs({"real_extra_bad": registry.get("generator", "real_extra_bad")})
    check_method_configs({"real_extra": registry.get("generator", "real_extra")})  # the shipped entry says it
    with pytest.raises(UserError, match="unknown config key"):
        registry.create("generator", "real_extra", config={"needs_held_back": True, "ratio": 3})


def test_grid_leaves_real_extra_out_at_rare_count_all_and_says_why():
    from benchmark.plan.grid import Grid, expand

    grid = Grid("t", None, {"dataset": ["breastmnist"], "generator": ["none", "real_extra"],
                            "backbone": ["resnet18"], "rare_count": ["all", 20, 10], "synthetic_ratio": [1, 2],
                            "seed": [0, 1, 2]}, [], [], {}, "test")
    left_out = []
    jobs = expand(grid, left_out=left_out)
    extra = [j for j in jobs if j.generator == "real_extra"]
    assert len(extra) == 2 * 2 * 3 and {j.rare_count for j in extra} == {20, 10}
    assert len([j for j in jobs if j.generator == "none"]) == 3 * 3
    assert left_out == [no_held_back_note("real_extra", 2 * 3)]
    assert expand(grid) == jobs  # the list is optional


def test_a_bad_method_config_stops_the_grid_before_any_job(tmp_path, monkeypatch):
    from benchmark.plan.grid import Grid, expand
    from tests.registry_helpers import register_entry

    register_entry(tmp_path, monkeypatch, "generator", "focal_bad",
                   "target: benchmark.generators.imbalance:Focal\nversion: 1\n"
                   "config: {kind: baseline, uses_synthetic_ratio: false, gamma: -2}\n")
    grid = Grid("t", None, {"dataset": ["breastmnist"], "generator": ["none", "focal_bad"], "backbone": ["resnet18"]},
                [], [], {}, "test")
    with pytest.raises(UserError, match=r"method 'focal_bad' .*gamma must be a number ≥ 0"):
        expand(grid, resolve=False)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_focal_gradient_stays_finite_on_saturated_logits(gamma):
    logits = torch.tensor([[40.0, -40.0], [0.3, 0.1]], requires_grad=True)
    focal_loss(logits, torch.tensor([0, 1]), gamma).backward()
    assert torch.isfinite(logits.grad).all()
