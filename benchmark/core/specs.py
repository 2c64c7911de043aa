"""JobSpec: the frozen description of one classifier job, its key (what determines the result) and its name."""

from __future__ import annotations

import hashlib
import json
import numbers
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

from benchmark.core import training as _training
from benchmark.core.training_set import DEFAULT_MIXING

KEY_LENGTH = 16

# Bump on any change that alters a trained result (training loop, data pipeline, mixing, metrics, seeding, model
# construction): it enters every key, so results made before the bump show as `stale` in --dry-run, are re-run and
# are never collected with today's results. Entry versions (registry `version:`) cover changes to one entry.
RESULTS_VERSION = 1

# A spec whose data is not on disk yet (it is downloaded when the grid runs) has no key: its key needs the data's
# content hash and its resolved rarity. Until then `.key` is this prefix + a hash of the spelled spec; no run
# folder is ever made under it (benchmark.run.cell refuses an unresolved spec).
UNRESOLVED_PREFIX = "unresolved-"

# The training settings' schema (defaults, types, which enter the key) is declared once, in benchmark.core.training.
TRAINING_DEFAULTS, TRAINING_TYPES, TRAINING_NOT_IN_KEY = _training.TRAINING_DEFAULTS, _training.TRAINING_TYPES, \
    _training.TRAINING_NOT_IN_KEY


def canonical_value(obj: Any) -> Any:
    """`obj` in one spelling per value, so equal experiments hash equally: an integral float is its int (0.0 and
    0, 1e3 and 1000), numpy scalars are Python numbers, tuples are lists, mapping keys are strings (their order
    never matters: canonical_json sorts them)."""
    kind = type(obj)  # exact types first: this runs over every key's identity (10,000s per dry run)
    if kind is str or kind is int or kind is bool or obj is None:
        return obj
    if kind is dict:
        return {k if type(k) is str else str(k): canonical_value(v) for k, v in obj.items()}
    if kind is float:
        return int(obj) if obj.is_integer() else obj
    if kind is list:
        return [canonical_value(v) for v in obj]
    if isinstance(obj, (str, bool)):
        return obj
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        value = float(obj)
        return int(value) if value.is_integer() else value
    if isinstance(obj, dict):
        return {str(k): canonical_value(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [canonical_value(v) for v in obj]
    return obj


def canonical_json(obj: Any) -> str:
    return json.dumps(canonical_value(obj), sort_keys=True, separators=(",", ":"), default=str)


def is_key(text) -> bool:
    """Whether `text` is a job key as the harness writes them (KEY_LENGTH lowercase hex digits): checked wherever a
    path is built from a key read from a run folder or a record."""
    return isinstance(text, str) and len(text) == KEY_LENGTH and all(c in "0123456789abcdef" for c in text)


def short_hash(obj: Any, length: int = KEY_LENGTH) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]


_DIGESTS: dict[tuple, tuple] = {}


def _digest(obj: dict, drop: frozenset = frozenset()) -> str:
    """sha256 of canonical_json(obj without the keys `drop`), memoised per object: a grid's specs share their entry
    and training dicts (never mutated after expansion), so a 10,000-job grid canonicalises each once, not once per
    job."""
    memo = (id(obj), drop)
    hit = _DIGESTS.get(memo)
    if hit is not None and hit[0] is obj:
        return hit[1]
    if len(_DIGESTS) > 4096:
        _DIGESTS.clear()
    kept = {k: v for k, v in obj.items() if k not in drop} if drop else obj
    digest = hashlib.sha256(canonical_json(kept).encode()).hexdigest()
    _DIGESTS[memo] = (obj, digest)
    return digest


def format_ratio(ratio: Any) -> str:
    if isinstance(ratio, float) and ratio.is_integer():
        return str(int(ratio))
    return str(ratio)


class _Keyed:
    """Shared by job specs: key (hash of identity), dataset_id, seeds, serialisation.

    A spec holds the user's spelling of its axes (`rare_class: minority`, `rare_count: all`: its name shows them)
    and, once the data check has read the dataset (benchmark.plan.identity.resolve_jobs), `resolved`: the dataset's
    content hash and the rarity it resolves to ({"dataset_sha256", "rare_class", "rare_count"}). The key and the
    seeds use the resolved values, so spellings of one experiment share one key and one set of seeds, and a result
    made from other data content (or before a RESULTS_VERSION bump) never matches today's key."""

    stage = ""
    generator_key = None  # the generator job a classifier job needs (JobSpec: a property); None: none
    IDENTITY_FIELDS: tuple = ()

    @property
    def is_resolved(self) -> bool:
        return self.resolved is not None

    def identity(self) -> dict:
        data = {name: getattr(self, name) for name in self.IDENTITY_FIELDS}
        data["stage"] = self.stage
        data["results_version"] = self.results_version
        if self.k_folds:  # cross-validated jobs carry their fold
            data.update(fold=self.fold, k_folds=self.k_folds)
        if self.resolved is not None:
            data.update(rare_class=self.resolved["rare_class"], rare_count=self.resolved["rare_count"],
                        dataset_sha256=self.resolved["dataset_sha256"])
        return data

    @cached_property
    def key(self) -> str:
        """short_hash of identity(), with its shared dicts (entries, training) entered by their own digests."""
        data = self.identity()
        data["entries"] = {kind: _digest(entry) for kind, entry in self.entries.items()}
        if "training" in data:
            data["training"] = _digest(self.training, TRAINING_NOT_IN_KEY)
        digest = short_hash(data)
        return digest if self.resolved is not None else UNRESOLVED_PREFIX + digest

    def _require_resolved(self, what: str) -> dict:
        if self.resolved is None:
            from benchmark.core.errors import UserError

            raise UserError(f"{self.name}: its {what} needs the dataset's content and resolved rarity, but the spec "
                            "is unresolved (its data was not on disk when the grid was expanded). Expand the grid "
                            "again once the data is there (benchmark.plan.grid.expand / benchmark.plan.identity.resolve_jobs).")
        return self.resolved

    @property
    def dataset_id(self) -> str:
        """What identifies the real data of a cell: dataset entry (name, version, config) and resolution."""
        return short_hash({"dataset": self.entries["dataset"], "image_size": self.image_size})

    @property
    def fold_seed(self) -> int:
        """Seed of this job's k-fold partition of train+val (dataset entry, k, seed; not the resolution)."""
        from benchmark.core.seeding import fold_seed

        return fold_seed(short_hash(self.entries["dataset"]), self.k_folds, self.seed)

    def _seed_parts(self) -> dict:
        resolved = self._require_resolved("seeds")
        return {"rare_class": resolved["rare_class"], "seed": self.seed, "fold": self.fold, "k_folds": self.k_folds}

    @property
    def rarity_seed(self) -> int:
        """Seed of the cell's permutation of its rare-class training images (rare_count keeps a prefix of it)."""
        from benchmark.core.seeding import rarity_seed

        return rarity_seed(self.dataset_id, **self._seed_parts())

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


def _results_version() -> int:
    return RESULTS_VERSION


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
    resolved: dict | None = field(default=None, hash=False)  # see _Keyed
    results_version: int = field(default_factory=_results_version)

    stage = "generator"
    IDENTITY_FIELDS = ("dataset", "image_size", "rare_class", "rare_count", "generator", "seed", "entries")

    @cached_property
    def name(self) -> str:
        return f"{self.generator}[{','.join(self._cell_parts() + [f'seed={self.seed}'] + self._fold_parts())}]"

    @property
    def generator_seed(self) -> int:
        """Seed of the generator's training and sampling: the cell (not its rare count: runs at nested rare counts
        share it), the seed, the fold and the generator; never the backbone or the ratio."""
        from benchmark.core.seeding import generator_seed

        return generator_seed(self.dataset_id, generator=self.generator, **self._seed_parts())


@dataclass(frozen=True)
class JobSpec(_Keyed):
    """One classifier job. Every field but `grid` (and the run-only training settings) determines its result."""

    dataset: str
    image_size: int
    rare_class: Any  # "minority" or a class index (as spelled in the grid; resolved: self.resolved)
    rare_count: Any  # int or "all" (as spelled in the grid; resolved: self.resolved)
    generator: str
    synthetic_ratio: Any  # rare images added per real rare image, "balance" or "real_percentage=P"; 0 if unused
    backbone: str
    seed: int
    training: dict = field(hash=False)
    entries: dict = field(hash=False)  # {"dataset": Entry.identity, "generator": ..., "backbone": ...}
    grid: str = field(default="", compare=False)
    fold: int = 0      # cross-validation fold 1..k_folds; 0 with k_folds 0 = the dataset's fixed split
    k_folds: int = 0
    resolved: dict | None = field(default=None, hash=False)  # see _Keyed
    results_version: int = field(default_factory=_results_version)
    budget_in_name: bool = field(default=False, compare=False)  # the grid's `budget` axis has several values
    # how the method's added images enter training (benchmark.core.training_set.MIXINGS); canonical spelling.
    # The default `concat` stays out of the key (keys made before the axis existed are unchanged); others enter it
    mixing: str = DEFAULT_MIXING

    stage = "classifier"
    IDENTITY_FIELDS = ("dataset", "image_size", "rare_class", "rare_count", "generator", "synthetic_ratio",
                       "backbone", "seed", "entries")

    def identity(self) -> dict:
        data = super().identity()
        data["training"] = {k: v for k, v in self.training.items() if k not in TRAINING_NOT_IN_KEY}
        if self.mixing != DEFAULT_MIXING:
            data["mixing"] = self.mixing
        return data

    @cached_property
    def name(self) -> str:
        ratio = format_ratio(self.synthetic_ratio)
        method = self.generator if ratio in ("0", "0.0") else f"{self.generator}×{ratio}"
        if self.mixing != DEFAULT_MIXING:  # e.g. dcgan×balance+pretrain_finetune (the collector's variant spelling)
            method += f"+{self.mixing}"
        parts = self._cell_parts() + [method, f"seed={self.seed}"] + self._fold_parts()
        if self.budget_in_name:
            parts.append(self.training_config.budget_spec.label)
        return f"{self.backbone}[{','.join(parts)}]"

    @cached_property
    def training_config(self) -> "_training.TrainingConfig":
        """The training settings, typed (benchmark.core.training.TrainingConfig)."""
        return _training.TrainingConfig.from_dict(self.training)

    @property
    def init_seed(self) -> int:
        """Seed of model initialisation and data order: the cell (not its rare count), seed, fold and backbone;
        shared by every method, so a cell's methods are paired and runs at nested rare counts share it."""
        from benchmark.core.seeding import init_seed

        return init_seed(self.dataset_id, backbone=self.backbone, **self._seed_parts())

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
                             track=self.training_config.track, resolved=self.resolved,
                             results_version=self.results_version)

    @property
    def generator_key(self) -> str | None:
        return self.generator_spec.key if self.generator_spec else None


def spec_from_dict(data: dict):
    """A JobSpec or GeneratorSpec from its to_dict() payload."""
    return (GeneratorSpec if data.get("stage") == "generator" else JobSpec).from_dict(data)
