"""JobSpec: the frozen description of one classifier job, its key (what determines the result) and its name."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

KEY_LENGTH = 16

TRAINING_DEFAULTS: dict[str, Any] = {
    "epochs": 20,
    "batch_size": 64,
    "lr": 1e-3,
    "weight_decay": 0.05,
    "warmup_epochs": 1,
    "mixed_precision": "no",
    "label_smoothing": 0.0,
    "augment": {"hflip": True, "vflip": False, "rotate_degrees": 10.0, "brightness": 0.1, "contrast": 0.1},
    "eval_batch_size": 256,
    "save_checkpoint": True,
    "track": True,
}
TRAINING_TYPES: dict[str, tuple] = {
    "epochs": (int,),
    "batch_size": (int,),
    "lr": (float, int),
    "weight_decay": (float, int),
    "warmup_epochs": (int,),
    "mixed_precision": (str,),
    "label_smoothing": (float, int),
    "augment": (dict,),
    "eval_batch_size": (int,),
    "save_checkpoint": (bool,),
    "track": (bool,),
}
# Settings that change how a job runs but not what it computes stay out of the key.
TRAINING_NOT_IN_KEY = frozenset({"eval_batch_size", "save_checkpoint", "track"})


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def short_hash(obj: Any, length: int = KEY_LENGTH) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]


def format_ratio(ratio: Any) -> str:
    if isinstance(ratio, float) and ratio.is_integer():
        return str(int(ratio))
    return str(ratio)


class _Keyed:
    """Shared by job specs: key (hash of identity), dataset_id, serialisation."""

    stage = ""
    IDENTITY_FIELDS: tuple = ()

    def identity(self) -> dict:
        data = {name: getattr(self, name) for name in self.IDENTITY_FIELDS}
        data["stage"] = self.stage
        if self.k_folds:  # only cross-validated jobs carry a fold: fixed-split keys stay what they always were
            data.update(fold=self.fold, k_folds=self.k_folds)
        return data

    @cached_property
    def key(self) -> str:
        return short_hash(self.identity())

    @property
    def dataset_id(self) -> str:
        """What identifies the real data of a cell: dataset entry (name, version, config) and resolution."""
        return short_hash({"dataset": self.entries["dataset"], "image_size": self.image_size})

    @property
    def fold_seed(self) -> int:
        """Seed of this job's k-fold partition of train+val (dataset entry, k, seed; not the resolution)."""
        from benchmark.seeding import fold_seed

        return fold_seed(short_hash(self.entries["dataset"]), self.k_folds, self.seed)

    def _fold_parts(self) -> list:
        return [f"fold={self.fold}/{self.k_folds}"] if self.k_folds else []

    def _cell_parts(self) -> list:
        dataset = self.dataset if self.image_size == 28 else f"{self.dataset}@{self.image_size}"
        parts = [dataset]
        if self.rare_class != "minority":
            parts.append(f"class={self.rare_class}")
        parts.append(f"rare={self.rare_count}")
        return parts

    def to_dict(self) -> dict:
        data = asdict(self)
        data.update(key=self.key, name=self.name, stage=self.stage)
        return data

    @classmethod
    def from_dict(cls, data: dict):
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True)
class GeneratorSpec(_Keyed):
    """One generator training: fit on a cell's real training images, sample a bank, audit it. Keyed without
    backbone or synthetic ratio, so every classifier job of the cell reuses the same artifact."""

    dataset: str
    image_size: int
    rare_class: Any
    rare_count: Any
    generator: str
    seed: int
    entries: dict = field(hash=False)  # {"dataset": ..., "generator": ...}
    grid: str = field(default="", compare=False)
    fold: int = 0      # cross-validation fold 1..k_folds; 0 with k_folds 0 = the dataset's fixed split
    k_folds: int = 0
    track: bool = field(default=True, compare=False)  # TensorBoard logs of the fit (not part of the key)

    stage = "generator"
    IDENTITY_FIELDS = ("dataset", "image_size", "rare_class", "rare_count", "generator", "seed", "entries")

    @cached_property
    def name(self) -> str:
        return f"{self.generator}[{','.join(self._cell_parts() + [f'seed={self.seed}'] + self._fold_parts())}]"


@dataclass(frozen=True)
class JobSpec(_Keyed):
    """One classifier job. Every field but `grid` (and the run-only training settings) determines its result."""

    dataset: str
    image_size: int
    rare_class: Any  # "minority" or a class index
    rare_count: Any  # int or "all"
    generator: str
    synthetic_ratio: Any  # rare images added per real rare image, "balance" or "real_percentage=P"; 0 if unused
    backbone: str
    seed: int
    training: dict = field(hash=False)
    entries: dict = field(hash=False)  # {"dataset": Entry.identity, "generator": ..., "backbone": ...}
    grid: str = field(default="", compare=False)
    fold: int = 0      # cross-validation fold 1..k_folds; 0 with k_folds 0 = the dataset's fixed split
    k_folds: int = 0

    stage = "classifier"
    IDENTITY_FIELDS = ("dataset", "image_size", "rare_class", "rare_count", "generator", "synthetic_ratio",
                       "backbone", "seed", "entries")

    def identity(self) -> dict:
        data = super().identity()
        data["training"] = {k: v for k, v in self.training.items() if k not in TRAINING_NOT_IN_KEY}
        return data

    @cached_property
    def name(self) -> str:
        ratio = format_ratio(self.synthetic_ratio)
        method = self.generator if ratio in ("0", "0.0") else f"{self.generator}×{ratio}"
        parts = self._cell_parts() + [method, f"seed={self.seed}"] + self._fold_parts()
        return f"{self.backbone}[{','.join(parts)}]"

    @property
    def is_generative(self) -> bool:
        return self.entries["generator"]["config"].get("kind") == "generative"

    @cached_property
    def generator_spec(self) -> GeneratorSpec | None:
        """The generator job this classifier job needs (None for baselines)."""
        if not self.is_generative:
            return None
        return GeneratorSpec(self.dataset, self.image_size, self.rare_class, self.rare_count, self.generator,
                             self.seed, {"dataset": self.entries["dataset"], "generator": self.entries["generator"]},
                             self.grid, fold=self.fold, k_folds=self.k_folds,
                             track=bool(self.training.get("track", True)))

    @property
    def generator_key(self) -> str | None:
        return self.generator_spec.key if self.generator_spec else None


def spec_from_dict(data: dict):
    """A JobSpec or GeneratorSpec from its to_dict() payload."""
    return (GeneratorSpec if data.get("stage") == "generator" else JobSpec).from_dict(data)
