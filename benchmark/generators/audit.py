"""Audit of a synthetic image set: FID/KID, precision/recall/density/coverage, memorization (copy rate, SSIM).

``audit(synthetic, real_rare, train_all, out_dir=None, reference=None, domain_extractor=None, held_back=None) ->
dict`` of flat record columns.

Feature space. FID and KID need an image embedding. Inception-v3 (the usual one) needs weights that cannot be
downloaded here, so ``feature_extractor="auto"`` uses it only when ``torch-fidelity`` is installed *and* its weights
file is on disk (``$GENMED_INCEPTION_WEIGHTS`` or ``<torch hub dir>/checkpoints/weights-inception-2015-12-05-
6726825d.pth``). Otherwise it uses ``random_cnn_v1``: a fixed, randomly initialised 4-layer CNN (widths 16-32-64-128,
3×3 convolutions, ReLU, 2×2 average pooling, input resized to 64×64), He-normal weights drawn from numpy's PCG64
with seed 2020 (stable across machines and torch versions), features = global average of each layer, 240 dims.
Randomly initialised embeddings are the fallback Naeem et al. (ICML 2020, "Reliable fidelity and diversity metrics
for generative models") show to rank generators sensibly on non-ImageNet data. Its numbers rank models against each
other on the same data; they are not comparable to Inception FIDs in the literature. A caller may pass any
``nn.Module`` (uint8 (N, C, H, W) -> (N, d), with a ``name`` attribute), e.g. a locally trained domain classifier.
The column ``feature_extractor`` names the one used and ``feature_extractor_note`` says why.

Reference set and fit set. The generator is fitted on the cell's kept training images only (the fit set: N images,
R of the rare class). Distribution metrics compare the synthetic set (M images) with the **reference set**: all
real rare-class images of the training split before rarity subsampling (``reference``; ``reference_n`` of them) —
evaluation only, and the same for every rare count of a dataset, so the figures are comparable across rare counts.
Memorisation checks (nearest neighbours, copy rate, SSIM, closest pairs) stay against the fit set, the images the
generator actually saw. ``fit_n`` = N, ``n_real_rare`` = R.

Two feature spaces. The unprefixed columns use the fixed extractor above (``feature_extractor``); with
``domain_extractor`` (the in-domain classifier of :mod:`benchmark.generators.extractor`) the same distribution
metrics are repeated in its features under ``domain_*`` columns (``domain_feature_extractor``,
``domain_extractor_key``, ``domain_kid`` …). ``domain_kid`` is the primary fidelity figure.

Definitions:
- ``kid`` (primary), ``kid_se``: the unbiased MMD² (Gretton et al. 2012; KID, Bińkowski et al. 2018) between the
  synthetic and reference features over all pairs of the two full sets, with the KID kernel
  k(x, y) = (x·y / d + 1)³ (torchmetrics' ``poly_kernel``), and its two-sample delete-one jackknife standard error
  (Arvesen 1969: Σ over both samples of (n − 1)/n · Σᵢ (θ₋ᵢ − θ̄)²). Sets larger than ``KID_MAX_N`` (2000) are
  subsampled (seeded). Unbiased: its expectation is 0 when both sets come from one distribution, at any n, so it
  can be negative. ``kid_mean`` / ``kid_std``: torchmetrics' KID, mean and standard deviation over 100 random
  subsets (kept for continuity; its std is the spread of a subset-size estimate, not a standard error).
- ``fid``: reported only when both sets hold at least ``fid_min_n`` = ``FID_MIN_PER_DIM`` (2) × the feature dim
  images (e.g. 480 for the 240-dim random CNN, 128 for the 64-dim in-domain classifier); otherwise NaN and
  ``fid_note`` says why. Below that the d×d covariance estimate is (near-)singular and FID's bias, which falls
  like d / n (Chong & Forsyth, CVPR 2020), dominates the comparison.
- ``precision / recall / density / coverage``: k-NN manifolds (k = 5) in feature space, Naeem et al. 2020; real =
  the reference set, fake = the synthetic set.
- ``nn_pixel``: for each synthetic image, the root-mean-square pixel difference (in [0, 1] units:
  ||a - b||₂ / sqrt(C·H·W) of images scaled to [0, 1]) to its nearest training image (of all N, every class).
  ``nn_feature``: the Euclidean distance to the nearest training image in feature space.
- ``copy_threshold_pixel``: the 5th percentile (numpy linear interpolation) of real-to-real nearest-neighbour
  distances: each training image's distance to its nearest *other* training image (by index, so exact duplicates
  in the training set count as 0). Computed over all N images as queries, or a fixed random subset of
  ``threshold_queries`` of them when N is larger (their neighbours are still searched among all N).
- ``copy_rate``: the share of synthetic images with ``nn_pixel <= copy_threshold_pixel`` — synthetic images closer
  to a training image than 95 % of training images are to their nearest neighbour. ``copy_rate_feature`` is the same
  in feature space. Exact copies always count (distance 0 ≤ threshold).
- ``ssim_nn``: SSIM (torchmetrics, Gaussian 11×11, σ = 1.5, data range 1, float32) between each synthetic image
  and its nearest training image in pixel space.
- ``ct`` (data copying against held-back real images): Meehan, Chaudhuri & Dasgupta's (AISTATS 2020) three-sample
  C_T statistic (:mod:`benchmark.stats.data_copying`) with T = the fit set's rare-class images, P_n = ``held_back``
  (the cell's rare images that rarity removed, which the generator never saw), Q_m = the synthetic set; ≪ 0: the
  bank is closer to the generator's training images than fresh real images are. ``ct_z`` = C_T over its null SD,
  ``ct_p`` its one-sided p (small = copying), ``ct_cells`` the k-means cells (rule in that module),
  ``ct_cells_used`` those with enough synthetic images (τ = ``ct_tau``), ``ct_n_train/test/generated``.
  Computed in the in-domain features when ``domain_extractor`` is given, else in the generic extractor's;
  ``ct_feature_extractor`` names the one used. NaN with ``ct_note`` saying why when ``held_back`` is None (the
  caller does not know what the generator saw: an external bank) or empty (rare count ``all``).
With ``out_dir``: ``audit_closest_pairs.png`` (the 16 synthetic images with the smallest ``nn_pixel``, each above
its nearest training image), ``audit_real_vs_synthetic.png`` (top rows real rare-class images, bottom rows synthetic)
and ``audit_nearest.npz`` (per synthetic image: nearest training index and distances, pixel and feature, and SSIM).
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path

import numpy as np

from benchmark.generators._common import save_grid

INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
COPY_PERCENTILE = 5.0
PRDC_K = 5
FID_MIN_PER_DIM = 2   # FID needs at least this many images per feature dimension in both sets
KID_MAX_N = 2000      # larger sets are subsampled (seeded) for the full-sample KID and its jackknife
CLOSEST_PAIRS_PNG = "audit_closest_pairs.png"
REAL_VS_SYNTHETIC_PNG = "audit_real_vs_synthetic.png"
NEAREST_NPZ = "audit_nearest.npz"


def _torch_modules():
    import torch
    from torch import nn

    return torch, nn


class RandomConvFeatures:
    """Factory for the ``random_cnn_v1`` embedding (see the module docstring); ``build(C)`` returns the module."""

    name = "random_cnn_v1"
    widths = (16, 32, 64, 128)
    input_size = 64
    seed = 2020

    @classmethod
    def build(cls, in_channels: int):
        torch, _ = _torch_modules()
        from benchmark.generators.feature_nets import RandomConvNet

        rng = np.random.default_rng(cls.seed)
        weights, fan_in = [], in_channels
        for width in cls.widths:
            w = rng.standard_normal((width, fan_in, 3, 3)) * np.sqrt(2.0 / (fan_in * 9))
            weights.append(torch.from_numpy(w.astype(np.float32)))
            fan_in = width
        return RandomConvNet(weights, cls.input_size, cls.name).eval()


def inception_weights() -> Path | None:
    """The local torch-fidelity Inception weights file, or None when it or torch-fidelity is missing."""
    if importlib.util.find_spec("torch_fidelity") is None:
        return None
    env = os.environ.get("GENMED_INCEPTION_WEIGHTS")
    if env:
        return Path(env) if Path(env).is_file() else None
    import torch

    path = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILE
    return path if path.is_file() else None


def feature_extractor(kind="auto", in_channels: int = 1):
    """(module, note): the embedding used by the audit. ``kind``: "auto", "random_cnn", "inception" or a module."""
    _, nn = _torch_modules()
    if isinstance(kind, nn.Module):
        return kind.eval(), "caller-supplied feature extractor"
    if kind not in ("auto", "random_cnn", "inception"):
        raise ValueError(f"feature_extractor must be 'auto', 'random_cnn', 'inception' or an nn.Module, got {kind!r}")
    if kind in ("auto", "inception"):
        path = inception_weights()
        if path is not None:
            from benchmark.generators.feature_nets import InceptionFeatures

            return InceptionFeatures(path).eval(), f"Inception-v3 weights found locally at {path}"
        if kind == "inception":
            raise ValueError("feature_extractor='inception' needs torch-fidelity and its weights on disk "
                             "($GENMED_INCEPTION_WEIGHTS or the torch hub checkpoints folder, "
                             f"{INCEPTION_WEIGHTS_FILE}); use 'auto' or 'random_cnn' offline")
        why = ("torch-fidelity is not installed" if importlib.util.find_spec("torch_fidelity") is None
               else "no local Inception weights")
        return RandomConvFeatures.build(in_channels), f"{why}: fixed random CNN (Naeem et al. 2020), seed 2020"
    return RandomConvFeatures.build(in_channels), "requested: fixed random CNN (Naeem et al. 2020), seed 2020"


def extract_features(module, images: np.ndarray, batch_size: int = 256, device=None):
    """(N, d) float64 numpy features of uint8 images (N, C, H, W)."""
    torch, _ = _torch_modules()
    if device is None:
        tensor = next(iter(module.parameters()), None)
        device = (tensor if tensor is not None else next(iter(module.buffers()), torch.empty(0))).device
    from benchmark.run.inference import map_batches

    out = [b.numpy() for b in map_batches(lambda batch: module(batch).double(), images, batch_size, device)]
    return np.concatenate(out) if out else np.zeros((0, getattr(module, "num_features", 0)))


def fid_kid(synthetic_features: np.ndarray, real_features: np.ndarray, seed: int = 0) -> dict:
    """FID and KID (torchmetrics) between two sets of precomputed features (N, d).

    The features are computed once per image set by the audit's extractor and handed to torchmetrics through a
    pass-through feature module, so FID, KID and the k-NN metrics share one embedding pass. KID uses 100 random
    subsets of ``min(1000, max(2, n // 2))`` images (n = the smaller set), drawn with torch seeded by ``seed``.
    """
    torch, _ = _torch_modules()
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    from benchmark.generators.feature_nets import PrecomputedFeatures

    result = {"fid": float("nan"), "kid_mean": float("nan"), "kid_std": float("nan")}
    if len(synthetic_features) < 2 or len(real_features) < 2:
        return result
    dim = int(np.shape(real_features)[1])

    subset = int(min(1000, max(2, min(len(synthetic_features), len(real_features)) // 2)))
    fid = FrechetInceptionDistance(feature=PrecomputedFeatures(dim), reset_real_features=True)
    with warnings.catch_warnings():  # "will save all extracted features": here they are already in memory
        warnings.simplefilter("ignore", UserWarning)
        kid = KernelInceptionDistance(feature=PrecomputedFeatures(dim), subsets=100, subset_size=subset,
                                      reset_real_features=True)
    for feats, is_real in ((real_features, True), (synthetic_features, False)):
        batch = torch.from_numpy(np.asarray(feats, dtype=np.float64))
        fid.update(batch, real=is_real)
        kid.update(batch, real=is_real)
    result["fid"] = float(fid.compute())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        kid_mean, kid_std = kid.compute()
    result["kid_mean"], result["kid_std"] = float(kid_mean), float(kid_std)
    return result


def kid_unbiased(x: np.ndarray, y: np.ndarray, seed: int = 0, max_n: int = KID_MAX_N) -> tuple[float, float]:
    """(unbiased MMD², jackknife standard error) of feature sets ``x`` (n, d) and ``y`` (m, d) with the KID kernel
    (torchmetrics ``poly_kernel``: (x·y / d + 1)³); see the module docstring. NaN when a set has fewer than 3 rows."""
    torch, _ = _torch_modules()
    from torchmetrics.image.kid import poly_kernel

    rng = np.random.default_rng(seed)
    sets = []
    for f in (x, y):
        f = np.asarray(f, dtype=np.float64)
        if len(f) > max_n:
            f = f[np.sort(rng.choice(len(f), max_n, replace=False))]
        sets.append(torch.from_numpy(f))
    fx, fy = sets
    n, m = len(fx), len(fy)
    if n < 3 or m < 3:
        return float("nan"), float("nan")
    kxx, kyy, kxy = poly_kernel(fx, fx), poly_kernel(fy, fy), poly_kernel(fx, fy)
    rx = kxx.sum(1) - kxx.diagonal()          # per-row sums without the diagonal
    ry = kyy.sum(1) - kyy.diagonal()
    a, b, c = rx.sum(), ry.sum(), kxy.sum()
    value = a / (n * (n - 1)) + b / (m * (m - 1)) - 2 * c / (n * m)
    # leave out x_i: its row and column leave the xx sum, its row the xy sum
    loo_x = (a - 2 * rx) / ((n - 1) * (n - 2)) + b / (m * (m - 1)) - 2 * (c - kxy.sum(1)) / ((n - 1) * m)
    loo_y = a / (n * (n - 1)) + (b - 2 * ry) / ((m - 1) * (m - 2)) - 2 * (c - kxy.sum(0)) / (n * (m - 1))
    var = (n - 1) / n * ((loo_x - loo_x.mean()) ** 2).sum() + (m - 1) / m * ((loo_y - loo_y.mean()) ** 2).sum()
    return float(value), float(var.sqrt())


def distribution_metrics(f_syn: np.ndarray, f_ref: np.ndarray, seed: int = 0) -> dict:
    """KID (full-sample, with SE), torchmetrics' subset KID, FID above its minimum n, PRDC: synthetic vs reference."""
    dim = int(np.shape(f_ref)[1]) if np.ndim(f_ref) == 2 else 0
    fid_min_n = FID_MIN_PER_DIM * dim
    kid, kid_se = kid_unbiased(f_syn, f_ref, seed=seed)
    result = {"kid": kid, "kid_se": kid_se, **fid_kid(f_syn, f_ref, seed=seed), "fid_min_n": fid_min_n}
    smaller = min(len(f_syn), len(f_ref))
    if smaller < fid_min_n:
        which = "reference" if len(f_ref) <= len(f_syn) else "synthetic"
        result["fid"] = float("nan")
        result["fid_note"] = (f"FID not reported: the {which} set has {smaller} images, below the minimum "
                              f"{FID_MIN_PER_DIM} × {dim} feature dims = {fid_min_n}; use kid")
    else:
        result["fid_note"] = f"FID reported: both sets have ≥ {fid_min_n} images ({FID_MIN_PER_DIM} × {dim} dims)"
    result.update(prdc(f_ref, f_syn))
    return result


def nearest_neighbours(queries: np.ndarray, refs: np.ndarray, exclude_self: np.ndarray | None = None,
                       scale: float = 1.0, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """For each row of ``queries`` the index of its nearest row of ``refs`` and the exact Euclidean distance.

    Rows (any numeric dtype, any trailing shape) are flattened and compared as float64 vectors times ``scale``,
    chunk by chunk (uint8 images are never held as float64 all at once). ``exclude_self[i]`` = the index in ``refs``
    that query i may not match (itself), or -1. The search uses the ||a||² + ||b||² - 2ab expansion; the reported
    distance is recomputed exactly for the chosen pair, so an exact copy reports 0.
    """
    torch, _ = _torch_modules()
    queries = np.asarray(queries).reshape(len(queries), -1)
    refs = np.asarray(refs).reshape(len(refs), -1)

    def as_float(rows):
        return torch.from_numpy(rows.astype(np.float64) * scale)

    best_idx = np.zeros(len(queries), dtype=np.int64)
    best_dist = np.zeros(len(queries), dtype=np.float64)
    for qs in range(0, len(queries), chunk):
        q = as_float(queries[qs:qs + chunk])
        q2 = (q * q).sum(1, keepdim=True)
        best = torch.full((len(q),), float("inf"), dtype=torch.float64)
        arg = torch.zeros(len(q), dtype=torch.long)
        for rs in range(0, len(refs), chunk):
            r = as_float(refs[rs:rs + chunk])
            d2 = q2 + (r * r).sum(1)[None] - 2.0 * q @ r.T
            if exclude_self is not None:
                own = torch.from_numpy(np.asarray(exclude_self[qs:qs + chunk], dtype=np.int64)) - rs
                rows = torch.nonzero((own >= 0) & (own < len(r))).squeeze(1)
                d2[rows, own[rows]] = float("inf")
            value, index = d2.min(dim=1)
            better = value < best
            best = torch.where(better, value, best)
            arg = torch.where(better, index + rs, arg)
        best_idx[qs:qs + chunk] = arg.numpy()
        diff = q - as_float(refs[arg.numpy()])
        best_dist[qs:qs + chunk] = diff.pow(2).sum(1).sqrt().numpy()
    return best_idx, best_dist


def pixel_scale(images: np.ndarray) -> float:
    """The ``scale`` that makes Euclidean distance between uint8 images the RMS difference in [0, 1] units."""
    return 1.0 / (255.0 * np.sqrt(np.prod(images.shape[1:])))


def copy_threshold(train: np.ndarray, percentile: float = COPY_PERCENTILE, queries: int = 5000, seed: int = 0,
                   scale: float = 1.0) -> tuple[float, np.ndarray]:
    """(threshold, real-to-real nearest-neighbour distances used): see the module docstring."""
    n = len(train)
    if n < 2:
        return float("nan"), np.zeros(0)
    chosen = np.arange(n) if n <= queries else np.sort(np.random.default_rng(seed).choice(n, queries, replace=False))
    _, dist = nearest_neighbours(train[chosen], train, exclude_self=chosen, scale=scale)
    return float(np.percentile(dist, percentile)), dist


def prdc(real_features: np.ndarray, fake_features: np.ndarray, k: int = PRDC_K) -> dict:
    """Precision, recall, density, coverage (Naeem et al. 2020) with k-NN radii; NaN when a set has ≤ k points."""
    nan = {"precision": float("nan"), "recall": float("nan"), "density": float("nan"), "coverage": float("nan")}
    if len(real_features) <= k or len(fake_features) <= k:
        return nan
    torch, _ = _torch_modules()
    real = torch.from_numpy(np.asarray(real_features, dtype=np.float64))
    fake = torch.from_numpy(np.asarray(fake_features, dtype=np.float64))
    d_rr = torch.cdist(real, real, compute_mode="donot_use_mm_for_euclid_dist")
    d_ff = torch.cdist(fake, fake, compute_mode="donot_use_mm_for_euclid_dist")
    d_rf = torch.cdist(real, fake, compute_mode="donot_use_mm_for_euclid_dist")  # (R, M)
    radius_real = d_rr.kthvalue(k + 1, dim=1).values  # k+1: the 0 distance to itself comes first
    radius_fake = d_ff.kthvalue(k + 1, dim=1).values
    inside_real = d_rf <= radius_real[:, None]  # fake j inside real i's ball
    return {
        "precision": float(inside_real.any(dim=0).double().mean()),
        "recall": float((d_rf <= radius_fake[None, :]).any(dim=1).double().mean()),
        "density": float(inside_real.double().sum() / (k * fake.shape[0])),
        "coverage": float((d_rf.min(dim=1).values <= radius_real).double().mean()),
    }


SSIM_PIXELS_PER_BATCH = 2 ** 20  # bounds the memory of torchmetrics' 11×11 convolutions of 5 maps per image


def ssim_pairs(a: np.ndarray, b: np.ndarray, batch_size: int | None = None) -> np.ndarray:
    """SSIM of each pair (a[i], b[i]) of uint8 images (torchmetrics, data range 1, float32: in float64 torch's
    CPU convolution falls back to im2col, 5-10× slower and tens of GB at 128 px), in batches of
    ``SSIM_PIXELS_PER_BATCH`` pixels (1024 images at 28 px, 64 at 128 px)."""
    torch, _ = _torch_modules()
    from torchmetrics.functional.image import structural_similarity_index_measure

    if batch_size is None:
        batch_size = min(1024, max(1, SSIM_PIXELS_PER_BATCH // int(np.prod(a.shape[1:]))))
    out = []
    for start in range(0, len(a), batch_size):
        x = torch.from_numpy(a[start:start + batch_size]).float() / 255.0
        y = torch.from_numpy(b[start:start + batch_size]).float() / 255.0
        out.append(structural_similarity_index_measure(x, y, data_range=1.0, reduction="none").double().numpy())
    return np.concatenate(out) if out else np.zeros(0)


CT_COLUMNS = ("ct", "ct_z", "ct_p", "ct_cells", "ct_cells_used", "ct_tau", "ct_n_train", "ct_n_test",
              "ct_n_generated", "ct_feature_extractor", "ct_note")


def data_copying_columns(fit_rare: np.ndarray, held_back, module, f_syn: np.ndarray, seed: int = 0) -> dict:
    """The ``ct_*`` columns: Meehan et al.'s three-sample data-copying test (benchmark.stats.data_copying) with
    T = ``fit_rare`` (the rare-class images the generator saw), P_n = ``held_back`` (real rare images it never saw),
    Q_m = the bank (features ``f_syn`` of ``module``), in ``module``'s feature space. NaN with ``ct_note`` saying
    why when there is no held-back sample (None: unknown training set; empty: nothing held back)."""
    from benchmark.stats.data_copying import data_copying_test

    name = getattr(module, "name", type(module).__name__)
    nan = {c: float("nan") for c in CT_COLUMNS}
    nan.update(ct_feature_extractor=name, ct_n_generated=len(f_syn), ct_n_train=len(fit_rare))
    if held_back is None:
        return {**nan, "ct_n_test": float("nan"), "ct_note": (
            "not computed: no held-back real images given; the generator's training images are unknown here "
            "(an external bank, or a pipeline trained elsewhere), so there is no sample it provably never saw")}
    if len(held_back) == 0:
        return {**nan, "ct_n_test": 0, "ct_note": "not computed: the cell holds back no real rare-class images "
                                                  "(its rare count keeps them all)"}
    r = data_copying_test(extract_features(module, fit_rare), extract_features(module, held_back), f_syn,
                          seed=seed)
    return {"ct": r.ct, "ct_z": r.z, "ct_p": r.p_value, "ct_cells": r.n_cells, "ct_cells_used": r.cells_used,
            "ct_tau": r.tau, "ct_n_train": r.n_train, "ct_n_test": r.n_test, "ct_n_generated": r.n_generated,
            "ct_feature_extractor": name, "ct_note": r.note}


def _checked_inputs(synthetic, real_rare, train_all, reference, held_back) -> tuple:
    """The audit's image sets, checked: uint8 (N, C, H, W) of one shape; at least one synthetic and one training
    image; an empty ``held_back`` becomes an empty array of that shape, None stays None."""
    synthetic, real_rare, train_all, reference = (
        _check_images(n, x) for n, x in (("synthetic", synthetic), ("real_rare", real_rare),
                                         ("train_all", train_all), ("reference", reference)))
    if held_back is not None:
        held_back = _check_images("held_back", held_back) if len(held_back) else \
            np.zeros((0, *synthetic.shape[1:]), np.uint8)
    shapes = {synthetic.shape[1:], real_rare.shape[1:], train_all.shape[1:], reference.shape[1:]}
    if len(shapes) != 1 or (held_back is not None and held_back.shape[1:] != synthetic.shape[1:]):
        raise ValueError(f"audit: image shapes differ: synthetic {synthetic.shape[1:]}, real_rare "
                         f"{real_rare.shape[1:]}, train_all {train_all.shape[1:]}, reference {reference.shape[1:]}"
                         + ("" if held_back is None else f", held_back {held_back.shape[1:]}"))
    if len(synthetic) == 0 or len(train_all) == 0:
        raise ValueError("audit: needs at least one synthetic and one training image")
    return synthetic, real_rare, train_all, reference, held_back


def _check_images(name: str, images) -> np.ndarray:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"audit: {name} must be uint8 (N, C, H, W), got {getattr(images, 'dtype', type(images))} "
                         f"{getattr(images, 'shape', '')}")
    return images


def audit(synthetic: np.ndarray, real_rare: np.ndarray, train_all: np.ndarray, out_dir=None,
          feature_extractor_kind="auto", seed: int = 0, threshold_queries: int = 5000, reference=None,
          domain_extractor=None, domain_info: dict | None = None, sheet_heading: str | None = None,
          held_back=None) -> dict:
    """Flat record columns describing ``synthetic`` against the real images; see the module docstring.

    ``real_rare``: the fit set's rare-class images; ``train_all``: the whole fit set (memorisation checks);
    ``reference``: the distribution reference (default ``real_rare``); ``domain_extractor``: an in-domain feature
    module for the ``domain_*`` columns, ``domain_info``: scalars about it recorded as ``domain_<name>``;
    ``sheet_heading``: the first line of the labelled sheets (benchmark.generators.sheets), e.g. the job's name;
    ``held_back``: the cell's held-back real rare-class images (never seen by the generator) for the ``ct_*``
    data-copying columns, None when the caller does not know what the generator saw (an external bank)."""
    synthetic, real_rare, train_all, reference, held_back = _checked_inputs(
        synthetic, real_rare, train_all, real_rare if reference is None else reference, held_back)
    module, note = feature_extractor(feature_extractor_kind, synthetic.shape[1])
    result = {"feature_extractor": getattr(module, "name", type(module).__name__),
              "feature_dim": int(getattr(module, "num_features", 0)), "feature_extractor_note": note,
              "n_synthetic": len(synthetic), "n_real_rare": len(real_rare), "n_train": len(train_all),
              "fit_n": len(train_all), "reference_n": len(reference)}
    f_syn, f_ref, f_train = (extract_features(module, x) for x in (synthetic, reference, train_all))
    result["feature_dim"] = int(f_syn.shape[1])
    result.update(distribution_metrics(f_syn, f_ref, seed=seed))
    result["prdc_k"] = PRDC_K
    if domain_extractor is not None:
        d_syn, d_ref = (extract_features(domain_extractor, x) for x in (synthetic, reference))
        result["domain_feature_extractor"] = getattr(domain_extractor, "name", type(domain_extractor).__name__)
        result["domain_feature_dim"] = int(d_syn.shape[1])
        result.update({f"domain_{k}": v for k, v in distribution_metrics(d_syn, d_ref, seed=seed).items()})
        result.update({f"domain_{k}": v for k, v in (domain_info or {}).items()})
    space = (domain_extractor, d_syn) if domain_extractor is not None else (module, f_syn)
    result.update(data_copying_columns(real_rare, held_back, *space, seed=seed))

    scale = pixel_scale(train_all)
    nn_pix_idx, nn_pix = nearest_neighbours(synthetic, train_all, scale=scale)
    nn_feat_idx, nn_feat = nearest_neighbours(f_syn, f_train)
    thr_pix, real_nn_pix = copy_threshold(train_all, queries=threshold_queries, seed=seed, scale=scale)
    thr_feat, _ = copy_threshold(f_train, queries=threshold_queries, seed=seed)
    ssim = ssim_pairs(synthetic, train_all[nn_pix_idx])
    result.update({
        "nn_pixel_mean": float(nn_pix.mean()), "nn_pixel_min": float(nn_pix.min()),
        "nn_feature_mean": float(nn_feat.mean()), "nn_feature_min": float(nn_feat.min()),
        "train_nn_pixel_median": float(np.median(real_nn_pix)) if len(real_nn_pix) else float("nan"),
        "copy_percentile": COPY_PERCENTILE,
        "copy_threshold_pixel": thr_pix, "copy_rate": float((nn_pix <= thr_pix).mean()),
        "copy_threshold_feature": thr_feat, "copy_rate_feature": float((nn_feat <= thr_feat).mean()),
        "ssim_nn_mean": float(ssim.mean()), "ssim_nn_max": float(ssim.max()),
    })
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(out / NEAREST_NPZ, nn_pixel_index=nn_pix_idx, nn_pixel=nn_pix,
                            nn_feature_index=nn_feat_idx, nn_feature=nn_feat, ssim_nn=ssim)
        order = np.argsort(nn_pix, kind="stable")[:16]
        cols = 8
        tiles = []
        for start in range(0, len(order), cols):
            rows = order[start:start + cols]
            pad = cols - len(rows)
            blank = np.full((pad, *synthetic.shape[1:]), 255, np.uint8)
            tiles += [synthetic[rows], blank, train_all[nn_pix_idx[rows]], blank]
        save_grid(out / CLOSEST_PAIRS_PNG, np.concatenate(tiles), cols)
        n_show = 16
        real_show, syn_show = real_rare[:n_show], synthetic[:n_show]
        blank = lambda k: np.full((k, *synthetic.shape[1:]), 255, np.uint8)  # noqa: E731
        save_grid(out / REAL_VS_SYNTHETIC_PNG, np.concatenate(
            [real_show, blank(-len(real_show) % cols), syn_show, blank(-len(syn_show) % cols)]), cols)
        from benchmark.generators import sheets

        heading = sheet_heading or "generator audit"
        sheets.sample_sheet(real_rare, synthetic, heading, out / sheets.SAMPLE_SHEET_PNG)
        sheets.closest_pairs_sheet(synthetic, train_all, nn_pix_idx, nn_pix, thr_pix, heading,
                                   out / sheets.CLOSEST_SHEET_PNG)
        result["audit_files"] = ",".join([CLOSEST_PAIRS_PNG, REAL_VS_SYNTHETIC_PNG, NEAREST_NPZ,
                                          sheets.SAMPLE_SHEET_PNG, sheets.CLOSEST_SHEET_PNG])
    return result
