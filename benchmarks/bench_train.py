"""Benchmark: training throughput of the harness's job vs a bare PyTorch loop and vs a per-sample PIL pipeline.

All three train the same model (resnet18 as registered, 28 px) on the same real BreastMNIST training images with
the same batch size, optimiser and augmentation family. Throughput = training images per second over the epochs
after the first (warm-up). Targets: harness ≥ 0.95 × bare loop; harness ≥ 1.3 × PIL pipeline.
"""

import argparse
import math
import statistics
import time


def bare_loop(images, labels, backbone, bundle, training, epochs, seed):
    import torch

    from benchmark.data.augment import augment, normalize, to_float
    from benchmark.run.train import warmup_cosine

    torch.manual_seed(seed)
    model = backbone.build(bundle.n_channels, bundle.num_classes, bundle.image_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=training["lr"], weight_decay=training["weight_decay"])
    batch = training["batch_size"]
    steps = math.ceil(len(labels) / batch)
    scheduler = warmup_cosine(optimizer, steps, epochs * steps)
    x_all, y_all = torch.from_numpy(images), torch.from_numpy(labels)
    generator = torch.Generator().manual_seed(seed)
    seconds = []
    for _ in range(epochs):
        started = time.perf_counter()
        model.train()
        order = torch.randperm(len(y_all), generator=generator)
        for i in range(0, len(order), batch):
            index = order[i:i + batch]
            x = normalize(augment(to_float(x_all[index]), training["augment"], generator))
            loss = torch.nn.functional.cross_entropy(model(x), y_all[index])
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        seconds.append(time.perf_counter() - started)
    return seconds


def pil_pipeline(images, labels, backbone, bundle, training, epochs, seed, workers):
    """The earlier single-purpose projects' input path: uint8 → PIL per sample → torchvision transforms."""
    import torch
    from PIL import Image
    from torchvision import transforms

    transform = transforms.Compose([
        transforms.RandomHorizontalFlip(), transforms.RandomRotation(10),
        transforms.ColorJitter(brightness=0.1, contrast=0.1), transforms.ToTensor(),
        transforms.Normalize([0.5], [0.5])])

    class PILDataset(torch.utils.data.Dataset):
        def __len__(self):
            return len(labels)

        def __getitem__(self, i):
            return transform(Image.fromarray(images[i, 0])), int(labels[i])

    torch.manual_seed(seed)
    model = backbone.build(bundle.n_channels, bundle.num_classes, bundle.image_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=training["lr"], weight_decay=training["weight_decay"])
    loader = torch.utils.data.DataLoader(PILDataset(), batch_size=training["batch_size"], shuffle=True,
                                         num_workers=workers, persistent_workers=workers > 0)
    seconds = []
    for _ in range(epochs):
        started = time.perf_counter()
        model.train()
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        seconds.append(time.perf_counter() - started)
    return seconds


def input_path_rates(images, labels, training, seed, repeats=5) -> dict:
    """Images/s of producing augmented, normalised training batches alone (no model): where the pipelines differ."""
    import torch
    from PIL import Image
    from torch.utils.data import DataLoader
    from torchvision import transforms

    from benchmark.data.augment import augment, normalize, to_float
    from benchmark.run.train import TensorPairs, keep_batch

    generator = torch.Generator().manual_seed(seed)
    batched = DataLoader(TensorPairs(images, labels), batch_size=training["batch_size"], shuffle=True,
                         generator=generator, collate_fn=keep_batch)
    transform = transforms.Compose([
        transforms.RandomHorizontalFlip(), transforms.RandomRotation(10),
        transforms.ColorJitter(brightness=0.1, contrast=0.1), transforms.ToTensor(), transforms.Normalize([0.5], [0.5])])

    class PILDataset(torch.utils.data.Dataset):
        def __len__(self):
            return len(labels)

        def __getitem__(self, i):
            return transform(Image.fromarray(images[i, 0])), int(labels[i])

    per_sample = DataLoader(PILDataset(), batch_size=training["batch_size"], shuffle=True)

    def timed(loop):
        started = time.perf_counter()
        for _ in range(repeats):
            loop()
        return repeats * len(labels) / (time.perf_counter() - started)

    def harness_loop():
        for x, _ in batched:
            normalize(augment(to_float(x), training["augment"], generator))

    def pil_loop():
        for _ in per_sample:
            pass

    return {"batched on-device augmentation (harness)": timed(harness_loop),
            "per-sample PIL + torchvision transforms": timed(pil_loop)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per variant run; the first is warm-up")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; variants alternate within a round and the "
                        "median over rounds is reported (robust to other work on the machine)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--backbone", default="resnet18")
    args = parser.parse_args()

    import numpy as np

    from benchmark.core import registry
    from benchmark.core.specs import TRAINING_DEFAULTS
    from benchmark.core.training_set import TrainingSet
    from benchmark.run.cell import load_bundle
    from benchmark.run.train import train_classifier

    bundle = load_bundle("breastmnist", 28)
    train = bundle.splits["train"]
    training = {**TRAINING_DEFAULTS, "epochs": args.epochs, "batch_size": args.batch_size, "save_checkpoint": False}
    backbone = registry.create("backbone", args.backbone)
    n = len(train.labels)

    def rate(seconds):
        return n * len(seconds[1:]) / sum(seconds[1:])

    variants = {
        "harness (Accelerate job)": lambda: [h["train_s"] for h in train_classifier(
            TrainingSet(train.images, train.labels, np.zeros(n, bool)), bundle, 0, backbone, training,
            init_seed=0).history],
        "bare PyTorch loop": lambda: bare_loop(train.images, train.labels, backbone, bundle, training, args.epochs, 0),
    }
    for workers in (0, 2):
        variants[f"PIL + torchvision transforms, {workers} workers"] = (
            lambda w=workers: pil_pipeline(train.images, train.labels, backbone, bundle, training, args.epochs, 0, w))
    runs = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, run in variants.items():
            runs[name].append(rate(run()))
    results = {name: statistics.median(values) for name, values in runs.items()}
    harness = results["harness (Accelerate job)"]
    best_pil = max(v for k, v in results.items() if k.startswith("PIL"))
    print(f"{args.backbone}, BreastMNIST train ({n} images, 28 px), batch {args.batch_size}, "
          f"epochs 2..{args.epochs} timed, median of {args.rounds} alternating rounds")
    for name, value in results.items():
        print(f"  {name:<42} {value:8.1f} images/s   (rounds: {', '.join(f'{v:.0f}' for v in runs[name])})")
    print(f"  harness / bare loop      = {harness / results['bare PyTorch loop']:.3f}  (target ≥ 0.95)")
    print(f"  harness / best PIL setup = {harness / best_pil:.3f}  (target ≥ 1.3)")
    inputs = input_path_rates(train.images, train.labels, training, 0)
    print("input path alone (batches produced, no model):")
    for name, value in inputs.items():
        print(f"  {name:<42} {value:10.0f} images/s")
    values = list(inputs.values())
    print(f"  ratio = {values[0] / values[1]:.1f}x")


if __name__ == "__main__":
    main()
