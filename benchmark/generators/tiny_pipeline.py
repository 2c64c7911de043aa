"""Random diffusers pipelines written to a folder, class-conditional and text-to-image: for the pipeline
generator's tests, the generators_smoke profile on a fresh machine and benchmarks/bench_pipeline.py (nothing
downloaded). Their images are noise-like: they are untrained."""

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


def write_text_pipeline(folder, seed: int = 0, widths: tuple = (4, 8), latent_size: int = 8,
                        cross_attention_dim: int = 16, text_layers: int = 2, norm_groups: int = 2,
                        max_length: int = 16) -> Path:
    """Save a ``StableDiffusionPipeline`` of random components built as diffusers' own tests build them, to
    `folder`: a two-level ``UNet2DConditionModel`` (``widths``, ``latent_size`` × ``latent_size`` latents of 4
    channels, cross-attention on the text), an ``AutoencoderKL`` of the same widths (scale factor 2: RGB images of
    2 × ``latent_size`` px), a ``CLIPTextModel`` of ``text_layers`` layers (hidden size ``cross_attention_dim``) and
    a ``CLIPTokenizer`` read from a vocabulary of single letters and an empty merges file written beside `folder`
    (``<folder>_vocab``). The defaults are the tests' tiny pipeline (16 × 16 images); the weights are seeded."""
    import json
    import string

    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    vocab_dir = folder.parent / f"{folder.name}_vocab"
    vocab_dir.mkdir(parents=True, exist_ok=True)
    letters = list(string.ascii_lowercase)
    tokens = ["<|startoftext|>", "<|endoftext|>"] + letters + [c + "</w>" for c in letters]
    (vocab_dir / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (vocab_dir / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer.from_pretrained(str(vocab_dir), local_files_only=True, model_max_length=max_length)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(block_out_channels=tuple(widths), layers_per_block=1, sample_size=latent_size,
                                    in_channels=4, out_channels=4,
                                    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                                    cross_attention_dim=cross_attention_dim, norm_num_groups=norm_groups)
        vae = AutoencoderKL(block_out_channels=list(widths), in_channels=3, out_channels=3, latent_channels=4,
                            down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                            norm_num_groups=norm_groups)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=cross_attention_dim,
            intermediate_size=2 * cross_attention_dim, num_attention_heads=2, num_hidden_layers=text_layers,
            vocab_size=len(tokens), max_position_embeddings=max_length))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                            safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False).save_pretrained(str(folder))
    return folder
