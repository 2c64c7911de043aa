"""Strong imbalance baselines: focal loss, logit-adjusted cross-entropy, mixup — methods and the losses they choose.

A method here leaves the real images as they are and sets ``TrainingSet.loss`` or ``TrainingSet.batch_transform``;
the one training function (``benchmark.run.train``) builds the criterion with :func:`build_criterion` and applies the
transform with :func:`build_batch_transform`. Torch is imported inside the functions only, so loading a method
(the registry, a dry run) stays light.
"""

from __future__ import annotations

import math

import numpy as np

from benchmark.core.errors import UserError
from benchmark.generators.base import Method, TrainingSet
from benchmark.generators.baselines import inverse_frequency_weights

LOSSES = ("cross_entropy", "focal", "logit_adjust")
BATCH_TRANSFORMS = ("mixup",)


def _number(name: str, value, minimum: float, strict: bool, method: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or (value <= minimum if strict else value < minimum):
        bound = f"> {minimum:g}" if strict else f"≥ {minimum:g}"
        raise UserError(f"{method}: config {name} must be a number {bound}, got {value!r}; fix the registry entry "
                        f"(registry/generators/{method}.yaml).")
    return float(value)


class _ConfiguredMethod(Method):
    """A method whose constructor takes named hyper-parameters (registry.create passes the entry's, less the
    harness keys)."""

    name = ""
    defaults: dict = {}
    numbers: dict = {}  # numeric hyper-parameter -> (minimum, strict): checked, then set as an attribute

    def __init__(self, **config):
        unknown = sorted(set(config) - set(self.defaults))
        if unknown:
            raise UserError(f"{self.name}: unknown config key(s) {', '.join(map(repr, unknown))}; valid keys: "
                            f"{', '.join(sorted(self.defaults))}.")
        super().__init__(**config)
        self.params = {**self.defaults, **{k: v for k, v in config.items() if k in self.defaults}}
        for key, (minimum, strict) in self.numbers.items():
            setattr(self, key, _number(key, self.params[key], minimum, strict, self.name))


class Focal(_ConfiguredMethod):
    """`focal`: multi-class softmax focal loss, −α_y (1 − p_y)^γ log p_y (Lin et al. 2017; γ = 2 their default).

    `alpha`: null (off, the default: no class weighting), "inverse_frequency" (the class_weight baseline's weights)
    or one weight per class. γ = 0 with alpha off is cross-entropy."""

    name = "focal"
    defaults = {"gamma": 2.0, "alpha": None}
    numbers = {"gamma": (0.0, False)}

    def __init__(self, **config):
        super().__init__(**config)
        alpha = self.params["alpha"]
        if not (alpha is None or alpha == "inverse_frequency" or (
                isinstance(alpha, list) and alpha and all(
                    isinstance(a, (int, float)) and not isinstance(a, bool) and a >= 0 for a in alpha))):
            raise UserError(f"focal: config alpha must be null, 'inverse_frequency' or a list of one weight ≥ 0 "
                            f"per class, got {alpha!r}.")
        self.alpha = alpha

    def build_training_set(self, real, rare_class, synthetic_ratio, num_classes, seed, held_back=None):
        alpha = self.alpha
        if alpha == "inverse_frequency":
            alpha = inverse_frequency_weights(real.labels, num_classes).round(6).tolist()
        elif alpha is not None:
            if len(alpha) != num_classes:
                raise UserError(f"focal: config alpha lists {len(alpha)} weight(s) but the dataset has "
                                f"{num_classes} classes.")
            alpha = [float(a) for a in alpha]
        loss = {"name": "focal", "gamma": self.gamma, "alpha": alpha}
        return TrainingSet(real.images, real.labels, real.is_synthetic, None, {"loss": loss}, loss=loss)


class LogitAdjust(_ConfiguredMethod):
    """`logit_adjust`: logit-adjusted cross-entropy, CE(f(x) + τ log π, y) with π the class prior of the job's
    training set (Menon et al. 2021, τ = 1 their default); predictions use the unadjusted logits."""

    name = "logit_adjust"
    defaults = {"tau": 1.0}
    numbers = {"tau": (0.0, False)}

    def build_training_set(self, real, rare_class, synthetic_ratio, num_classes, seed, held_back=None):
        counts = np.bincount(real.labels, minlength=num_classes)
        if (counts == 0).any():
            raise UserError(f"logit_adjust: class(es) {np.flatnonzero(counts == 0).tolist()} have no training "
                            "image, so their prior is 0 and log-prior undefined.")
        prior = (counts / counts.sum()).tolist()
        loss = {"name": "logit_adjust", "tau": self.tau, "prior": prior}
        return TrainingSet(real.images, real.labels, real.is_synthetic, None, {"loss": loss}, loss=loss)


class Mixup(_ConfiguredMethod):
    """`mixup`: each training batch is replaced by λ x + (1 − λ) x[perm], λ ~ Beta(α, α), perm a random
    permutation within the batch, and trained on the soft targets λ y + (1 − λ) y[perm] (Zhang et al. 2018;
    α = 0.2 their ImageNet setting). Applied after augmentation; validation and test images are never mixed."""

    name = "mixup"
    defaults = {"alpha": 0.2}
    numbers = {"alpha": (0.0, True)}

    def build_training_set(self, real, rare_class, synthetic_ratio, num_classes, seed, held_back=None):
        transform = {"name": "mixup", "alpha": self.alpha}
        return TrainingSet(real.images, real.labels, real.is_synthetic, None, {"batch_transform": transform},
                           batch_transform=transform)


# ---------------------------------------------------------------------------------------------------------- torch


def focal_loss(logits, targets, gamma: float, alpha=None, label_smoothing: float = 0.0):
    """Mean over the batch of −Σ_c t_c α_c (1 − p_c)^γ log p_c, t the (smoothed) one-hot target; with hard
    targets and no smoothing this is −α_y (1 − p_y)^γ log p_y. Computed in float32."""
    import torch.nn.functional as F

    log_p = F.log_softmax(logits.float(), dim=1)
    num_classes = logits.shape[1]
    target = F.one_hot(targets, num_classes).to(log_p.dtype)
    if label_smoothing:
        target = target * (1.0 - label_smoothing) + label_smoothing / num_classes
    # clamped away from 0: for 0 < γ < 1 the gradient of (1 − p)^γ is infinite at p = 1 (NaN once times log p)
    weight = (1.0 - log_p.exp()).clamp(min=1e-12).pow(gamma)
    if alpha is not None:
        weight = weight * alpha.to(log_p)[None, :]
    return -(target * weight * log_p).sum(dim=1).mean()


def build_criterion(loss: dict | None, class_weights, label_smoothing: float, device):
    """The training criterion ``criterion(logits, labels) -> scalar`` for a TrainingSet's `loss` spec (None:
    cross-entropy with the set's class weights, as the baselines always had)."""
    import torch

    weight = torch.as_tensor(class_weights, device=device) if class_weights is not None else None
    name = (loss or {}).get("name", "cross_entropy")
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known: {', '.join(LOSSES)}")
    if name == "cross_entropy":
        return torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)
    if weight is not None:
        raise ValueError(f"loss {name!r} does not take the training set's class_weights (use its own config)")
    if name == "focal":
        gamma = float(loss["gamma"])
        alpha = torch.tensor(loss["alpha"], dtype=torch.float32, device=device) if loss.get("alpha") else None
        return lambda logits, labels: focal_loss(logits, labels, gamma, alpha, label_smoothing)
    offset = float(loss["tau"]) * torch.log(torch.tensor(loss["prior"], dtype=torch.float32, device=device))
    cross_entropy = torch.nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    return lambda logits, labels: cross_entropy(logits.float() + offset, labels)


def beta_sample(alpha: float, generator) -> float:
    """λ ~ Beta(α, α) by inverting the CDF at a uniform drawn from `generator` (a torch.Generator, so the draw is
    part of the saved training state; torch.distributions.Beta cannot take a generator)."""
    import torch
    from scipy.special import betaincinv

    u = float(torch.rand((), generator=generator, dtype=torch.float64))
    return float(betaincinv(alpha, alpha, u))


def mixup_batch(x, labels, alpha: float, generator):
    """(mixed images, [(λ, labels), (1 − λ, labels[perm])]): λ x + (1 − λ) x[perm] with λ ~ Beta(α, α) and perm a
    permutation of the batch, both drawn from the CPU `generator`."""
    import torch

    lam = beta_sample(alpha, generator)
    perm = torch.randperm(len(labels), generator=generator).to(x.device)
    return lam * x + (1.0 - lam) * x[perm], [(lam, labels), (1.0 - lam, labels[perm])]


def build_batch_transform(transform: dict | None, generator):
    """None, or ``f(x, labels) -> (x, [(weight, labels), …])``: the loss is Σ weight · criterion(logits, labels)
    (for mixup, λ·CE(y_a) + (1 − λ)·CE(y_b), the cross-entropy of the mixed soft targets)."""
    if transform is None:
        return None
    if transform.get("name") not in BATCH_TRANSFORMS:
        raise ValueError(f"unknown batch transform {transform.get('name')!r}; known: {', '.join(BATCH_TRANSFORMS)}")
    alpha = float(transform["alpha"])
    return lambda x, labels: mixup_batch(x, labels, alpha, generator)
