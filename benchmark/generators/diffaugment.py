"""DiffAugment (Zhao et al., NeurIPS 2020): differentiable colour, translation and cutout for small-data GAN training.

Every image the discriminator sees — real or generated, in the discriminator and in the generator update — passes
through the same random policy first, so the discriminator cannot memorise the few real images and the generator
still gets gradients through the augmentation. Each call draws fresh, independent parameters per image (real and
generated batches share the policy and its distribution, not the draws), as in the authors' reference code
(mit-han-lab/data-efficient-gans, ``DiffAugment_pytorch.py``). Images are float tensors in [-1, 1], (N, C, H, W).

Policy: a comma-separated subset of ``color``, ``translation``, ``cutout``, applied in that written order; the
paper's small-data policy is ``"color,translation,cutout"``. Per image:
- ``color`` = brightness, then saturation, then contrast:
  brightness  x + b,                      b ~ U(-0.5, 0.5);
  saturation  (x - m_c) · s + m_c,        s ~ U(0, 2), m_c the per-pixel mean over channels;
  contrast    (x - m) · c + m,            c ~ U(0.5, 1.5), m the image's mean over channels and pixels.
  On a one-channel image m_c = x, so **saturation is the identity** (brightness and contrast still apply).
- ``translation``: an integer shift (dy, dx), each uniform in [-t, t] with t = int(side / 8 + 0.5) (3 at 24 px,
  4 at 28 px); out[i, j] = x[i - dy, j - dx], and 0 (mid-grey in [-1, 1]) where that pixel lies outside the image.
- ``cutout``: a square of side k = int(side / 2 + 0.5) is set to 0; its centre (cy, cx) is uniform over
  [0, side - 1] (plus one more position, side, when k is even, as in the reference code) and it covers rows
  [cy - k // 2, cy - k // 2 + k) clipped to the image, so near an edge less than k² pixels are cut.

Randomness comes from a ``torch.Generator`` on the CPU (:func:`draw`), so a seeded augmentation is the same on
every device; :func:`apply` then transforms a batch with given parameters (differentiable in the images).
torch is imported inside the functions: :func:`parse_policy` runs at config time without it.
"""

from __future__ import annotations

from benchmark.generators._common import GeneratorConfigError

OPERATIONS = {"color": ("brightness", "saturation", "contrast"), "translation": ("translation",),
              "cutout": ("cutout",)}
PAPER_POLICY = "color,translation,cutout"
TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5


def parse_policy(policy) -> tuple[str, ...]:
    """The policy's parts in order; None, "" or "none" mean off (an empty tuple). A bad value is an error that
    names the valid parts."""
    if policy is None or (isinstance(policy, str) and policy.strip().lower() in ("", "none", "off")):
        return ()
    if not isinstance(policy, str):
        raise GeneratorConfigError(
            f"diffaugment must be a comma-separated string such as {PAPER_POLICY!r}, or null for off; "
            f"got {type(policy).__name__} {policy!r}.")
    parts = tuple(part.strip() for part in policy.split(","))
    bad = [part for part in parts if part not in OPERATIONS]
    if bad:
        raise GeneratorConfigError(
            f"diffaugment {policy!r}: unknown part(s) {', '.join(repr(b) for b in bad)}; valid parts are "
            f"{', '.join(OPERATIONS)} (e.g. {PAPER_POLICY!r}), or null for off.")
    if len(set(parts)) != len(parts):
        raise GeneratorConfigError(f"diffaugment {policy!r}: each part may appear once.")
    return parts


def translation_limit(side: int) -> int:
    """t: the largest shift, in pixels, along a side of ``side`` pixels."""
    return int(side * TRANSLATION_RATIO + 0.5)


def cutout_size(side: int) -> int:
    """k: the side of the cut-out square along a side of ``side`` pixels."""
    return int(side * CUTOUT_RATIO + 0.5)


def draw(policy, n: int, height: int, width: int, generator) -> dict:
    """Per-image parameters of ``policy`` for ``n`` images of ``height`` × ``width``, drawn from ``generator`` (a
    CPU ``torch.Generator``) in policy order. Keys: brightness, saturation, contrast (float (n,)); translation
    (long (n, 2): dy, dx); cutout (long (n, 2): top row, left column of the unclipped square)."""
    import torch

    params = {}
    for part in parse_policy(policy):
        if part == "color":
            params["brightness"] = torch.rand(n, generator=generator) - 0.5
            params["saturation"] = torch.rand(n, generator=generator) * 2.0
            params["contrast"] = torch.rand(n, generator=generator) + 0.5
        elif part == "translation":
            ty, tx = translation_limit(height), translation_limit(width)
            params["translation"] = torch.stack([torch.randint(-ty, ty + 1, (n,), generator=generator),
                                                 torch.randint(-tx, tx + 1, (n,), generator=generator)], dim=1)
        else:
            ky, kx = cutout_size(height), cutout_size(width)
            cy = torch.randint(0, height + (1 - ky % 2), (n,), generator=generator)
            cx = torch.randint(0, width + (1 - kx % 2), (n,), generator=generator)
            params["cutout"] = torch.stack([cy - ky // 2, cx - kx // 2], dim=1)
    return params


def _translate(x, shifts):
    """out[n, :, i, j] = x[n, :, i - dy, j - dx], zero outside the image (a gather from the zero-padded batch)."""
    import torch
    import torch.nn.functional as F

    n, _, h, w = x.shape
    pad_y, pad_x = int(shifts[:, 0].abs().max()), int(shifts[:, 1].abs().max())
    padded = F.pad(x, [pad_x, pad_x, pad_y, pad_y])
    rows = torch.arange(h, device=x.device)[None, :] - shifts[:, :1] + pad_y       # (n, h) rows of `padded`
    cols = torch.arange(w, device=x.device)[None, :] - shifts[:, 1:] + pad_x       # (n, w)
    batch = torch.arange(n, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def cutout_mask(corners, height: int, width: int):
    """(n, height, width) mask: 0 inside each image's (clipped) square, 1 elsewhere."""
    import torch

    ky, kx = cutout_size(height), cutout_size(width)
    rows = torch.arange(height, device=corners.device)[None, :]
    cols = torch.arange(width, device=corners.device)[None, :]
    in_rows = (rows >= corners[:, :1]) & (rows < corners[:, :1] + ky)
    in_cols = (cols >= corners[:, 1:]) & (cols < corners[:, 1:] + kx)
    return ~(in_rows[:, :, None] & in_cols[:, None, :])


def apply(x, params: dict):
    """``x`` (float (N, C, H, W)) transformed with the parameters of :func:`draw` (in their order); differentiable in
    ``x``; shape, dtype and device kept."""
    out = x
    for name, value in params.items():
        value = value.to(x.device)
        if name in ("brightness", "saturation", "contrast"):
            factor = value.to(x.dtype)[:, None, None, None]
            if name == "brightness":
                out = out + factor
            else:
                mean = out.mean(dim=1 if name == "saturation" else (1, 2, 3), keepdim=True)
                out = (out - mean) * factor + mean
        elif name == "translation":
            out = _translate(out, value)
        elif name == "cutout":
            out = out * cutout_mask(value, x.shape[2], x.shape[3]).to(x.dtype)[:, None]
        else:
            raise ValueError(f"DiffAugment: unknown parameter {name!r}")
    return out.contiguous()


def diff_augment(x, policy, generator):
    """``x`` under ``policy`` with fresh per-image parameters from ``generator``; ``x`` itself when off."""
    if not parse_policy(policy):
        return x
    return apply(x, draw(policy, x.shape[0], x.shape[2], x.shape[3], generator))
