"""Class-conditional DCGAN at the dataset's resolution: BCE with one-sided label smoothing + feature matching.

Architecture (derived from the image size S, no per-size config): S is halved while it is even and larger than 4,
giving a base size b and n upsamplings (28 -> 7 with n = 2; 32 -> 4, n = 3; 64 -> 4, n = 4; 128 -> 4, n = 5;
224 -> 7, n = 5), so both networks gain a stride-2 block per doubling of the side; the fit log records b and n.

- Generator: [z ; embed(class)] -> ConvTranspose(b×b) -> n-1 × [ConvTranspose(4, 2, 1), BatchNorm, ReLU]
  -> ConvTranspose(4, 2, 1) -> tanh; channels ngf·2^(n-1) halving to ngf.
- Discriminator: Conv(4, 2, 1), LeakyReLU(0.2) -> n-1 × [Conv(4, 2, 1), BatchNorm, LeakyReLU(0.2)]; the flattened
  last activations are its features f(x); logit = w·f(x) + <embed(class), f(x)> (projection discriminator,
  Miyato & Koyama 2018).
- Losses: D: BCE(D(real), 0.9) + BCE(D(fake), 0) (one-sided label smoothing, Salimans et al. 2016).
  G: BCE(D(fake), 1) + feature_matching_weight · ||mean f(real) - mean f(fake)||² (feature matching, same paper)
  [+ perceptual_weight · ||mean VGG(real) - mean VGG(fake)||² when local VGG weights are configured].
- Batches are class-balanced (``balanced: true``) so the rare class is seen as often as the others; generated
  labels are drawn uniformly.
- DiffAugment (``diffaugment``, Zhao et al. 2020; :mod:`benchmark.generators.diffaugment`): with a policy such as
  ``"color,translation,cutout"`` every batch goes through it before the discriminator — real and generated, in the
  discriminator update and in the generator update (adversarial and feature-matching terms; the real batch's draw
  of the discriminator update is reused for its features) — with fresh per-image parameters from a generator
  seeded by the fit seed. On one-channel images its saturation step is the identity. Off (null) by default: the
  fit is then exactly the one without the option. The perceptual loss compares un-augmented images.
Sampling runs the generator in eval mode (BatchNorm running statistics), so a sample does not depend on ``n``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from benchmark.generators._common import (
    GeneratorConfigError, check_class_index, check_training_data, choose_device, class_balanced_probabilities,
    resolve_config, save_grid, to_signed, to_uint8
)
from benchmark.generators.base import Generator
from benchmark.generators.diffaugment import parse_policy

DEFAULTS = {
    "steps": 2000,
    "batch_size": 64,
    "lr": 2e-4,
    "betas": [0.5, 0.999],
    "nz": 64,
    "ngf": 64,
    "ndf": 64,
    "embed_dim": 16,
    "real_label": 0.9,
    "feature_matching_weight": 1.0,
    "balanced": True,
    "diffaugment": None,       # DiffAugment policy, e.g. "color,translation,cutout"; null or "" = off
    "perceptual_weight": 0.1,
    "vgg_weights": None,       # local file (safetensors, or a torch state dict) of torchvision VGG16 `features`
    "vgg_layers": 9,           # vgg16.features[:9] = up to relu2_2; only these weights need to be in the file
    "grid_every": 500,         # steps between fixed-noise grids (and one at the end) when fit() gets out_dir
    "grid_columns": 8,
    "log_every": 50,
    "device": None,
}


def architecture(size: int) -> tuple[int, int]:
    """(base size, number of stride-2 upsamplings) for a square image of side ``size``."""
    base, n = size, 0
    while base % 2 == 0 and base > 4:
        base //= 2
        n += 1
    if n < 2:
        raise GeneratorConfigError(
            f"DCGAN: image size {size} cannot be built from stride-2 upsamplings (need a side like 28, 32, 64, 128).")
    return base, n


def _build_networks(num_classes: int, image_shape: tuple, cfg: dict):
    from benchmark.generators.dcgan_nets import ConditionalGenerator, ProjectionDiscriminator, dcgan_init

    channels, height, width = image_shape
    if height != width:
        raise GeneratorConfigError(f"DCGAN: square images only, got {height}×{width}.")
    base, n = architecture(height)
    g = ConditionalGenerator(num_classes, channels, base, n, int(cfg["nz"]), int(cfg["ngf"]), int(cfg["embed_dim"]))
    d = ProjectionDiscriminator(num_classes, channels, base, n, int(cfg["ndf"]))
    g.apply(dcgan_init)
    d.features.apply(dcgan_init)
    return g, d


def _perceptual_network(cfg: dict, channels: int, device):
    """(module or None, reason): VGG16 features from local weights, or None with why the loss is off."""
    if not cfg["perceptual_weight"]:
        return None, "perceptual loss off: perceptual_weight is 0"
    if not cfg["vgg_weights"]:
        return None, "perceptual loss off: no local VGG weights configured (config vgg_weights); nothing is downloaded"
    path = Path(cfg["vgg_weights"]).expanduser()
    if not path.is_file():
        return None, f"perceptual loss off: VGG weights not found at {path}"
    import torch
    from torchvision.models.vgg import cfgs, make_layers

    from benchmark.generators.dcgan_nets import PerceptualFeatures

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k.removeprefix("features."): v for k, v in state.items() if not k.startswith("classifier.")}
    features = make_layers(cfgs["D"])[: int(cfg["vgg_layers"])]  # VGG16's `features`, without its classifier
    missing, _ = features.load_state_dict(state, strict=False)
    if missing:
        return None, f"perceptual loss off: {path} lacks VGG16 feature weights {', '.join(missing[:4])}"
    features.eval().requires_grad_(False).to(device)
    return PerceptualFeatures(features, device), f"perceptual loss on: VGG16 features[:{cfg['vgg_layers']}] from {path}"


class DCGAN(Generator):
    """Class-conditional DCGAN; see the module docstring for architecture and losses, ``DEFAULTS`` for the config."""

    artifact_class, defaults, weight_names = "DCGAN", DEFAULTS, ("generator",)

    def __init__(self, num_classes: int, image_shape=(1, 28, 28), **config):
        super().__init__(num_classes, image_shape, **config)
        self.cfg = resolve_config("DCGAN", DEFAULTS, config)
        if len(self.image_shape) != 3:
            raise GeneratorConfigError(f"DCGAN: image_shape must be (C, H, W), got {self.image_shape}.")
        architecture(self.image_shape[1])
        for key in ("steps", "batch_size", "nz", "ngf", "ndf", "embed_dim"):
            if int(self.cfg[key]) <= 0:
                raise GeneratorConfigError(f"DCGAN: {key} must be a positive integer, got {self.cfg[key]!r}.")
        if not 0.0 < float(self.cfg["real_label"]) <= 1.0:
            raise GeneratorConfigError(f"DCGAN: real_label must lie in (0, 1], got {self.cfg['real_label']!r}.")
        for key in ("feature_matching_weight", "perceptual_weight"):
            if float(self.cfg[key]) < 0:
                raise GeneratorConfigError(f"DCGAN: {key} must be ≥ 0, got {self.cfg[key]!r}.")
        self.policy = ",".join(parse_policy(self.cfg["diffaugment"]))
        self.device = choose_device(self.cfg["device"])
        self.generator = None
        self.discriminator = None

    def _build(self, seed: int):
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            g, d = _build_networks(self.num_classes, self.image_shape, self.cfg)
        self.generator, self.discriminator = g.to(self.device), d.to(self.device)

    def fixed_noise(self, per_class: int, seed: int = 0):
        """Noise and labels for a grid with one row per class (the same noise in every row)."""
        import torch

        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(per_class, int(self.cfg["nz"]), generator=gen).repeat(self.num_classes, 1)
        y = torch.arange(self.num_classes).repeat_interleave(per_class)
        return z.to(self.device), y.to(self.device)

    def fit(self, images: np.ndarray, labels: np.ndarray, seed: int, out_dir=None) -> dict:
        """Train from scratch; with ``out_dir`` write fixed-noise grids ``grid_step<k>.png`` there."""
        import torch

        labels = check_training_data(images, labels, self.image_shape, self.num_classes)
        cfg = self.cfg
        start = time.perf_counter()
        self._build(seed)
        g, d = self.generator, self.discriminator
        perceptual, perceptual_reason = _perceptual_network(cfg, self.image_shape[0], self.device)
        opt_g = torch.optim.Adam(g.parameters(), lr=float(cfg["lr"]), betas=tuple(cfg["betas"]))
        opt_d = torch.optim.Adam(d.parameters(), lr=float(cfg["lr"]), betas=tuple(cfg["betas"]))
        data = to_signed(images, self.device)
        targets = torch.from_numpy(labels).to(self.device)
        present = np.unique(labels)
        probs = class_balanced_probabilities(labels, self.num_classes) if cfg["balanced"] else None
        rng = np.random.default_rng(seed)
        noise = torch.Generator().manual_seed(seed)
        batch, nz = int(cfg["batch_size"]), int(cfg["nz"])
        augment = self._augmentation(seed)
        fixed = self.fixed_noise(int(cfg["grid_columns"]), seed) if out_dir else None
        grids = []
        log = {"steps": 0, "loss_d": [], "loss_g": [], "loss_fm": [], "loss_perceptual": [], "log_steps": [],
               "perceptual": perceptual_reason, "grids": grids}
        if self.policy:
            log["diffaugment"] = self.policy
        for step in range(1, int(cfg["steps"]) + 1):
            idx = torch.from_numpy(rng.choice(len(images), size=batch, replace=True, p=probs)).to(self.device)
            real, y_real = data[idx], targets[idx]
            z = torch.randn(batch, nz, generator=noise).to(self.device)
            y_fake = torch.from_numpy(rng.choice(present, size=batch)).to(self.device)
            fake = g(z, y_fake)
            loss_d, loss_g, loss_fm, loss_p = self._update(real, y_real, fake, y_fake, (opt_d, opt_g), augment,
                                                           perceptual)
            if step % int(cfg["log_every"]) == 0 or step == int(cfg["steps"]):
                log["log_steps"].append(step)
                log["loss_d"].append(loss_d.item())
                log["loss_g"].append(loss_g.item())
                log["loss_fm"].append(loss_fm.item())
                if perceptual is not None:
                    log["loss_perceptual"].append(loss_p.item())
            if out_dir and (step % int(cfg["grid_every"]) == 0 or step == int(cfg["steps"])):
                grids.append(str(self._save_grid(Path(out_dir) / f"grid_step{step:06d}.png", fixed)))
        log["steps"] = int(cfg["steps"])
        log["seconds"] = time.perf_counter() - start
        log["device"] = str(self.device)
        base, n_up = architecture(self.image_shape[1])
        log["architecture"] = {"base_size": base, "upsamplings": n_up}
        if not log["loss_perceptual"]:
            del log["loss_perceptual"]
        return log

    def _augmentation(self, seed: int):
        """The function every discriminator input passes through: DiffAugment with a generator seeded from ``seed``
        (its own stream: the noise and batch draws are those of a fit without it), or the identity when off."""
        if not self.policy:
            return lambda x: x
        import torch

        from benchmark.generators.diffaugment import diff_augment

        draws = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, 0xD1FF]).generate_state(1)[0]))
        return lambda x: diff_augment(x, self.policy, draws)

    def _update(self, real, y_real, fake, y_fake, optimizers, augment, perceptual):
        """One discriminator then one generator step; returns (loss_d, loss_g, loss_fm, loss_perceptual or None)."""
        import torch
        import torch.nn.functional as F

        d, cfg = self.discriminator, self.cfg
        opt_d, opt_g = optimizers
        real_seen = augment(real)
        logit_real, _ = d(real_seen, y_real)
        logit_fake, _ = d(augment(fake.detach()), y_fake)
        loss_d = (F.binary_cross_entropy_with_logits(logit_real, torch.full_like(logit_real, float(cfg["real_label"])))
                  + F.binary_cross_entropy_with_logits(logit_fake, torch.zeros_like(logit_fake)))
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()

        logit_fake, f_fake = d(augment(fake), y_fake)
        with torch.no_grad():
            _, f_real = d(real_seen, y_real)
        loss_adv = F.binary_cross_entropy_with_logits(logit_fake, torch.ones_like(logit_fake))
        loss_fm = (f_real.mean(0) - f_fake.mean(0)).pow(2).mean()
        loss_g = loss_adv + float(cfg["feature_matching_weight"]) * loss_fm
        loss_p = None
        if perceptual is not None:
            with torch.no_grad():
                p_real = perceptual(real).mean(0)
            loss_p = (p_real - perceptual(fake).mean(0)).pow(2).mean()
            loss_g = loss_g + float(cfg["perceptual_weight"]) * loss_p
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        return loss_d, loss_g, loss_fm, loss_p

    def _save_grid(self, path, fixed):
        import torch

        self.generator.eval()
        with torch.no_grad():
            images = to_uint8(self.generator(*fixed))
        self.generator.train()
        return save_grid(path, images, int(self.cfg["grid_columns"]))

    def _require_fitted(self):
        if self.generator is None:
            raise RuntimeError("DCGAN: call fit() or load() before sample()")

    def sample(self, n: int, class_index: int, seed: int, batch_size: int = 256) -> np.ndarray:
        import torch

        self._require_fitted()
        class_index = check_class_index(class_index, self.num_classes)
        noise = torch.Generator().manual_seed(seed)
        z = torch.randn(n, int(self.cfg["nz"]), generator=noise)
        was_training = self.generator.training
        self.generator.eval()
        out = []
        with torch.no_grad():
            for chunk in z.split(batch_size):
                y = torch.full((len(chunk),), class_index, dtype=torch.long, device=self.device)
                out.append(to_uint8(self.generator(chunk.to(self.device), y)))
        self.generator.train(was_training)
        return np.concatenate(out) if out else np.zeros((0, *self.image_shape), np.uint8)

    def sampling_weights(self) -> dict[str, dict]:
        """The generator's weights (the discriminator is not needed for sampling)."""
        self._require_fitted()
        return {"generator": self.generator.state_dict()}

    def restore_weights(self, tensors: dict[str, dict]) -> None:
        self._build(0)
        self.generator.load_state_dict(tensors["generator"])
        self.generator.eval()
