"""A tiny random class-conditional diffusers pipeline written to a folder: for the pipeline generator's tests and
the generators_smoke profile on a fresh machine (nothing downloaded). Its images are noise-like: it is untrained."""

from __future__ import annotations

from pathlib import Path


def write_tiny_class_pipeline(folder, num_classes: int = 2, image_size: int = 28, channels: int = 1, seed: int = 0,
                              width: int = 8) -> Path:
    """Save a ``DDIMPipeline`` (a two-level ``UNet2DModel`` with ``num_classes + 1`` class embeddings, the last one
    the "no class" label, and a cosine-schedule ``DDIMScheduler``) with seeded random weights to `folder`.
    About 20 k parameters at width 8; its model_index.json and weights are what ``save_pretrained`` writes."""
    import torch
    from diffusers import DDIMPipeline, DDIMScheduler, UNet2DModel

    if image_size % 2:
        raise ValueError(f"image_size must be even (the UNet halves it once), got {image_size}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DModel(sample_size=image_size, in_channels=channels, out_channels=channels,
                           block_out_channels=(width, 2 * width), layers_per_block=1,
                           down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                           norm_num_groups=min(4, width), num_class_embeds=num_classes + 1)
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=True)
    folder = Path(folder)
    DDIMPipeline(unet=unet, scheduler=scheduler).save_pretrained(str(folder))
    return folder
