"""The classifier training function: one Accelerate code path for CPU, one GPU and many (cv_example order)."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from benchmark.data.augment import augment, normalize, to_float
from benchmark.generators.imbalance import build_batch_transform, build_criterion
from benchmark.run import tracking
from benchmark.run.metrics import choose_threshold, classification_metrics, threshold_metrics
from benchmark.run.run_dir import PROGRESS_FILE


class TensorPairs(Dataset):
    """In-memory (uint8 images, int64 labels); `__getitems__` fetches a whole batch with one indexing op. With a
    `device` (a CUDA one: ``data_device``) both live there for the whole job: no host-to-device copy per batch."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, device=None):
        self.images = torch.from_numpy(np.ascontiguousarray(images)).to(device)
        self.labels = torch.from_numpy(np.ascontiguousarray(labels)).long().to(device)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index):
        return self.images[index], self.labels[index]

    def __getitems__(self, indices):
        index = torch.as_tensor(indices)
        return self.images[index], self.labels[index]


MIX_SEED_OFFSET = 1 << 32  # the batch-transform stream's seed: init seed + offset + rank (its own stream)


@dataclass
class RandomStreams:
    """The training's torch.Generator objects, saved and restored with its state so a resumed run draws the same."""

    loader: torch.Generator   # data order (the training DataLoader's shuffle)
    augment: torch.Generator  # augmentation, on the training device; seeded per process
    mix: torch.Generator      # the method's batch transform (mixup's Beta and permutation draws); per process

    @classmethod
    def seeded(cls, init_seed: int, device, process_index: int) -> "RandomStreams":
        return cls(torch.Generator().manual_seed(init_seed),
                   torch.Generator(device=device).manual_seed(init_seed + process_index),
                   torch.Generator().manual_seed(init_seed + MIX_SEED_OFFSET + process_index))

    def states(self) -> dict:
        return {"loader": self.loader.get_state(), "augment": self.augment.get_state().cpu(),
                "mix": self.mix.get_state()}

    def restore(self, states: dict) -> None:
        self.loader.set_state(states["loader"])
        self.augment.set_state(states["augment"].to(self.augment.device))
        if "mix" in states:
            self.mix.set_state(states["mix"])


@dataclass
class Progress:
    """Where training stands after ``epoch`` epochs: what a resumed run continues from (``save_progress``)."""

    epoch: int = 0
    history: list = field(default_factory=list)
    best: tuple | None = None        # (val AUROC score, epoch, val metrics) of the selected epoch so far
    best_state: dict | None = None   # the selected epoch's weights
    train_seconds: float = 0.0
    train_images: int = 0


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
                     run_dir: Path | None = None, progress: bool = False, state_dir: Path | None = None,
                     checkpoint_every_s: float = 0.0) -> dict:
    """Train `backbone` on `training_set`, select the epoch with the best val AUROC, evaluate it on test.

    Returns metrics (val at the selected epoch, test; both with the threshold metrics at the threshold chosen on
    that val split), the per-epoch history and timings. Writes the selected
    weights to ``run_dir/model.safetensors`` when ``training["save_checkpoint"]``. With `state_dir`, the full
    training state (``accelerator.save_state`` plus the selection state and the data-order and augmentation
    generators) is saved after an epoch (every epoch with ``checkpoint_every_s`` 0, else when that many seconds
    passed since the last save, or a save was requested: ``Checkpointing``), and a run that finds a saved state
    resumes from it: a resumed run
    ends with the same record as an uninterrupted one.
    """
    from benchmark.run.threads import apply_thread_limit

    apply_thread_limit()
    from accelerate import Accelerator, PartialState
    from accelerate.utils import DataLoaderConfiguration, parse_flag_from_env, set_seed

    # bf16 autocast where the device supports it; a requested bf16 trains in fp32 elsewhere (resolve_mixed_precision).
    # PartialState is a singleton that Accelerator() reuses: it must see ACCELERATE_USE_CPU (set for a multi-task CPU
    # job by benchmark.run.batch.setup_process) as Accelerator() would, or a 2-task CPU job trains as two 1-process jobs.
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    mixed_precision, precision_note = resolve_mixed_precision(training["mixed_precision"], state.device)
    # split_batches: batch_size is the global batch, split over the processes (DDP averages their gradients), so a
    # job computes the same thing on 1 or N processes; its key does not depend on how it is run.
    accelerator = Accelerator(mixed_precision=mixed_precision,
                              dataloader_config=DataLoaderConfiguration(split_batches=True),
                              **tracking.accelerator_kwargs(training, run_dir))
    tracking.start(accelerator)
    set_seed(init_seed)

    num_classes = bundle.num_classes
    streams = RandomStreams.seeded(init_seed, accelerator.device, accelerator.process_index)
    on = data_device(accelerator.device)
    train_loader = DataLoader(TensorPairs(training_set.images, training_set.labels, on),
                              batch_size=training["batch_size"], shuffle=True, drop_last=False,
                              generator=streams.loader, collate_fn=keep_batch)
    eval_loaders = [DataLoader(TensorPairs(bundle.splits[s].images, bundle.splits[s].labels, on),
                               batch_size=training["eval_batch_size"], collate_fn=keep_batch) for s in ("val", "test")]
    model = backbone.build(bundle.n_channels, num_classes, bundle.image_size)
    if accelerator.device.type == "cuda":  # NHWC convolutions (tensor cores) and cuDNN's autotuned algorithms
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
        accelerator.register_save_state_pre_hook(_contiguous_weights)  # safetensors refuses NHWC-strided tensors
    optimizer = torch.optim.AdamW(model.parameters(), lr=training["lr"], weight_decay=training["weight_decay"])
    steps_per_epoch = len(train_loader)  # global batches: with split_batches every process takes part in each
    scheduler = warmup_cosine(optimizer, training["warmup_epochs"] * steps_per_epoch,
                              training["epochs"] * steps_per_epoch)
    model, optimizer, train_loader, val_loader, test_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, *eval_loaders, scheduler)

    # The method chooses the loss and batch transform (benchmark.generators.imbalance); cross-entropy by default.
    criterion = build_criterion(training_set.loss, training_set.class_weights, training["label_smoothing"],
                                accelerator.device)
    batch_transform = build_batch_transform(training_set.batch_transform, streams.mix)

    # Resume: the saved state (if any) replaces the fresh one, down to the random streams.
    done = Progress()
    if state_dir is not None and (Path(state_dir) / PROGRESS_FILE).is_file():
        done = load_progress(accelerator, Path(state_dir), streams)
    checkpoints = Checkpointing(checkpoint_every_s)
    epochs = range(done.epoch, training["epochs"])
    if progress and accelerator.is_main_process:
        from tqdm.auto import tqdm

        epochs = tqdm(epochs, desc="epochs", leave=False)
    for epoch in epochs:
        model.train()
        started, loss_sum, batches = time.perf_counter(), torch.zeros((), device=accelerator.device), 0
        for images, labels in train_loader:
            x = normalize(augment(to_float(images), training["augment"], streams.augment))
            if batch_transform is None:
                with accelerator.autocast():
                    loss = criterion(model(x), labels)
            else:  # e.g. mixup: mixed images, loss = Σ weight · criterion(logits, targets)
                x, targets = batch_transform(x, labels)
                with accelerator.autocast():
                    logits = model(x)
                    loss = sum(w * criterion(logits, y) for w, y in targets)
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.detach()
            batches += 1
            done.train_images += len(labels) * accelerator.num_processes
        epoch_seconds = time.perf_counter() - started
        done.train_seconds += epoch_seconds
        # Validation after every epoch: the epoch with the best val AUROC is the one evaluated on test.
        probs, targets = predict(model, val_loader, accelerator)
        val = classification_metrics(probs, targets, num_classes, rare_class)
        done.epoch = epoch + 1
        done.history.append({"epoch": epoch + 1, "train_loss": float(loss_sum) / max(1, batches),
                             "train_s": epoch_seconds, "lr": scheduler.get_last_lr()[0], "val_auroc": val["auroc"],
                             "val_balanced_accuracy": val["balanced_accuracy"]})
        tracking.log_epoch(accelerator, done.history[-1], val)
        score = val["auroc"] if not math.isnan(val["auroc"]) else -math.inf
        if done.best is None or score > done.best[0]:
            done.best = (score, epoch + 1, val)
            done.best_state = copy.deepcopy(accelerator.unwrap_model(model).state_dict())
        if state_dir is not None and checkpoints.due(accelerator):
            save_started = time.perf_counter()
            save_progress(accelerator, Path(state_dir), done, streams)
            checkpoints.saved(time.perf_counter() - save_started, Path(state_dir))  # may requeue and exit here

    # Evaluation at the selected epoch: the rare-class threshold is chosen on its validation predictions
    # (benchmark.run.metrics.choose_threshold) and applied unchanged to test, beside the arg-max metrics.
    best = done.best
    accelerator.unwrap_model(model).load_state_dict(done.best_state)
    val_probs, val_targets = predict(model, val_loader, accelerator)
    threshold = choose_threshold(val_probs, val_targets, rare_class)
    val = {**best[2], **threshold_metrics(val_probs, val_targets, rare_class, threshold)}
    probs, targets = predict(model, test_loader, accelerator)
    test = {**classification_metrics(probs, targets, num_classes, rare_class),
            **threshold_metrics(probs, targets, rare_class, threshold)}
    if run_dir is not None and training["save_checkpoint"] and accelerator.is_main_process:
        save_weights(done.best_state, Path(run_dir) / "model.safetensors")
    tracking.finish(accelerator, test, best[1])
    accelerator.wait_for_everyone()
    return {
        "metrics": {"val": val, "test": test},
        "best_epoch": best[1],
        "history": done.history,
        "train_seconds": done.train_seconds,
        "train_images_per_s": done.train_images / done.train_seconds if done.train_seconds else float("nan"),
        "device": str(accelerator.device),
        "num_processes": accelerator.num_processes,
        "mixed_precision": str(accelerator.mixed_precision),
        "mixed_precision_note": precision_note,
        "is_main_process": accelerator.is_main_process,
        "checkpoints": checkpoints.summary() if state_dir is not None else None,
    }


def resolve_mixed_precision(requested: str, device) -> tuple[str, str | None]:
    """The mixed precision a job trains with on `device`, and a note when it is not the requested one. bf16
    autocast is used on CUDA devices that support it (``torch.cuda.is_bf16_supported()``); elsewhere a requested
    bf16 falls back to fp32 ("no"): Accelerate would autocast to bf16 on a CPU too, which changes CPU results (and
    is slow on most CPUs). "no" and "fp16" are passed on as they are."""
    if requested != "bf16":
        return requested, None
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16", None
    where = "on CPU" if device.type == "cpu" else f"on {device}, which does not support bf16"
    return "no", f"bf16 requested; trained in fp32 {where}"


def _contiguous_weights(models, weights, output_dir) -> None:
    """``save_state`` hook: channels_last weights packed in standard order (safetensors saves only contiguous
    tensors; loading copies them back into the channels_last parameters)."""
    for state in weights:
        for name, tensor in list(state.items()):
            if isinstance(tensor, torch.Tensor) and not tensor.is_contiguous():
                state[name] = tensor.contiguous()


def data_device(device) -> torch.device | None:
    """Where a job's uint8 images and labels live: on a CUDA device for the whole job (a 28-px split is a few MB),
    elsewhere where they are (None: host memory, nothing copied)."""
    device = torch.device(device)
    return device if device.type == "cuda" else None


class Checkpointing:
    """When the training state is saved (after an epoch): after every epoch when ``every_s`` <= 0, else once
    ``every_s`` seconds passed since the last save (or the start), and at the end of the epoch during which a save
    was requested (``defer``: the pre-timeout / preemption signal; what it would have done runs after the save).
    In a multi-process job the processes agree (a save is collective): one saves when any of them would."""

    current: "Checkpointing | None" = None  # the one of the training running now (for the signal handler)

    def __init__(self, every_s: float = 0.0):
        self.every_s, self.last = float(every_s), time.monotonic()
        self.pending = None
        self.saves, self.seconds, self.bytes = 0, 0.0, 0
        Checkpointing.current = self

    def defer(self, then) -> None:
        """Save at the end of the running epoch, then call `then` (from a signal handler)."""
        self.pending = then

    @classmethod
    def release(cls):
        """After a job (done, failed or interrupted): forget its training; returns a deferred action that no epoch
        end ran (a signal during evaluation), for the caller to run now, or None."""
        current, cls.current = cls.current, None
        return current.pending if current is not None else None

    def due(self, accelerator) -> bool:
        if self.every_s <= 0:
            return True
        wanted = self.pending is not None or time.monotonic() - self.last >= self.every_s
        if accelerator.num_processes > 1:
            flag = torch.tensor([1.0 if wanted else 0.0], device=accelerator.device)
            wanted = bool(accelerator.reduce(flag, reduction="max").item() > 0)
        return wanted

    def saved(self, seconds: float, state_dir: Path) -> None:
        self.saves, self.seconds, self.last = self.saves + 1, self.seconds + seconds, time.monotonic()
        self.bytes += sum(p.stat().st_size for p in Path(state_dir).rglob("*") if p.is_file())
        then, self.pending = self.pending, None
        if then is not None:
            then()

    def summary(self) -> dict:
        return {"every_s": self.every_s, "saves": self.saves, "save_s": self.seconds, "bytes_written": self.bytes}


def save_progress(accelerator, state_dir: Path, done: Progress, streams: RandomStreams) -> None:
    """Everything needed to resume after ``done.epoch``: ``accelerator.save_state`` (model, optimizer, scheduler),
    each process's random streams, the selected weights and ``PROGRESS_FILE``; swapped in as a whole folder (a crash
    leaves the old one)."""
    import json
    import shutil

    from safetensors.torch import save_file

    from benchmark.run.run_dir import replace_dir

    tmp = state_dir.with_name(state_dir.name + ".tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    rank = accelerator.process_index
    save_file(streams.states(), str(tmp / f"generators_{rank}.safetensors"))
    if accelerator.is_main_process:
        save_file({k: v.detach().cpu().contiguous() for k, v in done.best_state.items()},
                  str(tmp / "best.safetensors"))
        score, best_epoch, best_val = done.best
        (tmp / PROGRESS_FILE).write_text(json.dumps({
            "epoch": done.epoch, "history": done.history, "best_score": score, "best_epoch": best_epoch,
            "best_val": best_val, "train_seconds": done.train_seconds, "train_images": done.train_images}))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        replace_dir(tmp, state_dir)
    accelerator.wait_for_everyone()


def load_progress(accelerator, state_dir: Path, streams: RandomStreams) -> Progress:
    """What ``save_progress`` wrote: restores the accelerator's state and `streams`, returns the Progress."""
    import json

    from safetensors.torch import load_file

    accelerator.load_state(str(state_dir))
    streams.restore(load_file(str(state_dir / f"generators_{accelerator.process_index}.safetensors")))
    saved = json.loads((state_dir / PROGRESS_FILE).read_text())
    return Progress(epoch=saved["epoch"], history=saved["history"],
                    best=(saved["best_score"], saved["best_epoch"], saved["best_val"]),
                    best_state=load_file(str(state_dir / "best.safetensors")),
                    train_seconds=saved["train_seconds"], train_images=saved["train_images"])


def save_weights(state: dict, path: Path) -> None:
    """Weights as safetensors (no pickles), written atomically."""
    from safetensors.torch import save_file

    from benchmark.run.run_dir import atomic_path

    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp))
