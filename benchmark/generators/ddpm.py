"""Class-conditional diffusion (diffusers ``UNet2DModel``) with classifier-free guidance, EMA and fast samplers.

- The UNet is built from the config (nothing is downloaded): ``num_class_embeds = num_classes + 1``; the extra id
  ``num_classes`` is the null class. In training each label is replaced by the null class with probability
  ``label_dropout``, so one network learns the conditional and the unconditional model (Ho & Salimans 2022).
- Training: ``DDPMScheduler`` forward process, MSE on the noise (or on v with ``prediction_type: v_prediction``),
  AdamW with linear warm-up, gradient clipping, class-balanced batches (``balanced: true``), images in [-1, 1].
- EMA of the weights (decay ``min(ema_decay, (1 + step) / (10 + step))``); sampling uses the EMA weights.
- Sampling: ``sampler`` = ``ddim`` (``DDIMScheduler``, eta ``ddim_eta``, x0 clipped), ``dpm_solver`` (x0 thresholded)
  (``DPMSolverMultistepScheduler``, DPM-Solver++ order 2) or ``ddpm`` (ancestral), in ``sampling_steps`` UNet
  calls. Guidance follows the diffusers convention: eps = eps_null + w · (eps_class - eps_null); w = 1 is the plain
  conditional model (one UNet pass per step), w = 0 the unconditional one, w > 1 sharpens the class (the
  conditional and null passes run as one doubled batch, so a step is still one UNet call).
- Image size: the UNet lists (``block_out_channels``, ``down_block_types``, ``up_block_types``) describe the network
  for ``base_size`` (28) px. Each doubling of the side beyond it, ``round(log2(size / base_size))`` (64 px: 1,
  128 px: 2, 224 px: 3), adds one full-resolution level with ``block_out_channels[0]`` channels (``DownBlock2D`` /
  ``UpBlock2D``) on top, so the lowest resolution and its attention blocks stay where the config put them (28 px:
  7 × 7; 64: 8 × 8; 128: 8 × 8). ``grow_levels: false`` uses the lists as given. The fit log records the UNet used.
"""

from __future__ import annotations

import copy
import time
import warnings
from pathlib import Path

import numpy as np

from benchmark.generators._common import (
    GeneratorConfigError, check_class_index, check_training_data, choose_device, class_balanced_probabilities,
    resolve_config, save_grid, to_signed, to_uint8
)
from benchmark.generators.base import Generator

SAMPLERS = ("ddim", "dpm_solver", "ddpm")
PREDICTION_TYPES = ("epsilon", "v_prediction")

DEFAULTS = {
    # UNet (diffusers UNet2DModel); the defaults suit 28 px (28 -> 14 -> 7)
    "block_out_channels": [64, 128, 128],
    "base_size": 28,       # the image size the three lists describe; larger images get extra top levels
    "grow_levels": True,
    "layers_per_block": 2,
    "down_block_types": ["DownBlock2D", "DownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
    "norm_num_groups": 32,
    "attention_head_dim": 8,
    "dropout": 0.0,
    # forward process
    "num_train_timesteps": 1000,
    "beta_schedule": "squaredcos_cap_v2",
    "prediction_type": "epsilon",
    "timestep_spacing": "trailing",
    # training
    "steps": 8000,
    "batch_size": 64,
    "lr": 2e-4,
    "weight_decay": 0.0,
    "lr_warmup_steps": 200,
    "grad_clip": 1.0,
    "label_dropout": 0.1,
    "balanced": True,
    "ema_decay": 0.999,
    "use_ema": True,
    "log_every": 100,
    # sampling
    "sampler": "dpm_solver",
    "sampling_steps": 25,
    "guidance_scale": 2.0,
    "ddim_eta": 0.0,
    "sample_batch_size": 256,
    "grid_columns": 8,  # fit(out_dir=…) ends with grid_final.png: this many samples per class (0: no grid)
    "device": None,
}


def unet_layout(cfg: dict, size: int) -> dict:
    """block_out_channels / down_block_types / up_block_types for images of side ``size`` (module docstring)."""
    channels, down, up = list(cfg["block_out_channels"]), list(cfg["down_block_types"]), list(cfg["up_block_types"])
    extra = 0
    if cfg["grow_levels"] and channels:
        extra = max(0, int(round(np.log2(size / float(cfg["base_size"])))))
    return {"block_out_channels": [channels[0]] * extra + channels, "down_block_types": ["DownBlock2D"] * extra + down,
            "up_block_types": up + ["UpBlock2D"] * extra}


def check_sampling(sampler, sampling_steps, guidance_scale, label_dropout, num_train_timesteps) -> None:
    """Raise GeneratorConfigError for an unknown sampler, a bad step count or guidance, before anything runs."""
    if sampler not in SAMPLERS:
        raise GeneratorConfigError(f"DDPM: unknown sampler {sampler!r}; valid choices: {', '.join(SAMPLERS)}.")
    if isinstance(sampling_steps, bool) or not isinstance(sampling_steps, (int, np.integer)) \
            or not 1 <= sampling_steps <= num_train_timesteps:
        raise GeneratorConfigError(
            f"DDPM: sampling_steps must be an integer in [1, {num_train_timesteps}], got {sampling_steps!r}.")
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)) \
            or not np.isfinite(guidance_scale) or guidance_scale < 0:
        raise GeneratorConfigError(
            f"DDPM: guidance_scale must be a number ≥ 0 (1 = no guidance, e.g. 2.0 or 8.0), got {guidance_scale!r}.")
    if guidance_scale != 1 and label_dropout <= 0:
        raise GeneratorConfigError(
            f"DDPM: guidance_scale {guidance_scale} needs the null class, which is only trained with "
            "label_dropout > 0; set label_dropout (e.g. 0.1) or guidance_scale: 1.")


class DDPM(Generator):
    """Class-conditional diffusion; see the module docstring for the method, ``DEFAULTS`` for the config."""

    artifact_class, defaults, weight_names = "DDPM", DEFAULTS, ("unet",)

    def __init__(self, num_classes: int, image_shape=(1, 28, 28), **config):
        super().__init__(num_classes, image_shape, **config)
        self.cfg = resolve_config("DDPM", DEFAULTS, config)
        self._validate()
        self.device = choose_device(self.cfg["device"])
        self.model = None      # trained weights
        self.ema_model = None  # EMA weights (None when use_ema is false)

    def _validate(self) -> None:
        cfg = self.cfg
        if len(self.image_shape) != 3 or self.image_shape[1] != self.image_shape[2]:
            raise GeneratorConfigError(f"DDPM: image_shape must be square (C, H, W), got {self.image_shape}.")
        for key in ("steps", "batch_size", "num_train_timesteps", "layers_per_block", "sample_batch_size"):
            if isinstance(cfg[key], bool) or not isinstance(cfg[key], int) or cfg[key] <= 0:
                raise GeneratorConfigError(f"DDPM: {key} must be a positive integer, got {cfg[key]!r}.")
        if not 0.0 <= float(cfg["label_dropout"]) < 1.0:
            raise GeneratorConfigError(f"DDPM: label_dropout must lie in [0, 1), got {cfg['label_dropout']!r}.")
        if not 0.0 <= float(cfg["ema_decay"]) < 1.0:
            raise GeneratorConfigError(f"DDPM: ema_decay must lie in [0, 1), got {cfg['ema_decay']!r}.")
        if cfg["prediction_type"] not in PREDICTION_TYPES:
            raise GeneratorConfigError(f"DDPM: unknown prediction_type {cfg['prediction_type']!r}; valid choices: "
                                       f"{', '.join(PREDICTION_TYPES)}.")
        levels = len(cfg["block_out_channels"])
        if not levels == len(cfg["down_block_types"]) == len(cfg["up_block_types"]):
            raise GeneratorConfigError(
                "DDPM: block_out_channels, down_block_types and up_block_types need the same length, got "
                f"{levels}, {len(cfg['down_block_types'])}, {len(cfg['up_block_types'])}.")
        if isinstance(cfg["base_size"], bool) or not isinstance(cfg["base_size"], int) or cfg["base_size"] <= 0:
            raise GeneratorConfigError(f"DDPM: base_size must be a positive integer, got {cfg['base_size']!r}.")
        levels = len(self.unet_layout["block_out_channels"])
        if self.image_shape[1] % 2 ** (levels - 1):
            grown = f" (grown from {len(cfg['block_out_channels'])} for {self.image_shape[1]} px)" \
                if levels != len(cfg["block_out_channels"]) else ""
            raise GeneratorConfigError(
                f"DDPM: image size {self.image_shape[1]} is not divisible by 2^{levels - 1} "
                f"({levels} UNet levels{grown} halve it {levels - 1} times); use fewer block_out_channels "
                "or set base_size / grow_levels: false.")
        bad = [c for c in cfg["block_out_channels"] if c % int(cfg["norm_num_groups"])]
        if bad:
            raise GeneratorConfigError(
                f"DDPM: block_out_channels {bad} are not divisible by norm_num_groups {cfg['norm_num_groups']}.")
        check_sampling(cfg["sampler"], cfg["sampling_steps"], cfg["guidance_scale"], float(cfg["label_dropout"]),
                       cfg["num_train_timesteps"])

    @property
    def unet_layout(self) -> dict:
        """The UNet lists used at this image size (the config's, grown by :func:`unet_layout`)."""
        return unet_layout(self.cfg, self.image_shape[1])

    @property
    def null_class(self) -> int:
        return self.num_classes

    @property
    def sampling_model(self):
        """The network the sampler calls: the EMA weights when ``use_ema``, else the trained ones."""
        return self.ema_model if self.ema_model is not None else self.model

    def _build_unet(self, seed: int):
        import torch
        from diffusers import UNet2DModel

        cfg, layout = self.cfg, self.unet_layout
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            unet = UNet2DModel(
                sample_size=self.image_shape[1], in_channels=self.image_shape[0], out_channels=self.image_shape[0],
                block_out_channels=tuple(layout["block_out_channels"]), layers_per_block=int(cfg["layers_per_block"]),
                down_block_types=tuple(layout["down_block_types"]), up_block_types=tuple(layout["up_block_types"]),
                norm_num_groups=int(cfg["norm_num_groups"]), attention_head_dim=cfg["attention_head_dim"],
                dropout=float(cfg["dropout"]), num_class_embeds=self.num_classes + 1,
            )
        return unet.to(self.device)

    def train_scheduler(self):
        from diffusers import DDPMScheduler

        cfg = self.cfg
        return DDPMScheduler(num_train_timesteps=int(cfg["num_train_timesteps"]), beta_schedule=cfg["beta_schedule"],
                             prediction_type=cfg["prediction_type"], clip_sample=True,
                             timestep_spacing=cfg["timestep_spacing"])

    def sampling_scheduler(self, sampler: str, steps: int):
        """A fresh scheduler of kind ``sampler`` sharing the training noise schedule, set to ``steps`` steps."""
        from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

        base = dict(self.train_scheduler().config)
        with warnings.catch_warnings():  # diffusers' numpy-2 `__array__(copy=…)` DeprecationWarning
            warnings.simplefilter("ignore", DeprecationWarning)
            if sampler == "ddim":
                scheduler = DDIMScheduler.from_config(base)
            elif sampler == "dpm_solver":
                keep = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type",
                        "timestep_spacing")
                # thresholding: x0 predictions clipped as DDIM's clip_sample does (dynamic thresholding with a
                # maximum of 1); without it an imperfect ε at the first cosine-schedule steps, where ᾱ ≈ 0, is
                # amplified ~1/√ᾱ and every pixel saturates (seen in docs/study.md with ddpm_cpu)
                scheduler = DPMSolverMultistepScheduler(**{k: base[k] for k in keep},
                                                        algorithm_type="dpmsolver++", solver_order=2,
                                                        thresholding=True, sample_max_value=1.0)
            else:
                scheduler = DDPMScheduler.from_config(base)
            scheduler.set_timesteps(steps, device=self.device)
        return scheduler

    def fit(self, images: np.ndarray, labels: np.ndarray, seed: int, out_dir=None) -> dict:
        """Train from scratch on uint8 images; returns the training log (losses, steps, seconds).

        With ``out_dir``, ``grid_final.png`` there shows ``grid_columns`` samples per class (one row each, the same
        noise in every row) from the configured sampler and guidance.
        """
        import torch
        import torch.nn.functional as F

        labels = check_training_data(images, labels, self.image_shape, self.num_classes)
        cfg = self.cfg
        start = time.perf_counter()
        self.model = self._build_unet(seed)
        self.model.train()
        self.ema_model = copy.deepcopy(self.model).eval().requires_grad_(False) if cfg["use_ema"] else None
        scheduler = self.train_scheduler()
        alphas = scheduler.alphas_cumprod.to(self.device)
        opt = torch.optim.AdamW(self.model.parameters(), lr=float(cfg["lr"]), weight_decay=float(cfg["weight_decay"]))
        warmup = max(1, int(cfg["lr_warmup_steps"]))
        lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
        data = to_signed(images, self.device)
        targets = torch.from_numpy(labels).to(self.device)
        probs = class_balanced_probabilities(labels, self.num_classes) if cfg["balanced"] else None
        rng = np.random.default_rng(seed)
        noise_gen = torch.Generator(device=self.device).manual_seed(seed)
        batch, T, p_drop = int(cfg["batch_size"]), int(cfg["num_train_timesteps"]), float(cfg["label_dropout"])
        log = {"steps": 0, "loss": [], "log_steps": [], "device": str(self.device),
               "parameters": sum(p.numel() for p in self.model.parameters()), "unet": self.unet_layout}
        running = 0.0
        for step in range(1, int(cfg["steps"]) + 1):
            idx = torch.from_numpy(rng.choice(len(images), size=batch, replace=True, p=probs)).to(self.device)
            x0, y = data[idx], targets[idx].clone()
            y[torch.from_numpy(rng.random(batch) < p_drop).to(self.device)] = self.null_class
            noise = torch.randn(x0.shape, generator=noise_gen, device=self.device)
            t = torch.randint(0, T, (batch,), generator=noise_gen, device=self.device)
            a = alphas[t].view(-1, 1, 1, 1)
            xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
            target = noise if cfg["prediction_type"] == "epsilon" else a.sqrt() * noise - (1 - a).sqrt() * x0
            loss = F.mse_loss(self.model(xt, t, class_labels=y).sample, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg["grad_clip"]:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(cfg["grad_clip"]))
            opt.step()
            lr_sched.step()
            if self.ema_model is not None:
                decay = min(float(cfg["ema_decay"]), (1 + step) / (10 + step))
                with torch.no_grad():
                    for p_ema, p in zip(self.ema_model.parameters(), self.model.parameters()):
                        p_ema.lerp_(p, 1.0 - decay)
            running += loss.item()
            if step % int(cfg["log_every"]) == 0 or step == int(cfg["steps"]):
                done = step - (log["log_steps"][-1] if log["log_steps"] else 0)
                log["log_steps"].append(step)
                log["loss"].append(running / done)
                running = 0.0
        log["steps"] = int(cfg["steps"])
        log["seconds"] = time.perf_counter() - start
        self.model.eval()
        if out_dir and int(cfg["grid_columns"]) > 0:
            columns = int(cfg["grid_columns"])
            rows = [self.sample(columns, k, seed) for k in range(self.num_classes)]
            log["grids"] = [str(save_grid(Path(out_dir) / "grid_final.png", np.concatenate(rows), columns))]
        return log

    def _require_fitted(self):
        if self.sampling_model is None:
            raise RuntimeError("DDPM: call fit() or load() before sample()")

    def sample(self, n: int, class_index: int, seed: int, guidance_scale=None, sampler=None,
               sampling_steps=None) -> np.ndarray:
        """``n`` uint8 images of ``class_index``; guidance, sampler and step count default to the config."""
        import torch

        self._require_fitted()
        class_index = check_class_index(class_index, self.num_classes)
        cfg = self.cfg
        guidance_scale = cfg["guidance_scale"] if guidance_scale is None else guidance_scale
        sampler = cfg["sampler"] if sampler is None else sampler
        sampling_steps = cfg["sampling_steps"] if sampling_steps is None else sampling_steps
        check_sampling(sampler, sampling_steps, guidance_scale, float(cfg["label_dropout"]),
                       int(cfg["num_train_timesteps"]))
        model = self.sampling_model
        gen = torch.Generator().manual_seed(seed)
        noise = torch.randn((n, *self.image_shape), generator=gen)
        out = []
        with torch.no_grad():
            for chunk in noise.split(int(cfg["sample_batch_size"])):
                out.append(to_uint8(self._denoise(model, chunk.to(self.device), class_index, float(guidance_scale),
                                                  sampler, int(sampling_steps), gen)))
        return np.concatenate(out) if out else np.zeros((0, *self.image_shape), np.uint8)

    def _denoise(self, model, x, class_index, w, sampler, steps, gen):
        import torch

        scheduler = self.sampling_scheduler(sampler, steps)
        x = x * scheduler.init_noise_sigma
        b = len(x)
        cond = torch.full((b,), class_index, dtype=torch.long, device=self.device)
        null = torch.full((b,), self.null_class, dtype=torch.long, device=self.device)
        extra = {"eta": float(self.cfg["ddim_eta"])} if sampler == "ddim" else {}
        for t in scheduler.timesteps:
            inp = scheduler.scale_model_input(x, t)
            if w == 1:
                eps = model(inp, t, class_labels=cond).sample
            elif w == 0:
                eps = model(inp, t, class_labels=null).sample
            else:
                both = model(torch.cat([inp, inp]), t, class_labels=torch.cat([cond, null])).sample
                eps_cond, eps_null = both.chunk(2)
                eps = eps_null + w * (eps_cond - eps_null)
            x = scheduler.step(eps, t, x, generator=gen, **extra).prev_sample
        return x

    def sampling_weights(self) -> dict[str, dict]:
        """The weights the sampler uses (EMA when ``use_ema``)."""
        self._require_fitted()
        return {"unet": self.sampling_model.state_dict()}

    def restore_weights(self, tensors: dict[str, dict]) -> None:
        model = self._build_unet(0)
        model.load_state_dict(tensors["unet"])
        self.model, self.ema_model = model.eval(), None
