"""The classifier training function: one Accelerate code path for CPU, one GPU and many (cv_example order), for a
budget of optimiser steps (benchmark.core.training), resumable mid-budget, in one phase or, for mixing
pretrain_finetune, two (the mixed set, then the real images)."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from benchmark.core.training import Schedule, TrainingConfig
from benchmark.data.augment import augment, normalize, to_float
from benchmark.generators.imbalance import build_batch_transform, build_criterion
from benchmark.run import tracking
from benchmark.run.metrics import choose_threshold, classification_metrics, threshold_metrics
from benchmark.run.run_dir import PROGRESS_FILE

WEIGHTS_FILE = "model.safetensors"


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
class Selection:
    """The validation chosen so far: its val AUROC (the score; NaN counts as -inf), index, step and val metrics."""

    score: float
    evaluation: int
    step: int
    val: dict


@dataclass
class Progress:
    """Where training stands: what a resumed run continues from (``save_progress``). Checkpoints follow a
    validation, so the running averages of a history entry are always empty when one is saved."""

    step: int = 0             # optimiser steps taken
    evaluations: int = 0      # validations run (the epoch count, in the epochs form)
    passes: int = 0           # complete passes over the job's training set
    batch_in_pass: int = 0    # batches of the current pass taken; 0 at a pass boundary
    pass_order: torch.Tensor | None = None  # the data-order stream's state when the current pass began
    history: list = field(default_factory=list)
    best: Selection | None = None
    best_state: dict | None = None  # the selected validation's weights
    train_seconds: float = 0.0
    train_images: int = 0

    @property
    def epoch(self) -> int:
        """Validations run: in the epochs form, the epochs done."""
        return self.evaluations


@dataclass
class TrainOutcome:
    """What ``train_classifier`` returns: the selected model's metrics, the budget actually spent, the history,
    timings and the compute it ran on; `predictions`: per-image val/test labels and probabilities (numpy)."""

    metrics: dict
    best_epoch: int | None   # the selected epoch (epochs form); None under a step budget
    best_step: int           # the optimiser step of the selected validation
    optimizer_steps: int
    images_seen: int
    history: list
    train_seconds: float
    train_images_per_s: float
    device: str
    num_processes: int
    mixed_precision: str
    mixed_precision_note: str | None
    is_main_process: bool
    checkpoints: dict | None
    predictions: dict
    switch_step: int | None = None  # pretrain_finetune: the first step drawn from the real images only
    notes: list = field(default_factory=list)  # for the record (e.g. a saved state that did not load)


@dataclass
class Trainer:
    """One job's prepared objects: what the loop's steps share."""

    accelerator: object
    config: TrainingConfig
    schedule: Schedule
    model: object
    optimizer: object
    scheduler: object
    train_loader: object
    val_loader: object
    test_loader: object
    criterion: object
    batch_transform: object
    streams: RandomStreams
    num_classes: int
    rare_class: int
    finetune_loader: object = None  # pretrain_finetune: the real images, from schedule.switch_step on

    def phase(self, step: int) -> tuple[object, int]:
        """The loader that step `step` draws from and the step its phase ends at (the switch, else the budget)."""
        if self.finetune_loader is None:
            return self.train_loader, self.schedule.total_steps
        if step >= self.schedule.switch_step:
            return self.finetune_loader, self.schedule.total_steps
        return self.train_loader, self.schedule.switch_step


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


def train_classifier(training_set, bundle, rare_class: int, backbone, training, init_seed: int,
                     run_dir: Path | None = None, progress: bool = False, state_dir: Path | None = None,
                     checkpoint_every_s: float = 0.0, n_real: int | None = None,
                     artifacts_dir: Path | None = None) -> TrainOutcome:
    """Train `backbone` on `training_set` for the budget of `training` (a TrainingConfig or its dict), select the
    validation with the best val AUROC, evaluate that model on test.

    The budget (benchmark.core.training) is a number of optimiser steps: epochs × the steps of one pass over
    `training_set`, or steps matched to `n_real` (the cell's real training images; default: the set's size), or a
    number. Batches are drawn from `training_set`, reshuffled at every pass, until it is spent; validation runs at the
    budget's evaluation steps. Metrics: val at the selected validation and test, both with the threshold metrics at
    the threshold chosen on that val split. Writes the selected weights to ``model.safetensors`` in `artifacts_dir`
    (the run's staging folder: benchmark.run.run_dir.begin_staging), else in `run_dir`, when ``save_checkpoint``.
    With `state_dir`, the full training state (``accelerator.save_state``, the selection, the random streams and
    the position in the current pass) is saved after a validation (every one with ``checkpoint_every_s`` 0, else
    when that many seconds passed since the last save, or a save was requested: ``Checkpointing``), and a run that
    finds a saved state resumes from it, mid-pass if need be: a resumed run ends with the same record as an
    uninterrupted one. A saved state that does not load is moved aside and the job trains from the start
    (``_start``; a note in the outcome's ``notes``)."""
    config = training if isinstance(training, TrainingConfig) else TrainingConfig.from_dict(training)
    # 1–3. The accelerator, seeded streams, data, model, optimiser and schedule; the saved state, if any, resumed
    # (one that does not load is moved aside and training starts fresh: ``_start``).
    run, done, precision_note, notes = _start(config, training_set, bundle, rare_class, backbone, init_seed,
                                              run_dir, Path(state_dir) if state_dir is not None else None,
                                              len(training_set.labels) if n_real is None else n_real)
    accelerator = run.accelerator
    checkpoints = Checkpointing(checkpoint_every_s)
    # 4. Train until the budget is spent, validating (and maybe saving the state) at the evaluation steps.
    _train(run, done, checkpoints, Path(state_dir) if state_dir is not None else None, progress)
    # 5. The selected model on val (threshold) and test; its weights saved.
    metrics, predictions = _evaluate_selected(run, done)
    weights_dir = artifacts_dir if artifacts_dir is not None else run_dir
    if weights_dir is not None and config.save_checkpoint and accelerator.is_main_process:
        save_weights(done.best_state, Path(weights_dir) / WEIGHTS_FILE)
    epochs_form = config.budget_spec.form == "epochs"
    tracking.finish(accelerator, metrics["test"], done.best.evaluation if epochs_form else done.best.step)
    accelerator.wait_for_everyone()
    return TrainOutcome(
        metrics=metrics, best_epoch=done.best.evaluation if epochs_form else None, best_step=done.best.step,
        optimizer_steps=done.step, images_seen=done.train_images, history=done.history,
        train_seconds=done.train_seconds,
        train_images_per_s=done.train_images / done.train_seconds if done.train_seconds else float("nan"),
        device=str(accelerator.device), num_processes=accelerator.num_processes,
        mixed_precision=str(accelerator.mixed_precision), mixed_precision_note=precision_note,
        is_main_process=accelerator.is_main_process,
        checkpoints=checkpoints.summary() if state_dir is not None else None, predictions=predictions,
        switch_step=run.schedule.switch_step if run.finetune_loader is not None else None, notes=notes)


def _start(config: TrainingConfig, training_set, bundle, rare_class: int, backbone, init_seed: int, run_dir,
           state_dir: Path | None, n_real: int) -> tuple[Trainer, Progress, str | None, list]:
    """The prepared Trainer, where it stands (a saved state resumed, else a fresh Progress), the precision note and
    notes for the record. A saved state that fails to load (a corrupt file, a state written by another library
    version) is moved aside (``state.unloadable-<UTC time>``, ``set_aside_state``) and everything is built again
    from the seed, so the job trains from the start as a fresh run would instead of failing at every retry."""
    from accelerate.utils import set_seed

    notes = []
    while True:
        accelerator, precision_note = _accelerator(config, run_dir)
        set_seed(init_seed)
        streams = RandomStreams.seeded(init_seed, accelerator.device, accelerator.process_index)
        run = _prepare(accelerator, config, training_set, bundle, rare_class, backbone, streams, n_real)
        if state_dir is None or not (state_dir / PROGRESS_FILE).is_file():
            return run, Progress(), precision_note, notes
        failure = None
        try:
            done = load_progress(accelerator, state_dir, streams)
        except Exception as exc:  # noqa: BLE001 - any unloadable state: safetensors, JSON, shapes, missing files
            failure = exc
        if not _any_process(accelerator, failure is not None):
            return run, done, precision_note, notes
        notes.append(set_aside_state(accelerator, state_dir, failure))
        tracking.finish(accelerator)  # this attempt's writers; the fresh start opens its own


def _any_process(accelerator, flag: bool) -> bool:
    """Whether `flag` holds in any process (all processes agree: they restart together)."""
    if accelerator.num_processes <= 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(value, reduction="max").item() > 0)


def set_aside_state(accelerator, state_dir: Path, exc: BaseException | None) -> str:
    """Move a saved training state that did not load aside (the main process renames it; kept for inspection)
    and return the note that the job log and the record carry."""
    from benchmark.run.run_dir import UNLOADABLE_SUFFIX, move_aside

    why = f"{type(exc).__name__}: {exc}" if exc is not None else "it failed to load in another process"
    target = state_dir.with_name(state_dir.name + UNLOADABLE_SUFFIX + "…")
    if accelerator.is_main_process:
        target = move_aside(state_dir, UNLOADABLE_SUFFIX)
    accelerator.wait_for_everyone()
    note = (f"the saved training state {state_dir} did not load ({why[:500]}); moved aside to {target.name}, "
            "training from the start")
    print(f"warning: {note}", flush=True)
    return note


def _accelerator(config: TrainingConfig, run_dir):
    """The job's Accelerator and the note when it trains in another precision than the one requested."""
    from benchmark.run.threads import apply_thread_limit

    apply_thread_limit()
    from accelerate import Accelerator, PartialState
    from accelerate.utils import DataLoaderConfiguration, parse_flag_from_env

    # bf16 autocast where the device supports it; a requested bf16 trains in fp32 elsewhere
    # (resolve_mixed_precision). PartialState is a singleton that Accelerator() reuses: it must see
    # ACCELERATE_USE_CPU (set for a multi-task CPU job by benchmark.run.batch.setup_process) as Accelerator() would,
    # or a 2-task CPU job trains as two 1-process jobs.
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    mixed_precision, precision_note = resolve_mixed_precision(config.mixed_precision, state.device)
    # split_batches: batch_size is the global batch, split over the processes (DDP averages their gradients), so a
    # job computes the same thing on 1 or N processes; its key does not depend on how it is run.
    accelerator = Accelerator(mixed_precision=mixed_precision,
                              dataloader_config=DataLoaderConfiguration(split_batches=True),
                              **tracking.accelerator_kwargs(config.track, run_dir))
    tracking.start(accelerator)
    return accelerator, precision_note


def _prepare(accelerator, config: TrainingConfig, training_set, bundle, rare_class: int, backbone,
             streams: RandomStreams, n_real: int) -> Trainer:
    """Loaders, model, AdamW and the warm-up + cosine schedule over the budget's steps, prepared together."""
    on = data_device(accelerator.device)
    train_loader, finetune_loader = (
        DataLoader(TensorPairs(part.images, part.labels, on), batch_size=config.batch_size, shuffle=True,
                   drop_last=False, generator=streams.loader, collate_fn=keep_batch) if part is not None else None
        for part in (training_set, training_set.finetune_set))
    eval_loaders = [DataLoader(TensorPairs(bundle.splits[s].images, bundle.splits[s].labels, on),
                               batch_size=config.eval_batch_size, collate_fn=keep_batch) for s in ("val", "test")]
    model = backbone.build(bundle.n_channels, bundle.num_classes, bundle.image_size)
    if accelerator.device.type == "cuda":  # NHWC convolutions (tensor cores) and cuDNN's autotuned algorithms
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
        accelerator.register_save_state_pre_hook(_contiguous_weights)  # safetensors refuses NHWC-strided tensors
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    # global batches: with split_batches every process takes part in each
    schedule = config.budget_spec.schedule(len(train_loader), math.ceil(n_real / config.batch_size),
                                           config.warmup_epochs).with_finetune(training_set.finetune_fraction)
    scheduler = warmup_cosine(optimizer, schedule.warmup_steps, schedule.total_steps)  # one schedule, all phases
    model, optimizer, train_loader, val_loader, test_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, *eval_loaders, scheduler)
    if finetune_loader is not None:
        finetune_loader = accelerator.prepare(finetune_loader)
    # The method chooses the loss and batch transform (benchmark.generators.imbalance); cross-entropy by default.
    criterion = build_criterion(training_set.loss, training_set.class_weights, config.label_smoothing,
                                accelerator.device)
    batch_transform = build_batch_transform(training_set.batch_transform, streams.mix)
    return Trainer(accelerator, config, schedule, model, optimizer, scheduler, train_loader, val_loader,
                   test_loader, criterion, batch_transform, streams, bundle.num_classes, rare_class, finetune_loader)


def _train(run: Trainer, done: Progress, checkpoints: "Checkpointing", state_dir: Path | None,
           progress: bool) -> None:
    """Passes over the training set (each reshuffled) until the budget's steps are taken; with a fine-tune phase,
    over the mixed set until the switch step, then (a new pass) over the real images. A run resumed mid-pass
    replays its pass's order from the saved stream state and skips the batches already taken."""
    total, evaluate_at = run.schedule.total_steps, set(run.schedule.eval_steps)
    bar = None
    if progress and run.accelerator.is_main_process:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=done.step, desc="steps", leave=False)
    window = _Window()
    while done.step < total:
        loader, phase_end = run.phase(done.step)
        if done.batch_in_pass == 0:
            done.pass_order = run.streams.loader.get_state()  # the pass's shuffle is drawn from here
        else:
            run.streams.loader.set_state(done.pass_order)  # resumed mid-pass: the same order again
        skip = done.batch_in_pass
        run.model.train()
        batches = iter(loader)
        for index, (images, labels) in enumerate(batches):
            if index < skip:
                continue
            window.add(_step(run, images, labels))
            done.step, done.batch_in_pass = done.step + 1, index + 1
            done.train_images += len(labels) * run.accelerator.num_processes
            if bar is not None:
                bar.update(1)
            if done.step == phase_end < total:
                done.batch_in_pass = 0  # fine-tuning starts a pass of its own (a state saved here resumes there)
            if done.step in evaluate_at:
                _validate(run, done, window)
                if state_dir is not None and checkpoints.due(run.accelerator):
                    save_started = time.perf_counter()
                    save_progress(run.accelerator, state_dir, done, run.streams)
                    checkpoints.saved(time.perf_counter() - save_started, state_dir)  # may requeue and exit here
                run.model.train()
                window.restart()
            if done.step >= phase_end:
                _stop(loader, batches)
                break
        else:
            done.passes, done.batch_in_pass = done.passes + 1, 0
    if bar is not None:
        bar.close()


def _stop(loader, batches) -> None:
    """End a pass early (the budget is spent): close the iterator and unregister the loader from Accelerate's
    gradient state, as a pass run to its end would."""
    batches.close()
    if hasattr(loader, "end"):
        loader.end()


def _step(run: Trainer, images, labels) -> torch.Tensor:
    """One optimiser step on one batch: augmentation, the method's batch transform and loss, AdamW, schedule."""
    x = normalize(augment(to_float(images), run.config.augment, run.streams.augment))
    if run.batch_transform is None:
        with run.accelerator.autocast():
            loss = run.criterion(run.model(x), labels)
    else:  # e.g. mixup: mixed images, loss = Σ weight · criterion(logits, targets)
        x, targets = run.batch_transform(x, labels)
        with run.accelerator.autocast():
            logits = run.model(x)
            loss = sum(w * run.criterion(logits, y) for w, y in targets)
    run.accelerator.backward(loss)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return loss.detach()


class _Window:
    """Training loss and seconds since the last validation (a history entry's train_loss and train_s)."""

    def __init__(self):
        self.restart()

    def restart(self) -> None:
        self.loss_sum, self.batches, self.started = None, 0, time.perf_counter()

    def add(self, loss: torch.Tensor) -> None:
        self.loss_sum = loss if self.loss_sum is None else self.loss_sum + loss
        self.batches += 1


def _validate(run: Trainer, done: Progress, window: _Window) -> None:
    """Validation at an evaluation step: a history entry, its tracking, and the selection (the best val AUROC;
    the earliest of equal ones; with a fine-tune phase, among the validations after the switch only)."""
    seconds = time.perf_counter() - window.started
    done.train_seconds += seconds
    probs, targets = predict(run.model, run.val_loader, run.accelerator)
    val = classification_metrics(probs, targets, run.num_classes, run.rare_class)
    done.evaluations += 1
    entry = {"evaluation": done.evaluations, "step": done.step, "images_seen": done.train_images,
             "train_loss": float(window.loss_sum) / max(1, window.batches) if window.batches else float("nan"),
             "train_s": seconds, "lr": run.scheduler.get_last_lr()[0], "val_auroc": val["auroc"],
             "val_balanced_accuracy": val["balanced_accuracy"]}
    if run.config.budget_spec.form == "epochs":
        entry["epoch"] = done.evaluations
    if run.finetune_loader is not None:  # pretrain_finetune: selection only among the fine-tune phase's validations
        entry["phase"] = "finetune" if done.step > run.schedule.switch_step else "pretrain"
    done.history.append(entry)
    tracking.log_epoch(run.accelerator, entry, val)
    score = val["auroc"] if not math.isnan(val["auroc"]) else -math.inf
    if done.step <= run.schedule.switch_step:
        return
    if done.best is None or score > done.best.score:
        done.best = Selection(score, done.evaluations, done.step, val)
        done.best_state = copy.deepcopy(run.accelerator.unwrap_model(run.model).state_dict())


def _evaluate_selected(run: Trainer, done: Progress) -> tuple[dict, dict]:
    """The selected model's metrics and per-image predictions: the rare-class threshold is chosen on its
    validation predictions (benchmark.run.metrics.choose_threshold) and applied unchanged to test, beside the
    arg-max metrics."""
    run.accelerator.unwrap_model(run.model).load_state_dict(done.best_state)
    val_probs, val_targets = predict(run.model, run.val_loader, run.accelerator)
    threshold = choose_threshold(val_probs, val_targets, run.rare_class)
    val = {**done.best.val, **threshold_metrics(val_probs, val_targets, run.rare_class, threshold)}
    probs, targets = predict(run.model, run.test_loader, run.accelerator)
    test = {**classification_metrics(probs, targets, run.num_classes, run.rare_class),
            **threshold_metrics(probs, targets, run.rare_class, threshold)}
    predictions = {"val_labels": val_targets.numpy(), "val_probs": val_probs.numpy(),
                   "test_labels": targets.numpy(), "test_probs": probs.numpy()}
    return {"val": val, "test": test}, predictions


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
    """When the training state is saved (after a validation): after every one when ``every_s`` <= 0, else once
    ``every_s`` seconds passed since the last save (or the start), and at the first validation after a save was
    requested (``defer``: the pre-timeout / preemption signal; what it would have done runs after the save).
    In a multi-process job the processes agree (a save is collective): one saves when any of them would."""

    current: "Checkpointing | None" = None  # the one of the training running now (for the signal handler)

    def __init__(self, every_s: float = 0.0):
        self.every_s, self.last = float(every_s), time.monotonic()
        self.pending = None
        self.saves, self.seconds, self.bytes = 0, 0.0, 0
        Checkpointing.current = self

    def defer(self, then) -> None:
        """Save at the next validation, then call `then` (from a signal handler)."""
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
    """Everything needed to resume after ``done.step``: ``accelerator.save_state`` (model, optimizer, scheduler,
    global random states), each process's random streams and the current pass's order, the selected weights and
    ``PROGRESS_FILE``; swapped in as a whole folder (a crash leaves the old one)."""
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
    save_file({**streams.states(), "pass_order": done.pass_order}, str(tmp / f"generators_{rank}.safetensors"))
    if accelerator.is_main_process:
        best = done.best  # None before the first selectable validation (pretrain_finetune's pre-training)
        if best is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in done.best_state.items()},
                      str(tmp / "best.safetensors"))
        (tmp / PROGRESS_FILE).write_text(json.dumps({
            "epoch": done.epoch, "step": done.step, "evaluations": done.evaluations, "passes": done.passes,
            "batch_in_pass": done.batch_in_pass, "history": done.history,
            "best_score": best and best.score, "best_evaluation": best and best.evaluation,
            "best_step": best and best.step, "best_val": best and best.val,
            "train_seconds": done.train_seconds, "train_images": done.train_images}))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        replace_dir(tmp, state_dir)
    accelerator.wait_for_everyone()


def load_progress(accelerator, state_dir: Path, streams: RandomStreams) -> Progress:
    """What ``save_progress`` wrote: restores the accelerator's state and `streams`, returns the Progress. A state
    saved by a harness before step budgets (no position in steps) is not resumed: the job starts afresh."""
    import json

    from safetensors.torch import load_file

    saved = json.loads((state_dir / PROGRESS_FILE).read_text())
    if "step" not in saved:
        print(f"{state_dir}: a training state from an older harness; training from the start", flush=True)
        return Progress()
    accelerator.load_state(str(state_dir))
    saved_streams = load_file(str(state_dir / f"generators_{accelerator.process_index}.safetensors"))
    streams.restore(saved_streams)
    selected = saved.get("best_step") is not None
    return Progress(step=saved["step"], evaluations=saved["evaluations"], passes=saved["passes"],
                    batch_in_pass=saved["batch_in_pass"], pass_order=saved_streams["pass_order"],
                    history=saved["history"],
                    best=Selection(saved["best_score"], saved["best_evaluation"], saved["best_step"],
                                   saved["best_val"]) if selected else None,
                    best_state=load_file(str(state_dir / "best.safetensors")) if selected else None,
                    train_seconds=saved["train_seconds"], train_images=saved["train_images"])


def save_weights(state: dict, path: Path) -> None:
    """Weights as safetensors (no pickles), written atomically."""
    from safetensors.torch import save_file

    from benchmark.run.run_dir import atomic_path

    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp))
