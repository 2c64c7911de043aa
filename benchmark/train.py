"""The classifier training function: one Accelerate code path for CPU, one GPU and many (cv_example order)."""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from benchmark import tracking
from benchmark.data.augment import augment, normalize, to_float
from benchmark.metrics import classification_metrics


class TensorPairs(Dataset):
    """In-memory (uint8 images, int64 labels); `__getitems__` fetches a whole batch with one indexing op."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.labels = torch.from_numpy(np.ascontiguousarray(labels)).long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index):
        return self.images[index], self.labels[index]

    def __getitems__(self, indices):
        index = torch.as_tensor(indices)
        return self.images[index], self.labels[index]


def keep_batch(batch):
    return batch


def warmup_cosine(optimizer, warmup_steps: int, total_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.no_grad()
def predict(model, loader, accelerator) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities and targets over the whole split, each sample exactly once across processes."""
    model.eval()
    all_probs, all_targets = [], []
    for images, labels in loader:
        with accelerator.autocast():
            logits = model(normalize(to_float(images)))
        probs, targets = accelerator.gather_for_metrics((logits.float().softmax(dim=1), labels))
        all_probs.append(probs.cpu())
        all_targets.append(targets.cpu())
    return torch.cat(all_probs), torch.cat(all_targets)


def train_classifier(training_set, bundle, rare_class: int, backbone, training: dict, init_seed: int,
                     run_dir: Path | None = None, progress: bool = False, state_dir: Path | None = None) -> dict:
    """Train `backbone` on `training_set`, select the epoch with the best val AUROC, evaluate it on test.

    Returns metrics (val at the selected epoch, test), the per-epoch history and timings. Writes the selected
    weights to ``run_dir/model.safetensors`` when ``training["save_checkpoint"]``. With `state_dir`, the full
    training state (``accelerator.save_state`` plus the selection state and the data-order and augmentation
    generators) is saved after every epoch, and a run that finds a saved state resumes from it: a resumed run
    ends with the same record as an uninterrupted one.
    """
    from benchmark.threads import apply_thread_limit

    apply_thread_limit()
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, set_seed

    # split_batches: batch_size is the global batch, split over the processes (DDP averages their gradients), so a
    # job computes the same thing on 1 or N processes; its key does not depend on how it is run.
    accelerator = Accelerator(mixed_precision=training["mixed_precision"],
                              dataloader_config=DataLoaderConfiguration(split_batches=True),
                              **tracking.accelerator_kwargs(training, run_dir))
    tracking.start(accelerator)
    set_seed(init_seed)

    num_classes = bundle.num_classes
    loader_generator = torch.Generator().manual_seed(init_seed)
    train_loader = DataLoader(TensorPairs(training_set.images, training_set.labels), batch_size=training["batch_size"],
                              shuffle=True, drop_last=False, generator=loader_generator, collate_fn=keep_batch)
    eval_loaders = [DataLoader(TensorPairs(bundle.splits[s].images, bundle.splits[s].labels),
                               batch_size=training["eval_batch_size"], collate_fn=keep_batch) for s in ("val", "test")]
    model = backbone.build(bundle.n_channels, num_classes, bundle.image_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=training["lr"], weight_decay=training["weight_decay"])
    steps_per_epoch = len(train_loader)  # global batches: with split_batches every process takes part in each
    scheduler = warmup_cosine(optimizer, training["warmup_epochs"] * steps_per_epoch,
                              training["epochs"] * steps_per_epoch)
    model, optimizer, train_loader, val_loader, test_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, *eval_loaders, scheduler)

    class_weights = training_set.class_weights
    weight = torch.as_tensor(class_weights, device=accelerator.device) if class_weights is not None else None
    criterion = torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=training["label_smoothing"])
    augment_generator = torch.Generator(device=accelerator.device).manual_seed(init_seed + accelerator.process_index)

    history, best, best_state = [], None, None
    train_seconds, train_images, start_epoch = 0.0, 0, 0
    if state_dir is not None and (Path(state_dir) / PROGRESS_FILE).is_file():
        start_epoch, history, best, best_state, train_seconds, train_images = load_progress(
            accelerator, Path(state_dir), loader_generator, augment_generator)
    epochs = range(start_epoch, training["epochs"])
    if progress and accelerator.is_main_process:
        from tqdm.auto import tqdm

        epochs = tqdm(epochs, desc="epochs", leave=False)
    for epoch in epochs:
        model.train()
        started, loss_sum, batches = time.perf_counter(), torch.zeros((), device=accelerator.device), 0
        for images, labels in train_loader:
            x = normalize(augment(to_float(images), training["augment"], augment_generator))
            with accelerator.autocast():
                loss = criterion(model(x), labels)
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.detach()
            batches += 1
            train_images += len(labels) * accelerator.num_processes
        epoch_seconds = time.perf_counter() - started
        train_seconds += epoch_seconds
        probs, targets = predict(model, val_loader, accelerator)
        val = classification_metrics(probs, targets, num_classes, rare_class)
        history.append({"epoch": epoch + 1, "train_loss": float(loss_sum) / max(1, batches), "train_s": epoch_seconds,
                        "lr": scheduler.get_last_lr()[0], "val_auroc": val["auroc"],
                        "val_balanced_accuracy": val["balanced_accuracy"]})
        tracking.log_epoch(accelerator, history[-1], val)
        score = val["auroc"] if not math.isnan(val["auroc"]) else -math.inf
        if best is None or score > best[0]:
            best = (score, epoch + 1, val)
            best_state = copy.deepcopy(accelerator.unwrap_model(model).state_dict())
        if state_dir is not None:
            save_progress(accelerator, Path(state_dir), epoch + 1, history, best, best_state, train_seconds,
                          train_images, loader_generator, augment_generator)

    accelerator.unwrap_model(model).load_state_dict(best_state)
    probs, targets = predict(model, test_loader, accelerator)
    test = classification_metrics(probs, targets, num_classes, rare_class)
    if run_dir is not None and training["save_checkpoint"] and accelerator.is_main_process:
        save_weights(best_state, Path(run_dir) / "model.safetensors")
    tracking.finish(accelerator, test, best[1])
    accelerator.wait_for_everyone()
    return {
        "metrics": {"val": best[2], "test": test},
        "best_epoch": best[1],
        "history": history,
        "train_seconds": train_seconds,
        "train_images_per_s": train_images / train_seconds if train_seconds else float("nan"),
        "device": str(accelerator.device),
        "num_processes": accelerator.num_processes,
        "mixed_precision": str(accelerator.mixed_precision),
        "is_main_process": accelerator.is_main_process,
    }


PROGRESS_FILE = "progress.json"


def save_progress(accelerator, state_dir: Path, epoch, history, best, best_state, train_seconds, train_images,
                  loader_generator, augment_generator) -> None:
    """Everything needed to resume after `epoch`, swapped in as a whole folder (a crash leaves the old one)."""
    import json
    import shutil

    from safetensors.torch import save_file

    tmp = state_dir.with_name(state_dir.name + ".tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    rank = accelerator.process_index
    save_file({"loader": loader_generator.get_state(), "augment": augment_generator.get_state().cpu()},
              str(tmp / f"generators_{rank}.safetensors"))
    if accelerator.is_main_process:
        save_file({k: v.detach().cpu().contiguous() for k, v in best_state.items()}, str(tmp / "best.safetensors"))
        (tmp / PROGRESS_FILE).write_text(json.dumps({
            "epoch": epoch, "history": history, "best_score": best[0], "best_epoch": best[1], "best_val": best[2],
            "train_seconds": train_seconds, "train_images": train_images}))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        old = state_dir.with_name(state_dir.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if state_dir.exists():
            state_dir.rename(old)
        tmp.rename(state_dir)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def load_progress(accelerator, state_dir: Path, loader_generator, augment_generator):
    import json

    from safetensors.torch import load_file

    accelerator.load_state(str(state_dir))
    generators = load_file(str(state_dir / f"generators_{accelerator.process_index}.safetensors"))
    loader_generator.set_state(generators["loader"])
    augment_generator.set_state(generators["augment"].to(augment_generator.device))
    progress = json.loads((state_dir / PROGRESS_FILE).read_text())
    best_state = load_file(str(state_dir / "best.safetensors"))
    best = (progress["best_score"], progress["best_epoch"], progress["best_val"])
    return (progress["epoch"], progress["history"], best, best_state, progress["train_seconds"],
            progress["train_images"])


def save_weights(state: dict, path: Path) -> None:
    """Weights as safetensors (no pickles), written atomically."""
    import os

    from safetensors.torch import save_file

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp))
    os.replace(tmp, path)
