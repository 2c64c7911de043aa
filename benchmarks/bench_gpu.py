"""Benchmark on one GPU in at most ~5 minutes: training images/s of the harness vs a bare PyTorch loop at 28 and
128 px (resnet18), aggregate images/s with 1/2/4/8 jobs sharing the device (``jobs_per_device``), and DDPM sampling
images/s per sampler; prints the markdown rows for docs/benchmarks.md.

    .venv/bin/python benchmarks/bench_gpu.py                 # on a machine with a CUDA GPU, from the checkout
    .venv/bin/python benchmarks/bench_gpu.py --write-docs    # also writes its section of docs/benchmarks.md
    .venv/bin/python benchmarks/bench_gpu.py --cpu-smoke     # every part for a few steps on CPU (tests/test_bench_gpu.py)
    .venv/bin/python benchmarks/bench_gpu.py --cpu-jobs      # only jobs_per_device, timed on this machine's CPU cores

Needs nothing but the checkout and its venv. Data: the real BreastMNIST training images when
$GENMED_DATA_DIR/breastmnist.npz exists (tiled to a fixed number of images; 128 px: upsampled), else random uint8
images of the same shape (said in the output): throughput does not depend on pixel values. Without a CUDA device
(and without --cpu-smoke) it says so and exits 0 having measured nothing.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
from _docs import write_section  # noqa: E402 - benchmarks/_docs.py, beside this script

HEADING = "## GPU throughput"
NO_CUDA = ("no CUDA device: benchmarks/bench_gpu.py measures GPU throughput and measured nothing here; run it on a "
           "machine with a CUDA GPU (or add --cpu-smoke to check that it runs end to end on CPU)")

# (images per job, batch, epochs: the first is warm-up) per image size, sized for a few seconds each on one GPU
FULL = {"sizes": {28: (16384, 128, 3), 128: (4096, 128, 3)}, "jobs": (1, 2, 4, 8), "jobs_size": 28,
        "samplers": "ddim:50,dpm_solver:25,ddim:25,ddpm:1000", "sample_batch": 256, "repeats": 3,
        "generator": "ddpm"}
CPU_JOBS = {"size": 28, "images": 2048, "batch": 128, "epochs": 3}  # --cpu-jobs: K = 1, 2 on the CPU cores
SMOKE = {"sizes": {28: (32, 16, 2), 128: (8, 8, 2)}, "jobs": (1, 2), "jobs_size": 28, "threads": 1,
         "samplers": "ddim:2,ddpm:3", "sample_batch": 2, "repeats": 1, "generator": "ddpm_small"}


# ------------------------------------------------------------------------------------------------ data
def benchmark_data(size: int, n: int):
    """(DataBundle with train/val/test splits, a note saying where the pixels come from). Train holds `n` images."""
    import numpy as np

    from benchmark.data.bundle import DataBundle, Split

    folder = Path(os.environ.get("GENMED_DATA_DIR") or ROOT.parent / "shared" / "data")
    rng = np.random.default_rng(0)
    if (folder / "breastmnist.npz").is_file():
        from benchmark.run.cell import load_bundle

        os.environ["GENMED_DATA_DIR"] = str(folder)
        real = load_bundle("breastmnist", 28)
        images, labels = real.splits["train"].images, real.splits["train"].labels
        note = f"real BreastMNIST training images ({folder / 'breastmnist.npz'}), tiled to {n}"
        if size != 28:
            import torch

            images = torch.nn.functional.interpolate(torch.from_numpy(images).float(), size=(size, size),
                                                     mode="bilinear", align_corners=False)
            images = images.round().clamp(0, 255).to(torch.uint8).numpy()
            note += f", upsampled to {size} px"
        reps = math.ceil(n / len(labels))
        images, labels = np.tile(images, (reps, 1, 1, 1))[:n], np.tile(labels, reps)[:n]
    else:
        images = rng.integers(0, 256, size=(n, 1, size, size), dtype=np.uint8)
        labels = rng.integers(0, 2, size=n).astype(np.int64)
        note = (f"random uint8 images ({n}×1×{size}×{size}): no breastmnist.npz in {folder}; throughput does not "
                "depend on pixel values")
    held = max(8, min(256, n // 8))
    splits = {"train": Split(np.ascontiguousarray(images), labels.astype(np.int64)),
              "val": Split(np.ascontiguousarray(images[:held]), labels[:held].astype(np.int64)),
              "test": Split(np.ascontiguousarray(images[:held]), labels[:held].astype(np.int64))}
    for split in splits.values():  # both classes in every split (AUROC needs them)
        split.labels[:2] = [0, 1]
    bundle = DataBundle(name="breastmnist-bench", image_size=size, task="binary-class", num_classes=2,
                        label_names=["malignant", "normal, benign"], splits=splits)
    return bundle, note


def backbone(name: str = "resnet18"):
    from benchmark.core import registry

    return registry.create("backbone", name)


def training_settings(batch: int, epochs: int) -> dict:
    from benchmark.core.specs import TRAINING_DEFAULTS

    return {**TRAINING_DEFAULTS, "epochs": epochs, "batch_size": batch, "mixed_precision": "bf16",
            "save_checkpoint": False, "track": False}


def rate(n: int, seconds: list[float]) -> float:
    """Images/s over the epochs after the first (warm-up: cuDNN autotuning, allocator)."""
    timed = seconds[1:] or seconds
    return n * len(timed) / sum(timed)


# ------------------------------------------------------------------------------------------------ the parts
def harness_rate(bundle, training) -> tuple[float, str]:
    """The harness's job (benchmark.run.train.train_classifier: Accelerate, bf16 where supported, channels_last,
    data on the device): training images/s, and the precision it used."""
    import numpy as np

    from benchmark.core.training_set import TrainingSet
    from benchmark.run.train import train_classifier

    train = bundle.splits["train"]
    outcome = train_classifier(TrainingSet(train.images, train.labels, np.zeros(len(train.labels), bool)), bundle,
                               0, backbone(), training, init_seed=0)
    return rate(len(train.labels), [h["train_s"] for h in outcome.history]), outcome.mixed_precision


def bare_rate(bundle, training, device) -> float:
    """A bare PyTorch loop doing the same work: the same model, data on the device, the same batched augmentation,
    AdamW, the same precision and memory format; no Accelerate, no per-epoch validation."""
    import torch

    from benchmark.data.augment import augment, normalize, to_float
    from benchmark.run.train import resolve_mixed_precision

    torch.manual_seed(0)
    train = bundle.splits["train"]
    model = backbone().build(bundle.n_channels, bundle.num_classes, bundle.image_size).to(device)
    precision, _ = resolve_mixed_precision(training["mixed_precision"], device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    optimizer = torch.optim.AdamW(model.parameters(), lr=training["lr"], weight_decay=training["weight_decay"])
    x_all = torch.from_numpy(train.images).to(device)
    y_all = torch.from_numpy(train.labels).to(device)
    generator = torch.Generator(device=device).manual_seed(0)
    batch, seconds = training["batch_size"], []
    for _ in range(training["epochs"]):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        model.train()
        order = torch.randperm(len(y_all), device=device, generator=generator)
        for i in range(0, len(order), batch):
            index = order[i:i + batch]
            x = normalize(augment(to_float(x_all[index]), training["augment"], generator))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = torch.nn.functional.cross_entropy(model(x), y_all[index])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
    return rate(len(y_all), seconds)


def _job_worker(size, n, batch, epochs, threads, barrier, results) -> None:
    """One of K processes sharing the device (as benchmark.run.batch.run_workers runs them): one harness job."""
    os.environ["GENMED_TORCH_THREADS"] = str(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        bundle, _ = benchmark_data(size, n)
        training = training_settings(batch, epochs)
        import torch  # noqa: F401  (CUDA context and imports before the common start)

        barrier.wait(timeout=600)
        value, _ = harness_rate(bundle, training)
        results.put(("ok", value))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which prints it
        results.put(("error", f"{type(exc).__name__}: {exc}"))


def jobs_per_device_rates(k: int, size: int, n: int, batch: int, epochs: int, threads: int) -> list[float]:
    """Training images/s of each of `k` harness jobs running at once on the device (worker processes started
    with spawn, as jobs_per_device does); their sum is the device's aggregate throughput."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(k), context.Queue()
    workers = [context.Process(target=_job_worker, args=(size, n, batch, epochs, threads, barrier, results))
               for _ in range(k)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=900) for _ in workers]
    for worker in workers:
        worker.join()
    errors = [text for kind, text in outcomes if kind == "error"]
    if errors:
        raise RuntimeError(f"jobs_per_device {k}: {len(errors)} worker(s) failed: {errors[0]}")
    return [value for _, value in outcomes]


def sampling_rows(generator: str, size: int, samplers: str, batch: int, repeats: int, device) -> list[tuple]:
    """(sampler, steps, seconds per batch, images/s) with benchmarks/bench_sampling.py's measurement."""
    from bench_sampling import measure

    from benchmark.core import registry

    model = registry.create("generator", generator, num_classes=2, image_shape=(1, size, size), device=str(device))
    model.model = model._build_unet(0).eval()
    rows = []
    for item in samplers.split(","):
        sampler, steps = item.split(":")[0], int(item.split(":")[1])
        seconds = measure(model, sampler, steps, batch, repeats if steps <= 100 else 1)
        rows.append((sampler, steps, seconds, batch / seconds))
    return rows


# ------------------------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--cpu-smoke", action="store_true", help="run every part for a few steps on CPU")
    parser.add_argument("--write-docs", action="store_true", help=f"write '{HEADING}' in docs/benchmarks.md")
    parser.add_argument("--cpu-jobs", action="store_true", help="only the jobs_per_device part, timed on the CPU "
                        "cores (K = 1 and K = cores, torch threads = cores / K); prints its rows")
    args = parser.parse_args(argv)
    if args.cpu_jobs:
        return cpu_jobs()
    if args.cpu_smoke and args.write_docs:
        parser.error("--write-docs writes measured GPU rows; a --cpu-smoke run measures nothing")

    import torch

    if not args.cpu_smoke and not torch.cuda.is_available():
        print(NO_CUDA, file=sys.stderr)
        return 0
    plan = SMOKE if args.cpu_smoke else FULL
    device = torch.device("cpu" if args.cpu_smoke else "cuda")
    if args.cpu_smoke:  # one thread per process: quick on a busy machine, no OpenMP oversubscription
        os.environ.update({"ACCELERATE_USE_CPU": "true", "GENMED_TORCH_THREADS": "1", "OMP_NUM_THREADS": "1"})
        torch.set_num_threads(1)
    started = time.perf_counter()
    if device.type == "cuda":
        name = torch.cuda.get_device_name(0)
        bf16 = torch.cuda.is_bf16_supported()
        where = f"{name}, bf16 {'supported' if bf16 else 'not supported'}"
    else:
        where = f"CPU smoke ({platform.processor() or platform.machine()}), a few steps: not a measurement"
    header = f"device: {where}; torch {torch.__version__}"
    print(header, flush=True)

    training_rows, notes = [], []
    for size, (n, batch, epochs) in plan["sizes"].items():
        bundle, note = benchmark_data(size, n)
        notes.append(f"{size} px: {note}")
        print(f"data {size} px: {note}", flush=True)
        training = training_settings(batch, epochs)
        harness, precision = harness_rate(bundle, training)
        bare = bare_rate(bundle, training, device)
        training_rows.append((size, n, batch, epochs, precision, harness, bare))
        print(f"{size:>4} px: harness {harness:10.1f} images/s, bare loop {bare:10.1f} images/s, "
              f"ratio {harness / bare:.3f} ({precision}) [{time.perf_counter() - started:.0f} s]", flush=True)

    size = plan["jobs_size"]
    n, batch, epochs = plan["sizes"][size]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    job_rows = []
    for k in plan["jobs"]:
        threads = plan.get("threads") or max(1, cpus // k)
        rates = jobs_per_device_rates(k, size, n, batch, epochs, threads)
        job_rows.append((k, threads, sum(rates), statistics.mean(rates)))
        print(f"jobs_per_device {k}: aggregate {sum(rates):10.1f} images/s, per job {statistics.mean(rates):9.1f} "
              f"[{time.perf_counter() - started:.0f} s]", flush=True)

    sample_rows = sampling_rows(plan["generator"], 28, plan["samplers"], plan["sample_batch"], plan["repeats"],
                                device)
    for sampler, steps, seconds, ips in sample_rows:
        print(f"{sampler:>10} {steps:5d} steps: {seconds:8.3f} s / batch = {ips:10.2f} images/s", flush=True)
    total = time.perf_counter() - started

    command = "python benchmarks/bench_gpu.py" + (" --cpu-smoke" if args.cpu_smoke else "")
    lines = [HEADING, "", f"`{command}` on {where}; torch {torch.__version__}; {total:.0f} s in all. Data: "
             + "; ".join(notes) + ".", "",
             "| image size | images × epochs (1st = warm-up) | batch | precision | harness images/s | "
             "bare loop images/s | harness / bare |",
             "| --- | --- | --- | --- | ---: | ---: | ---: |"]
    lines += [f"| {s} px | {n_} × {e} | {b} | {p} | {h:.0f} | {bl:.0f} | {h / bl:.3f} |"
              for s, n_, b, e, p, h, bl in training_rows]
    lines += ["", f"Several harness jobs at once on the device ({size} px resnet18, {n} images × {epochs} epochs "
              "each, one process per job as `jobs_per_device` runs them):", "",
              "| jobs_per_device | torch threads per job | aggregate images/s | per job images/s | vs 1 job |",
              "| --- | --- | ---: | ---: | ---: |"]
    single = job_rows[0][2]
    lines += [f"| {k} | {t} | {agg:.0f} | {per:.0f} | {agg / single:.2f}× |" for k, t, agg, per in job_rows]
    lines += ["", f"DDPM sampling (registry `{plan['generator']}` UNet, 28 px, batch {plan['sample_batch']}, "
              "benchmarks/bench_sampling.py's measurement):", "",
              "| sampler | steps | seconds / batch | images/s |", "| --- | --- | ---: | ---: |"]
    lines += [f"| {s} | {st} | {sec:.3f} | {ips:.1f} |" for s, st, sec, ips in sample_rows]
    print("\n" + "\n".join(lines), flush=True)
    if args.write_docs:

        write_section(HEADING, "\n".join(lines) + "\n")
    return 0


def cpu_jobs() -> int:
    """jobs_per_device on CPU: K = 1 and K = cores harness jobs at once (threads = cores / K), aggregate images/s."""
    import torch

    os.environ["ACCELERATE_USE_CPU"] = "true"
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    c = CPU_JOBS
    print(f"jobs_per_device on CPU ({platform.processor() or platform.machine()}, {cpus} cores; torch "
          f"{torch.__version__}): resnet18 {c['size']} px, {c['images']} images × {c['epochs']} epochs per job "
          f"(1st = warm-up), batch {c['batch']}, fp32", flush=True)
    print("| jobs_per_device | torch threads per job | aggregate images/s | per job images/s | vs 1 job |")
    print("| --- | --- | ---: | ---: | ---: |")
    single = None
    for k in sorted({1, cpus}):
        rates = jobs_per_device_rates(k, c["size"], c["images"], c["batch"], c["epochs"], max(1, cpus // k))
        single = single or sum(rates)
        print(f"| {k} | {max(1, cpus // k)} | {sum(rates):.0f} | {statistics.mean(rates):.0f} | "
              f"{sum(rates) / single:.2f}× |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
