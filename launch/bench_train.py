"""Benchmark: training throughput of the harness's job vs a bare PyTorch loop and vs a per-sample PIL pipeline.

All three train the same model (resnet18 as registered, 28 px) on the same real BreastMNIST training images with
the same batch size, optimiser and augmentation family. Throughput = training images per second over the epochs
after the first (warm-up). Targets: harness ≥ 0.95 × bare loop; harness ≥ 1.3 × PIL pipeline.
"""

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def bare_loop(images, labels, backbone, bundle, training, epochs, seed):
    import torch

    from benchmark.data.augment import augment, normalize, to_float
    from benchmark.train import warmup_cosine

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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=4, help="epochs per variant; the first is warm-up")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--backbone", default="resnet18")
    args = parser.parse_args()

    import numpy as np

    from benchmark import registry
    from benchmark.cell import load_bundle
    from benchmark.generators.base import TrainingSet
    from benchmark.specs import TRAINING_DEFAULTS
    from benchmark.train import train_classifier

    bundle = load_bundle("breastmnist", 28)
    train = bundle.splits["train"]
    training = {**TRAINING_DEFAULTS, "epochs": args.epochs, "batch_size": args.batch_size, "save_checkpoint": False}
    entry = registry.get("backbone", args.backbone)
    backbone = entry.load()(name=entry.name, **entry.config)
    n = len(train.labels)

    def rate(seconds):
        return n * len(seconds[1:]) / sum(seconds[1:])

    results = {}
    outcome = train_classifier(TrainingSet(train.images, train.labels, np.zeros(n, bool)), bundle, 0, backbone,
                               training, init_seed=0)
    results["harness (Accelerate job)"] = rate([h["train_s"] for h in outcome["history"]])
    results["bare PyTorch loop"] = rate(bare_loop(train.images, train.labels, backbone, bundle, training,
                                                  args.epochs, 0))
    for workers in (0, 2):
        results[f"PIL + torchvision transforms, {workers} workers"] = rate(
            pil_pipeline(train.images, train.labels, backbone, bundle, training, args.epochs, 0, workers))
    harness = results["harness (Accelerate job)"]
    best_pil = max(v for k, v in results.items() if k.startswith("PIL"))
    print(f"{args.backbone}, BreastMNIST train ({n} images, 28 px), batch {args.batch_size}, "
          f"epochs 2..{args.epochs} timed")
    for name, value in results.items():
        print(f"  {name:<42} {value:8.1f} images/s")
    print(f"  harness / bare loop      = {harness / results['bare PyTorch loop']:.3f}  (target ≥ 0.95)")
    print(f"  harness / best PIL setup = {harness / best_pil:.3f}  (target ≥ 1.3)")


if __name__ == "__main__":
    main()
