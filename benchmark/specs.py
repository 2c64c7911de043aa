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
}
# Settings that change how a job runs but not what it computes stay out of the key.
TRAINING_NOT_IN_KEY = frozenset({"eval_batch_size", "save_checkpoint"})


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def short_hash(obj: Any, length: int = KEY_LENGTH) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]


def format_ratio(ratio: Any) -> str:
    if isinstance(ratio, float) and ratio.is_integer():
        return str(int(ratio))
    return str(ratio)


IDENTITY_FIELDS = ("dataset", "image_size", "rare_class", "rare_count", "generator", "synthetic_ratio", "backbone",
                   "seed", "entries")


@dataclass(frozen=True)
class JobSpec:
    """One classifier job. Every field but `grid` (and the run-only training settings) determines its result."""

    dataset: str
    image_size: int
    rare_class: Any  # "minority" or a class index
    rare_count: Any  # int or "all"
    generator: str
    synthetic_ratio: float  # synthetic (or duplicated) rare images per real rare image; 0 for methods without it
    backbone: str
    seed: int
    training: dict = field(hash=False)
    entries: dict = field(hash=False)  # {"dataset": Entry.identity, "generator": ..., "backbone": ...}
    grid: str = field(default="", compare=False)

    stage = "classifier"


    def identity(self) -> dict:
        data = {name: getattr(self, name) for name in IDENTITY_FIELDS}
        data["training"] = {k: v for k, v in self.training.items() if k not in TRAINING_NOT_IN_KEY}
        return data

    @cached_property
    def key(self) -> str:
        return short_hash(self.identity())

    @cached_property
    def name(self) -> str:
        dataset = self.dataset if self.image_size == 28 else f"{self.dataset}@{self.image_size}"
        parts = [dataset]
        if self.rare_class != "minority":
            parts.append(f"class={self.rare_class}")
        parts.append(f"rare={self.rare_count}")
        ratio = format_ratio(self.synthetic_ratio)
        parts.append(self.generator if ratio in ("0", "0.0") else f"{self.generator}×{ratio}")
        parts.append(f"seed={self.seed}")
        return f"{self.backbone}[{','.join(parts)}]"

    @property
    def dataset_id(self) -> str:
        """What identifies the real data of a cell: dataset entry (name, version, config) and resolution."""
        return short_hash({"dataset": self.entries["dataset"], "image_size": self.image_size})

    def to_dict(self) -> dict:
        data = asdict(self)
        data["key"] = self.key
        data["name"] = self.name
        data["stage"] = self.stage
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "JobSpec":
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**fields)
