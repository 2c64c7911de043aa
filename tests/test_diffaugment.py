"""DiffAugment: each operation against its definition (numpy, planted images), gradients, seeding, and the DCGAN
fitting with it on real BreastMNIST (grey) and RetinaMNIST (RGB) with every discriminator input augmented."""

import numpy as np
import pytest
import torch

from benchmark.core import registry
from benchmark.generators import diffaugment as DA
from benchmark.generators._common import GeneratorConfigError
from benchmark.generators.dcgan import DCGAN
from tests.data_fixtures import require_data_file
from tests.generator_helpers import breastmnist, one_torch_thread  # noqa: F401 (fixtures)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TINY = {"batch_size": 16, "nz": 16, "ngf": 16, "ndf": 16, "embed_dim": 4, "log_every": 1}


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def signed_batch(n, c, h, w, seed=0, dtype=torch.float32):
    """Random images in (-1, 1) with no exact zeros (so a zero pixel can only come from the augmentation)."""
    x = torch.rand(n, c, h, w, generator=seeded(seed), dtype=torch.float64) * 1.8 - 0.9
    x = torch.where(x.abs() < 1e-3, torch.full_like(x, 0.5), x)
    return x.to(dtype)


@pytest.fixture(scope="module")
def retinamnist(real_data_dir):
    with np.load(require_data_file(real_data_dir, "retinamnist.npz")) as data:
        return data["train_images"].transpose(0, 3, 1, 2).copy(), data["train_labels"].reshape(-1).astype(np.int64)


def expected_cutout_mask(corner, h, w):
    """1 outside, 0 inside the square of side int(side/2 + 0.5) at ``corner`` (top, left), clipped: numpy."""
    ky, kx = int(h * 0.5 + 0.5), int(w * 0.5 + 0.5)
    mask = np.ones((h, w))
    top, left = int(corner[0]), int(corner[1])
    mask[max(top, 0):max(top + ky, 0), max(left, 0):max(left + kx, 0)] = 0
    return mask


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(5, 1, 28, 28), (4, 3, 28, 28), (3, 3, 32, 24)])
def test_shape_and_dtype_are_kept(shape, dtype):
    x = signed_batch(*shape, dtype=dtype)
    out = DA.diff_augment(x, DA.PAPER_POLICY, seeded(0))
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    assert not torch.equal(out, x)
    assert DA.diff_augment(x, None, seeded(0)) is x and DA.diff_augment(x, "", seeded(0)) is x


def test_translation_shifts_a_planted_image_by_the_drawn_offset():
    x = signed_batch(64, 3, 28, 28, seed=1)
    params = DA.draw("translation", 64, 28, 28, seeded(2))
    out = DA.apply(x, params).numpy()
    xs = x.numpy()
    for n, (dy, dx) in enumerate(params["translation"].tolist()):
        expected = np.zeros_like(xs[n])  # out[i, j] = x[i - dy, j - dx], 0 where that lies outside
        expected[:, max(dy, 0):28 + min(dy, 0), max(dx, 0):28 + min(dx, 0)] = \
            xs[n][:, max(-dy, 0):28 - max(dy, 0), max(-dx, 0):28 - max(dx, 0)]
        np.testing.assert_array_equal(out[n], expected)
    # the offsets: integers uniform over [-t, t], t = int(side / 8 + 0.5) = 4 at 28 px (and 3 at 24 px)
    many = DA.draw("translation", 9000, 28, 24, seeded(3))["translation"].numpy()
    assert set(many[:, 0]) == set(range(-4, 5)) and set(many[:, 1]) == set(range(-3, 4))
    counts = np.bincount(many[:, 0] + 4)
    assert counts.min() > 0.85 * 1000 and counts.max() < 1.15 * 1000


def test_cutout_zeroes_exactly_the_square_it_drew():
    x = signed_batch(200, 1, 28, 28, seed=4)
    params = DA.draw("cutout", 200, 28, 28, seeded(5))
    out = DA.apply(x, params).numpy()
    corners = params["cutout"].numpy()
    interior = 0
    for n in range(200):
        mask = expected_cutout_mask(corners[n], 28, 28)
        np.testing.assert_array_equal(out[n, 0] == 0, mask == 0)
        np.testing.assert_array_equal(out[n, 0][mask == 1], x.numpy()[n, 0][mask == 1])
        if 0 <= corners[n, 0] <= 14 and 0 <= corners[n, 1] <= 14:
            interior += 1
            assert (out[n, 0] == 0).mean() == 0.25  # a 14 × 14 square of a 28 × 28 image
    assert interior > 0
    # the mean area fraction over many draws against its exact value: centres uniform over 0..28 (k = 14 is even)
    k, side = 14, 28
    rows = [min(c - k // 2 + k, side) - max(c - k // 2, 0) for c in range(side + 1)]
    exact = np.mean(rows) ** 2 / side ** 2
    many = DA.draw("cutout", 20000, 28, 28, seeded(6))["cutout"]
    fraction = (~DA.cutout_mask(many, 28, 28)).double().mean().item()
    assert fraction == pytest.approx(exact, abs=0.003)


def test_colour_follows_its_definition_and_saturation_is_the_identity_on_grey():
    x = signed_batch(16, 3, 8, 8, seed=7, dtype=torch.float64)
    params = DA.draw("color", 16, 8, 8, seeded(8))
    b, s, c = (params[k].numpy()[:, None, None, None] for k in ("brightness", "saturation", "contrast"))
    assert (-0.5 <= b).all() and (b < 0.5).all() and (0 <= s).all() and (s < 2).all()
    assert (0.5 <= c).all() and (c < 1.5).all()
    y = x.numpy() + b
    y = (y - y.mean(axis=1, keepdims=True)) * s + y.mean(axis=1, keepdims=True)
    y = (y - y.mean(axis=(1, 2, 3), keepdims=True)) * c + y.mean(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(DA.apply(x, params).numpy(), y, rtol=0, atol=1e-12)

    grey = signed_batch(16, 1, 8, 8, seed=9, dtype=torch.float64)
    assert torch.equal(DA.apply(grey, {"saturation": params["saturation"]}), grey)
    g = grey.numpy() + b
    g = (g - g.mean(axis=(1, 2, 3), keepdims=True)) * c + g.mean(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(DA.apply(grey, params).numpy(), g, rtol=0, atol=1e-12)


def test_gradients_flow_to_the_generated_batch():
    # numerically: the full policy with fixed draws is differentiable in the images (finite differences)
    x = signed_batch(3, 3, 8, 8, seed=10, dtype=torch.float64).requires_grad_()
    params = DA.draw(DA.PAPER_POLICY, 3, 8, 8, seeded(11))
    assert torch.autograd.gradcheck(lambda t: DA.apply(t, params), (x,))
    # planted: through translation and cutout, d(sum out)/dx is 1 exactly at the pixels that land visible
    x = signed_batch(8, 1, 28, 28, seed=12).requires_grad_()
    params = DA.draw("translation,cutout", 8, 28, 28, seeded(13))
    DA.apply(x, params).sum().backward()
    for n, (dy, dx) in enumerate(params["translation"].tolist()):
        visible = expected_cutout_mask(params["cutout"][n].numpy(), 28, 28)
        expected = np.zeros((28, 28))  # input pixel (i, j) lands at (i + dy, j + dx)
        expected[max(-dy, 0):28 - max(dy, 0), max(-dx, 0):28 - max(dx, 0)] = \
            visible[max(dy, 0):28 + min(dy, 0), max(dx, 0):28 + min(dx, 0)]
        np.testing.assert_array_equal(x.grad[n, 0].numpy(), expected)
    # end to end: a generator's weights get gradients through the augmented images
    net = torch.nn.Sequential(torch.nn.Linear(4, 3 * 16 * 16), torch.nn.Tanh())
    fake = net(torch.randn(5, 4, generator=seeded(14))).view(5, 3, 16, 16)
    DA.diff_augment(fake, DA.PAPER_POLICY, seeded(15)).pow(2).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_a_seeded_augmentation_is_reproducible():
    x = signed_batch(6, 3, 28, 28, seed=16)
    first = DA.diff_augment(x, DA.PAPER_POLICY, seeded(17))
    assert torch.equal(first, DA.diff_augment(x, DA.PAPER_POLICY, seeded(17)))
    assert not torch.equal(first, DA.diff_augment(x, DA.PAPER_POLICY, seeded(18)))
    gen = seeded(17)  # one stream, two calls: fresh draws each time (real and fake batches do not share them)
    assert not torch.equal(DA.diff_augment(x, DA.PAPER_POLICY, gen), DA.diff_augment(x, DA.PAPER_POLICY, gen))


@pytest.mark.parametrize("policy", [None, "", "none", "off"])
def test_off_values(policy):
    assert DA.parse_policy(policy) == ()
    assert DCGAN(2, (1, 28, 28), diffaugment=policy).policy == ""


@pytest.mark.parametrize("policy,match", [("colour,cutout", "unknown part.*'colour'.*valid parts are color"),
                                          ("cutout,cutout", "once"), (["color"], "comma-separated string"),
                                          (1, "comma-separated string")])
def test_bad_policies_are_refused_when_the_generator_is_built(policy, match):
    with pytest.raises(GeneratorConfigError, match=match):
        DCGAN(2, (1, 28, 28), diffaugment=policy)


def test_entries_dcgan_stays_off_and_the_two_measured_arms_differ_only_in_the_policy():
    """dcgan keeps DiffAugment off (docs/benchmarks.md: it raised in-domain KID); the arms of the measurement,
    dcgan_no_diffaug and dcgan_diffaug, are dcgan with the policy set explicitly, at their own version 1, so a
    change of dcgan's default cannot change their keys."""
    dcgan, diffaug = registry.get("generator", "dcgan"), registry.get("generator", "dcgan_diffaug")
    plain = registry.get("generator", "dcgan_no_diffaug")
    assert "diffaugment" not in dcgan.config  # its job keys are unchanged (tests/test_layout.py)
    assert registry.create("generator", "dcgan", num_classes=2, image_shape=(1, 28, 28)).policy == ""
    assert {k: v for k, v in diffaug.config.items() if k != "diffaugment"} == dcgan.config
    assert {k: v for k, v in plain.config.items() if k != "diffaugment"} == dcgan.config
    assert plain.config["diffaugment"] is None and diffaug.version == plain.version == 1
    assert registry.create("generator", "dcgan_diffaug", num_classes=2, image_shape=(3, 28, 28)).policy == \
        "color,translation,cutout"
    assert registry.create("generator", "dcgan_no_diffaug", num_classes=2, image_shape=(3, 28, 28)).policy == ""


class WatchedDCGAN(DCGAN):
    """The DCGAN with a record of every batch its discriminator is given (a forward pre-hook)."""

    def _build(self, seed):
        super()._build(seed)
        self.seen = []
        self.discriminator.register_forward_pre_hook(lambda module, args: self.seen.append(args[0].detach().clone()))


def test_every_discriminator_input_is_augmented_with_its_own_draws(breastmnist):
    images, labels = breastmnist
    off = WatchedDCGAN(2, (1, 28, 28), steps=2, **TINY)
    off.fit(images, labels, seed=0)
    assert len(off.seen) == 8 and all((batch == 0).sum() == 0 for batch in off.seen)  # 4 calls per step
    on = WatchedDCGAN(2, (1, 28, 28), steps=2, diffaugment="cutout", **TINY)
    on.fit(images, labels, seed=0)
    assert len(on.seen) == 8
    for batch in on.seen:  # D real, D fake, G fake, G real (features): every image has its cut-out square
        zeros = (batch[:, 0] == 0).numpy()
        assert all(z.sum() >= 7 * 7 and z.any(1).sum() <= 14 and z.any(0).sum() <= 14 for z in zeros)
    real_d, fake_d, fake_g, real_g = [(b[:, 0] == 0) for b in on.seen[:4]]
    assert not torch.equal(real_d, fake_d) and not torch.equal(fake_d, fake_g)  # independent draws
    assert torch.equal(real_d, real_g)  # the real batch's draw of the D step is reused for its G-step features


@pytest.mark.parametrize("dataset", ["breastmnist", "retinamnist"])
def test_dcgan_fits_with_diffaugment_on_real_images(dataset, request):
    images, labels = request.getfixturevalue(dataset)
    channels, classes = images.shape[1], int(labels.max()) + 1
    fits = []
    for _ in range(2):  # the smoke entry (batch 32, 32-wide networks) at 10 steps, DiffAugment on
        model = registry.create("generator", "dcgan_small", num_classes=classes, image_shape=(channels, 28, 28),
                                steps=10, log_every=5, diffaugment=DA.PAPER_POLICY)
        log = model.fit(images, labels, seed=1)
        fits.append((log, model.sample(8, classes - 1, seed=2)))
    log, samples = fits[0]
    assert log["diffaugment"] == "color,translation,cutout" and log["steps"] == 10 and log["log_steps"] == [5, 10]
    assert np.isfinite(log["loss_d"]).all() and np.isfinite(log["loss_g"]).all()
    assert samples.shape == (8, channels, 28, 28) and samples.dtype == np.uint8
    np.testing.assert_array_equal(samples, fits[1][1])  # seeded: the same fit twice
    assert log["loss_d"] == fits[1][0]["loss_d"]
    plain = registry.create("generator", "dcgan_small", num_classes=classes, image_shape=(channels, 28, 28),
                            steps=10, log_every=5).fit(images, labels, seed=1)
    assert "diffaugment" not in plain and plain["loss_d"] != log["loss_d"]
