"""In-domain audit features: a small CNN classifier trained once per (dataset entry + content, image size, fold) on
the training split only, cached as its own keyed artifact and reused by every generator job of the dataset.

Network (``domain_cnn_v1``): ``levels = max(1, floor(log2(S / 4)))`` blocks for an S-pixel image (28 px: 2, 64: 4,
128: 5, 224: 5), each [Conv3×3, BatchNorm, ReLU] × 2 then 2×2 max pooling, widths ``min(width · 2^i, max_width)``;
then one more [Conv3×3, BatchNorm, ReLU] × 2 at ``max_width``, global average pooling — the **features**
(``max_width`` = 64 dims by default) — and a linear classifier over all classes. Input: uint8 scaled to [-1, 1].
Training: the dataset's full training split (all classes, before any rarity subsampling; never val or test),
class-weighted cross-entropy (inverse class frequency, so the rare classes shape the features), AdamW, random
horizontal flips, ``min(max_steps, epochs × ceil(N / batch_size))`` steps, seeded (``seed``). At 28 px on
BreastMNIST (546 images) that is 100 steps, about 15 s on one busy CPU core.

Artifact ``<results root>/extractors/<key>/`` (``$GENMED_EXTRACTORS_DIR`` overrides the root): ``model.safetensors``
and ``extractor.json`` (key, identity, config, train accuracy, steps, seconds, ``trained_at``). The key hashes
the extractor's name, version and resolved config, the dataset entry (name, version, config), its content hash,
the image size and the cross-validation fold. The folder is written under a temporary name and renamed, under a
file lock (``.<key>.lock``), so two generator jobs never train it twice and never read half of it; an unreadable
artifact is rebuilt.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from benchmark.generators._common import CorruptArtifactError, GeneratorConfigError, resolve_config
from benchmark.run.run_dir import replace_dir, temp_sibling

NAME = "domain_cnn_v1"
VERSION = 1
RECORD_FILE = "extractor.json"
WEIGHTS_FILE = "model.safetensors"
ROOT_ENV = "GENMED_EXTRACTORS_DIR"
FOLDER = "extractors"
DEFAULTS = {
    "width": 16,
    "max_width": 64,     # = the feature dimension
    "epochs": 20,
    "max_steps": 600,    # bounds the cost on large datasets
    "batch_size": 128,
    "lr": 3e-3,
    "weight_decay": 1e-4,
    "hflip": True,
    "seed": 0,
}


def resolve(config: dict | None) -> dict:
    """DEFAULTS updated by ``config`` (a generator entry's ``audit_extractor:``); unknown keys are an error."""
    return resolve_config("audit_extractor", DEFAULTS, dict(config or {}))


def levels(size: int) -> int:
    """Number of 2×2 poolings for an image of side ``size``."""
    return max(1, int(math.floor(math.log2(max(size, 8) / 4))))


def extractors_root(runs_dir) -> Path:
    """Where extractor artifacts live: ``$GENMED_EXTRACTORS_DIR``, else ``<runs dir>/../extractors``."""
    env = os.environ.get(ROOT_ENV)
    return Path(env) if env else Path(runs_dir).resolve().parent / FOLDER


def identity(dataset_entry, image_size: int, dataset_sha256: str, train_labels: np.ndarray, fold: dict | None,
             config: dict) -> dict:
    """What determines the trained extractor (its key is the hash of this)."""
    import hashlib

    labels = np.ascontiguousarray(np.asarray(train_labels, dtype=np.int64))
    return {"name": NAME, "version": VERSION, "config": config, "dataset": dataset_entry,
            "dataset_sha256": dataset_sha256, "image_size": int(image_size), "fold": fold or {},
            "train_n": int(len(labels)), "train_labels_sha256": hashlib.sha256(labels.tobytes()).hexdigest()}


def extractor_key(ident: dict) -> str:
    from benchmark.core.specs import short_hash

    return short_hash(ident)


def build_network(in_channels: int, image_size: int, num_classes: int, config: dict):
    """The classifier; ``.features(x)`` gives the (N, max_width) audit features of uint8 or [-1, 1] input."""
    from torch import nn

    from benchmark.generators.feature_nets import DomainCNN

    width, max_width = int(config["width"]), int(config["max_width"])

    def block(c_in, c_out):
        return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]

    layers, c = [], in_channels
    for i in range(levels(image_size)):
        out = min(width * 2 ** i, max_width)
        layers += block(c, out) + [nn.MaxPool2d(2)]
        c = out
    layers += block(c, max_width) + [nn.AdaptiveAvgPool2d(1), nn.Flatten()]

    return DomainCNN(layers, max_width, num_classes, NAME)


def train(images: np.ndarray, labels: np.ndarray, num_classes: int, config: dict, device=None):
    """(network in eval mode, log): fit the classifier on ``images`` (uint8 N, C, H, W) and int64 ``labels``."""
    import torch
    import torch.nn.functional as F

    from benchmark.generators._common import choose_device

    device = choose_device(device)
    started = time.perf_counter()
    n = len(images)
    steps = int(min(int(config["max_steps"]), int(config["epochs"]) * math.ceil(n / int(config["batch_size"]))))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(config["seed"]))
        net = build_network(images.shape[1], images.shape[2], num_classes, config).to(device)
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / max(1, (counts > 0).sum()), 0.0)
    class_weight = torch.tensor(weights, dtype=torch.float32, device=device)
    opt = torch.optim.AdamW(net.parameters(), lr=float(config["lr"]), weight_decay=float(config["weight_decay"]))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=float(config["lr"]), total_steps=max(steps, 1))
    data = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    target = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device)
    rng = np.random.default_rng(int(config["seed"]))
    batch = min(int(config["batch_size"]), n)
    order, cursor = rng.permutation(n), 0
    net.train()
    for _ in range(steps):
        if cursor + batch > n:
            order, cursor = rng.permutation(n), 0
        idx = torch.from_numpy(order[cursor:cursor + batch]).to(device)
        cursor += batch
        x = data[idx].float().div(127.5).sub(1.0)
        if config["hflip"]:
            flip = torch.from_numpy(rng.random(len(idx)) < 0.5).to(device)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        loss = F.cross_entropy(net.logits(x), target[idx], weight=class_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    predictions = []
    with torch.no_grad():
        for start in range(0, n, 512):
            predictions.append(net.logits(data[start:start + 512]).argmax(1).cpu().numpy())
    pred = np.concatenate(predictions)
    recalls = [float((pred[labels == k] == k).mean()) for k in range(num_classes) if (labels == k).any()]
    log = {"steps": steps, "final_loss": float(loss.item()) if steps else float("nan"),
           "train_accuracy": float((pred == labels).mean()), "train_balanced_accuracy": float(np.mean(recalls)),
           "seconds": time.perf_counter() - started, "device": str(device)}
    return net, log


def _load(folder: Path, record: dict, device):
    from safetensors.torch import load_file

    from benchmark.generators._common import choose_device

    try:
        state = load_file(str(folder / WEIGHTS_FILE))
        shape = record["image_shape"]
        net = build_network(shape[0], shape[1], int(record["num_classes"]), record["config"])
        net.load_state_dict(state)
    except Exception as exc:  # safetensors' own error types, missing keys, shape mismatches
        raise CorruptArtifactError(f"audit extractor {folder}: cannot read {WEIGHTS_FILE} ({exc})") from exc
    return net.to(choose_device(device)).eval()


def _read_record(folder: Path) -> dict | None:
    try:
        return json.loads((folder / RECORD_FILE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}


def ensure_extractor(root, images: np.ndarray, labels: np.ndarray, num_classes: int, ident: dict, device=None):
    """(network, record, trained_here): the extractor of ``ident``, trained on ``images``/``labels`` (the full
    training split) if no finished artifact exists under ``root``, else loaded from it."""
    from filelock import FileLock
    from safetensors.torch import save_file

    from benchmark.generators._common import choose_device

    key = extractor_key(ident)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    folder = root / key
    with FileLock(str(root / f".{key}.lock")):
        record = _read_record(folder)
        if record and record.get("key") == key:
            try:
                return _load(folder, record, device), record, False
            except CorruptArtifactError:
                pass  # rebuilt below
        if folder.exists():
            shutil.rmtree(folder)
        net, log = train(images, np.asarray(labels, dtype=np.int64), num_classes, ident["config"], device)
        record = {"key": key, "name": NAME, "version": VERSION, "identity": ident, "config": ident["config"],
                  "num_classes": int(num_classes), "image_shape": list(images.shape[1:]),
                  "feature_dim": int(net.num_features), "trained_at": datetime.now(timezone.utc).isoformat(),
                  "host": socket.gethostname(), "pid": os.getpid(), **log}
        tmp = temp_sibling(root / key)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, str(tmp / WEIGHTS_FILE))
        (tmp / RECORD_FILE).write_text(json.dumps(record, indent=1, sort_keys=True, default=str) + "\n")
        replace_dir(tmp, folder)
        return net.to(choose_device(device)).eval(), record, True


def for_cell(spec, bundle, runs_dir, config: dict | None = None, device=None):
    """(network, record, trained_here) for a generator job's dataset: the extractor trained on ``bundle``'s full
    training split (the fold's training part under cross-validation), cached under ``extractors_root(runs_dir)``."""
    cfg = resolve(config)
    train_split = bundle.splits["train"]
    k_folds = int(getattr(spec, "k_folds", 0) or 0)
    fold = {"k_folds": k_folds, "fold": int(spec.fold), "fold_seed": int(spec.fold_seed)} if k_folds else None
    ident = identity(spec.entries["dataset"], spec.image_size, bundle.sha256, train_split.labels, fold, cfg)
    return ensure_extractor(extractors_root(runs_dir), train_split.images, train_split.labels, bundle.num_classes,
                            ident, device)


def check_audit_extractor(overrides) -> None:
    """A generator entry's ``audit_extractor`` (a harness key: overrides of the in-domain audit extractor's config,
    extractor.DEFAULTS, e.g. {max_steps: 20} for tests): a mapping whose keys the extractor knows, or None."""
    if overrides is None:
        return
    if not isinstance(overrides, dict):
        raise GeneratorConfigError(f"audit_extractor must be a mapping of extractor settings, got {overrides!r}.")
    resolve(overrides)
