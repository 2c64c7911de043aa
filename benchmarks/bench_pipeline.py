"""Benchmark figures: sampling time per image of the `pipeline` generator (bring your own diffusers pipeline) on CPU.

    nice python benchmarks/bench_pipeline.py --write-docs      # writes its section of docs/benchmarks.md
    python benchmarks/bench_pipeline.py --images 2 --repeats 1 --no-sd15   # a quick check

Nothing is downloaded: the pipeline folders are written here with ``save_pretrained`` from freshly initialised
components (sampling cost does not depend on the weights), then sampled through
``benchmark.generators.pipeline.DiffusersPipeline`` — what the generator stage calls (``sample(n, class, seed)``):

- **class-conditional**: a ``DDIMPipeline`` whose UNet is the registry `ddpm` entry's (``UNet2DModel``, 1 × 28 × 28,
  2 classes + the "no class" label), with DDIM at the `pipeline` entry's 50 steps, guidance 1 and 2 (guidance runs
  the conditional and null passes as one doubled batch), and DPM-Solver++ at 25 steps;
- **text-to-image**: a small ``StableDiffusionPipeline`` (benchmark.generators.tiny_pipeline.write_text_pipeline
  at widths 32/64, 16 × 16 latents, 32 px RGB images converted to the dataset's 1 × 28 × 28), DDIM 50 steps at
  the text-to-image default guidance 7.5;
- **SD-1.5-sized UNet call** (unless ``--no-sd15``): one call of a ``UNet2DConditionModel`` at Stable Diffusion
  1.5's size (860 M parameters, 64 × 64 latents, text states of 77 × 768) on a guided batch of one image; a
  50-step DDIM image takes 50 such calls (plus the VAE decode, not measured), which is why a real text-to-image
  model is sampled on a GPU, not here.

Seconds per image: median over ``--repeats`` runs of one bank of ``--images`` images (after a warm-up), divided by
the bank size.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from _docs import write_section  # noqa: E402 - benchmarks/_docs.py, beside this script
from benchmark.core.errors import exits_on_user_error  # noqa: E402 - a bad entry name: message, exit 2

HEADING = "## Pipeline generator: sampling time per image on CPU"
SHAPE = (1, 28, 28)  # BreastMNIST's images: what the bank is converted to


def class_folder(folder: Path) -> tuple[Path, int]:
    """A DDIMPipeline with the `ddpm` entry's UNet (random weights, seed 0); (folder, UNet parameters)."""
    from diffusers import DDIMPipeline, DDIMScheduler

    from benchmark.core import registry

    ddpm = registry.create("generator", "ddpm", num_classes=2, image_shape=SHAPE)
    unet = ddpm._build_unet(0).cpu()
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=True)
    DDIMPipeline(unet=unet, scheduler=scheduler).save_pretrained(str(folder))
    return folder, sum(p.numel() for p in unet.parameters())


def text_folder(folder: Path) -> tuple[Path, int]:
    from diffusers import UNet2DConditionModel

    from benchmark.generators.tiny_pipeline import write_text_pipeline

    write_text_pipeline(folder, widths=(32, 64), latent_size=16, cross_attention_dim=64, norm_groups=8,
                        max_length=32)
    unet = UNet2DConditionModel.from_pretrained(str(folder), subfolder="unet", local_files_only=True)
    return folder, sum(p.numel() for p in unet.parameters())


def per_image(folder: Path, images: int, repeats: int, **config) -> float:
    """Median seconds per image of ``repeats`` banks of ``images`` images of class 1 (one warm-up bank of 1)."""
    from benchmark.generators.pipeline import DiffusersPipeline

    import numpy as np

    gen = DiffusersPipeline(2, SHAPE, path=str(folder), **config)
    gen.fit(np.zeros((2, *SHAPE), np.uint8), np.array([0, 1]), seed=0)  # trains nothing: loads the folder
    gen.sample(1, 1, seed=99)
    times = []
    for r in range(repeats):
        start = time.perf_counter()
        bank = gen.sample(images, 1, seed=r)
        times.append(time.perf_counter() - start)
        assert bank.shape == (images, *SHAPE)
    return statistics.median(times) / images


def sd15_call() -> tuple[float, int]:
    """Seconds of one SD-1.5-sized UNet call on a guided batch of one image (batch 2), after one warm-up call."""
    import torch
    from diffusers import UNet2DConditionModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8).eval()
    x, states = torch.randn(2, 4, 64, 64), torch.randn(2, 77, 768)
    t = torch.tensor([500, 500])
    times = []
    with torch.no_grad():
        for _ in range(2):
            start = time.perf_counter()
            unet(x, t, encoder_hidden_states=states)
            times.append(time.perf_counter() - start)
    return times[-1], sum(p.numel() for p in unet.parameters())


@exits_on_user_error
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8, help="images per bank (default 8)")
    parser.add_argument("--repeats", type=int, default=3, help="banks timed; the median counts (default 3)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: the local executor runs one job per core)")
    parser.add_argument("--no-sd15", action="store_true", help="skip the SD-1.5-sized UNet call (3.4 GB, minutes)")
    parser.add_argument("--write-docs", action="store_true", help=f"write '{HEADING}' in docs/benchmarks.md")
    args = parser.parse_args(argv)
    if args.images < 1 or args.repeats < 1:
        parser.error("--images and --repeats must be at least 1")
    import torch

    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        cls, cls_params = class_folder(Path(tmp) / "class")
        txt, txt_params = text_folder(Path(tmp) / "text")
        cases = [
            ("class-conditional", f"`ddpm` entry's UNet2DModel, {cls_params / 1e6:.1f} M", cls,
             "ddim", 50, 1.0, {"null_class": 2}),
            ("class-conditional", f"`ddpm` entry's UNet2DModel, {cls_params / 1e6:.1f} M", cls,
             "ddim", 50, 2.0, {"null_class": 2}),
            ("class-conditional", f"`ddpm` entry's UNet2DModel, {cls_params / 1e6:.1f} M", cls,
             "dpm_solver", 25, 2.0, {"null_class": 2}),
            ("text-to-image", f"small StableDiffusionPipeline, UNet {txt_params / 1e6:.2f} M, 32 px RGB", txt,
             "ddim", 50, 7.5, {"prompts": ["clear tissue", "a dark mass"]}),
        ]
        for kind, model, folder, sampler, steps, guidance, extra in cases:
            s = per_image(folder, args.images, args.repeats, sampler=sampler, sampling_steps=steps,
                          guidance_scale=guidance, sample_batch_size=args.images, **extra)
            rows.append((kind, model, sampler, steps, guidance, s))
            print(f"{kind} | {model} | {sampler} {steps} | guidance {guidance:g} | {s:.3f} s/image", flush=True)
    sd15 = None if args.no_sd15 else sd15_call()
    if sd15:
        print(f"SD-1.5-sized UNet ({sd15[1] / 1e6:.0f} M): one guided call {sd15[0]:.1f} s", flush=True)
    table = ["| pipeline | model | sampler | steps | guidance | s / image | images / s |",
             "|---|---|---|---:|---:|---:|---:|"]
    table += [f"| {k} | {m} | {s} | {n} | {g:g} | {t:.3f} | {1 / t:.2f} |" for k, m, s, n, g, t in rows]
    text = "\n".join(table)
    if sd15:
        text += (f"\n\nOne call of a UNet at Stable Diffusion 1.5's size ({sd15[1] / 1e6:.0f} M parameters, 64 × 64 "
                 f"latents, guided batch of one image): {sd15[0]:.1f} s, so a 50-step DDIM image needs about "
                 f"{50 * sd15[0] / 60:.0f} min of UNet calls alone on this CPU — a text-to-image model of that size "
                 "is sampled on a GPU (the generator stage uses one when the job has it).")
    print(text)
    if args.write_docs:
        load = os.getloadavg()[0]
        intro = (f"`nice python benchmarks/bench_pipeline.py --write-docs` ({time.strftime('%Y-%m-%d')}; no GPU "
                 f"lent to this task): {platform.machine()} CPU, {args.threads} torch thread(s), torch "
                 f"{torch.__version__}, load average {load:.1f} at the end of the run. Pipeline folders written "
                 "with save_pretrained from random weights (sampling cost does not depend on them) and sampled "
                 "through the `pipeline` generator (`DiffusersPipeline.sample`, what the generator stage calls), "
                 f"class 1, banks of {args.images} images converted to 1 × 28 × 28, median of {args.repeats} "
                 "banks after a warm-up. Guidance ≠ 1 runs the conditional and null passes as one doubled batch.")
        import textwrap

        write_section(HEADING, textwrap.fill(intro, 116, break_on_hyphens=False) + "\n\n" + text + "\n")
        print(f"wrote '{HEADING}' in docs/benchmarks.md")


if __name__ == "__main__":
    main()
