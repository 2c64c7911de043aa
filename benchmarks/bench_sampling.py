"""Benchmark: images/s of DDIM / DPM-Solver sampling at few steps vs 1000-step DDPM sampling on the same UNet.

    python benchmarks/bench_sampling.py --write-docs     # registry `ddpm` UNet at 28 px, writes docs/benchmarks.md

Sampling cost does not depend on the weights, so the UNet is the registry entry's architecture, freshly initialised.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from _docs import write_section  # noqa: E402 - benchmarks/_docs.py, beside this script

HEADING = "## Diffusion sampling speed"


def measure(model, sampler: str, steps: int, batch: int, repeats: int) -> float:
    """Median seconds over ``repeats`` runs of one batch of ``batch`` images (after a short warm-up)."""
    model.sample(batch, 0, seed=0, sampler=sampler, sampling_steps=min(steps, 2))
    times = []
    for r in range(repeats):
        start = time.perf_counter()
        model.sample(batch, 0, seed=r, sampler=sampler, sampling_steps=steps)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", default="ddpm", help="registry generator entry (a DDPM)")
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--samplers", default="ddim:50,dpm_solver:25,ddim:25,ddpm:1000",
                        help="comma-separated sampler:steps; the ddpm one is the baseline")
    parser.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the entry's)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per sampler of ≤ 100 steps (median is kept)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--write-docs", action="store_true", help=f"write '{HEADING}' in docs/benchmarks.md")
    args = parser.parse_args(argv)

    import torch

    from benchmark.core import registry

    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {"device": args.device} if args.guidance is None else {"device": args.device,
                                                                       "guidance_scale": args.guidance}
    model = registry.create("generator", args.generator, num_classes=2,
                            image_shape=(args.channels, args.image_size, args.image_size), **overrides)
    model.model = model._build_unet(0).eval()
    runs = [(s.split(":")[0], int(s.split(":")[1])) for s in args.samplers.split(",")]
    rows = []
    for sampler, steps in runs:
        seconds = measure(model, sampler, steps, args.batch, args.repeats if steps <= 100 else 1)
        rows.append((sampler, steps, seconds, args.batch / seconds))
        print(f"{sampler:>10} {steps:5d} steps: {seconds:8.2f} s / {args.batch} images "
              f"= {args.batch / seconds:8.3f} images/s", flush=True)
    baseline = next((r for r in rows if r[0] == "ddpm"), None)
    params = sum(p.numel() for p in model.model.parameters())
    device = str(model.device) if model.device.type != "cpu" else \
        f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads)"
    lines = [HEADING, "",
             f"UNet of registry entry `{args.generator}` (v{registry.get('generator', args.generator).version}, "
             f"{params / 1e6:.1f} M parameters), "
             f"{args.channels}×{args.image_size}×{args.image_size}, batch {args.batch}, guidance scale "
             f"{model.cfg['guidance_scale']} (two UNet passes per call when ≠ 1), device {device}, "
             f"torch {torch.__version__}; seconds are the median of {args.repeats} runs (one run for more than 100 "
             "steps). Each step is one UNet call, so the expected speed-up is 1000 / steps; a measured one differs "
             "from it when the machine's load changes between runs (compare the ms / step column).", "",
             "| sampler | steps | seconds / batch | ms / step | images/s | speed-up vs DDPM |",
             "| --- | --- | --- | --- | --- | --- |"]
    for sampler, steps, seconds, ips in rows:
        speedup = f"{baseline[2] / seconds:.1f}×" if baseline else "–"
        lines.append(f"| {sampler} | {steps} | {seconds:.2f} | {1000 * seconds / steps:.0f} | {ips:.3f} | {speedup} |")
    command = "python benchmarks/bench_sampling.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines += ["", f"Command: `{command.strip()}`", "", "Target: ≥ 20× faster than 1000-step DDPM at 25–50 steps.", ""]
    print("\n".join(lines))
    if args.write_docs:
        write_section(HEADING, "\n".join(lines))


if __name__ == "__main__":
    main()
