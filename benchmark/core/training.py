"""A grid's `training` settings: each setting declared once (default, types, in the key or not), the training budget
(epochs, optimiser steps, or steps matched to the cell's real data), their validation, and `TrainingConfig`, the
frozen, typed view of a job's settings that the training function reads.

The budget, one key::

    training: {epochs: 30}                          # the default form: 30 passes over the job's own training set
    training: {budget: {epochs: 30}}                # the same (stored as `epochs: 30`: keys as before)
    training: {budget: {steps: 600}}                # 600 optimiser steps; options: evaluations (10), warmup_steps (0)
    training: {budget: {match_real_epochs: 30}}     # the steps 30 epochs of the cell's real training set take

`match_real_epochs: E` trains E × ceil(n_real / batch_size) optimiser steps, n_real being the cell's real training
images after rarity subsampling and before a method adds any: the same number for every method of a cell, whatever
it adds. Batches are drawn from the job's (mixed) training set, reshuffled at each pass, until the budget is spent
(the last pass may be partial). Warm-up: `warmup_epochs` real epochs (E form), `warmup_steps` (steps form).
Validation (and so model selection) runs at `evaluations` evenly spaced steps, ceil(k × total / evaluations) for
k = 1..evaluations (default: one per real epoch for match_real_epochs, 10 for steps), so every method of a cell is
validated at the same step indices. A step budget drops `epochs` from the stored settings (and `warmup_epochs` for
the steps form), so a spec holds only what determines its result; the epochs form stores exactly what it did
before budgets existed, so its keys are unchanged.

Mixing `pretrain_finetune=F` (the grid's `mixing` axis, benchmark.core.training_set) splits the same budget: the
first total − round(F × total) steps (at least one step fine-tunes) draw batches from the job's mixed set, the rest
from the cell's real images only (`Schedule.switch_step`). One warm-up + cosine schedule runs over all the steps
and AdamW keeps its moments across the switch (the data source changes, nothing else), so a job stays
step-matched with its cell's concat jobs. Validation runs at the budget's usual steps, but the model is selected
only among validations after the switch (the last step always is one): a pre-trained model that never saw the
fine-tune data is not what the strategy is. A resumed run knows its phase from its step.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, fields
from typing import Any

MIXED_PRECISION = ("no", "fp16", "bf16")
BUDGET_FORMS = ("epochs", "steps", "match_real_epochs")
BUDGET_OPTIONS = {"epochs": (), "steps": ("evaluations", "warmup_steps"), "match_real_epochs": ("evaluations",)}
DEFAULT_STEP_EVALUATIONS = 10
BUDGET_EXAMPLE = "budget: {match_real_epochs: 30} (or {steps: 600}, or {epochs: 30})"


def _setting(default, *types, in_key: bool = True, optional: bool = False):
    """One training setting: its default, accepted types, whether it enters the job key, and (`optional`) whether
    it is absent from a job's settings unless the grid sets it (so adding it changed no key)."""
    meta = {"types": types, "in_key": in_key, "optional": optional}
    if isinstance(default, dict):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Budget:
    """How long a job trains: `form` (epochs | steps | match_real_epochs), its `amount`, the number of validation
    points (`evaluations`; the epochs form validates after every epoch) and, for the steps form, `warmup_steps`."""

    form: str = "epochs"
    amount: int = 20
    evaluations: int | None = None
    warmup_steps: int | None = None

    @property
    def label(self) -> str:
        """e.g. 'epochs=30', 'steps=600', 'match_real_epochs=30' (records.csv's `budget` column)."""
        return f"{self.form}={self.amount}"

    def schedule(self, steps_per_pass: int, real_steps_per_epoch: int, warmup_epochs: int) -> "Schedule":
        """The optimiser steps this budget takes, its warm-up and its validation steps, given the steps one pass
        over the job's training set takes and those one epoch of the cell's real training set takes."""
        if self.form == "epochs":
            return Schedule(self.amount * steps_per_pass, warmup_epochs * steps_per_pass,
                            tuple(k * steps_per_pass for k in range(1, self.amount + 1)))
        if self.form == "match_real_epochs":
            total, warmup = self.amount * real_steps_per_epoch, warmup_epochs * real_steps_per_epoch
        else:
            total, warmup = self.amount, int(self.warmup_steps or 0)
        k = self.evaluations or DEFAULT_STEP_EVALUATIONS
        return Schedule(total, warmup, tuple(sorted({math.ceil(i * total / k) for i in range(1, k + 1)})))


@dataclass(frozen=True)
class Schedule:
    """A job's budget in optimiser steps: total, warm-up (the cosine decays over the rest) and validation steps."""

    total_steps: int
    warmup_steps: int
    eval_steps: tuple
    switch_step: int = 0  # pretrain_finetune: steps before it draw from the mixed set, from it on real images only

    def with_finetune(self, fraction: float | None) -> "Schedule":
        """This schedule with the switch to fine-tuning of `fraction` (None: no fine-tune phase, switch_step 0)."""
        if fraction is None:
            return self
        finetune = min(self.total_steps, max(1, round(fraction * self.total_steps)))
        return Schedule(self.total_steps, self.warmup_steps, self.eval_steps, self.total_steps - finetune)


@dataclass(frozen=True)
class TrainingConfig:
    """A job's training settings, typed. The one declaration of every setting: TRAINING_DEFAULTS, TRAINING_TYPES
    and TRAINING_NOT_IN_KEY are read from these fields."""

    epochs: int | None = _setting(20, int)  # None under a step budget
    batch_size: int = _setting(64, int)
    lr: float = _setting(1e-3, float, int)
    weight_decay: float = _setting(0.05, float, int)
    warmup_epochs: int = _setting(1, int)
    mixed_precision: str = _setting("no", str)
    label_smoothing: float = _setting(0.0, float, int)
    augment: dict = _setting({"hflip": True, "vflip": False, "rotate_degrees": 10.0, "brightness": 0.1,
                              "contrast": 0.1}, dict)
    budget: dict | None = _setting(None, dict, optional=True)  # a step budget, canonical (see module docstring)
    eval_batch_size: int = _setting(256, int, in_key=False)
    save_checkpoint: bool = _setting(True, bool, in_key=False)
    track: bool = _setting(True, bool, in_key=False)

    @classmethod
    def from_dict(cls, training: dict) -> "TrainingConfig":
        """From a job's (validated) settings; missing ones take their defaults."""
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in training.items() if k in names}
        if values.get("budget") is not None:  # a step budget: no epoch count
            values.setdefault("epochs", None)
        return cls(**values)

    @property
    def budget_spec(self) -> Budget:
        if self.budget is None:
            return Budget("epochs", int(self.epochs if self.epochs is not None else TRAINING_DEFAULTS["epochs"]))
        form = next(f for f in BUDGET_FORMS if f in self.budget)
        return Budget(form, int(self.budget[form]), self.budget.get("evaluations"), self.budget.get("warmup_steps"))


TRAINING_DEFAULTS: dict[str, Any] = {f.name: (f.default_factory() if callable(f.default_factory) else f.default)
                                     for f in fields(TrainingConfig) if not f.metadata["optional"]}
TRAINING_TYPES: dict[str, tuple] = {f.name: f.metadata["types"] for f in fields(TrainingConfig)}
# Settings that change how a job runs but not what it computes stay out of the key.
TRAINING_NOT_IN_KEY = frozenset(f.name for f in fields(TrainingConfig) if not f.metadata["in_key"])


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def budget_problems(budget, where: str = "training.budget") -> list[str]:
    """What is wrong with a budget spelling (a dict like {match_real_epochs: 30}); [] when it is valid."""
    fix = f"write it as {BUDGET_EXAMPLE}"
    if not isinstance(budget, dict):
        return [f"{where}: expected a mapping with one of {', '.join(BUDGET_FORMS)}, got {budget!r}; {fix}"]
    forms = [f for f in BUDGET_FORMS if f in budget]
    if len(forms) != 1:
        return [f"{where}: give exactly one of {', '.join(BUDGET_FORMS)}, got {budget!r}; {fix}"]
    form = forms[0]
    problems = []
    unknown = sorted(set(budget) - {form, *BUDGET_OPTIONS[form]})
    if unknown:
        allowed = ", ".join(BUDGET_OPTIONS[form]) or "no other key"
        problems.append(f"{where}: {form} takes {allowed}, got unknown key(s) {', '.join(map(str, unknown))}")
    for name, low in ((form, 1), ("evaluations", 1), ("warmup_steps", 0)):
        if name in budget and not (_is_int(budget[name]) and budget[name] >= low):
            problems.append(f"{where}.{name} must be an integer ≥ {low}, got {budget[name]!r}; {fix}")
    if form == "steps" and not problems and budget.get("evaluations", 0) > budget["steps"]:
        problems.append(f"{where}.evaluations ({budget['evaluations']}) cannot exceed steps ({budget['steps']}): "
                        "at most one validation per step")
    return problems


def canonical_budget(budget: dict) -> dict:
    """A valid step budget with its options spelled out ({match_real_epochs: 30} → evaluations 30), so spellings of
    one budget hash equally."""
    if "steps" in budget:
        return {"steps": budget["steps"], "evaluations": budget.get("evaluations", min(DEFAULT_STEP_EVALUATIONS,
                                                                                       budget["steps"])),
                "warmup_steps": budget.get("warmup_steps", 0)}
    return {"match_real_epochs": budget["match_real_epochs"],
            "evaluations": budget.get("evaluations", budget["match_real_epochs"])}


def with_budget(training: dict, budget) -> dict:
    """`training` (a grid's raw section) with its budget replaced by `budget` (a `budget` axis value)."""
    out = {k: v for k, v in training.items() if k not in ("epochs", "budget")}
    out["budget"] = budget
    return out


def validate_training(training: dict, problems: list) -> dict:
    """A grid's `training` section merged over the defaults and checked (problems appended); the budget in its one
    stored spelling: the epochs form as `epochs` (no `budget` key), a step budget canonical, without `epochs`."""
    from benchmark.core.registry import deep_merge

    training = dict(training)
    budget = training.pop("budget", None)
    if budget is not None:
        if "epochs" in training:
            problems.append(f"training: both `epochs` ({training['epochs']!r}) and `budget` ({budget!r}) set the "
                            f"budget; keep one: write `budget: {{epochs: {training['epochs']}}}` or drop `epochs`")
        found = budget_problems(budget)
        problems.extend(found)
        if not found and "epochs" in budget:
            training["epochs"], budget = budget["epochs"], None
    merged = deep_merge(TRAINING_DEFAULTS, training)
    _check_settings(merged, problems)
    if isinstance(budget, dict) and not budget_problems(budget):
        merged.pop("epochs", None)
        if "steps" in budget:
            merged.pop("warmup_epochs", None)
        merged["budget"] = canonical_budget(budget)
    return merged


def _check_settings(merged: dict, problems: list) -> None:
    for key, value in merged.items():
        if key not in TRAINING_TYPES:
            problems.append(f"training: unknown setting {key!r}; valid: {', '.join(sorted(TRAINING_TYPES))}")
            continue
        types = TRAINING_TYPES[key]
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            problems.append(f"training.{key}: expected {' or '.join(t.__name__ for t in types)}, "
                            f"got {value!r} ({type(value).__name__})")
    for key in ("epochs", "batch_size", "eval_batch_size"):
        if _is_int(merged.get(key)) and merged[key] < 1:
            problems.append(f"training.{key} must be ≥ 1, got {merged[key]}")
    if isinstance(merged.get("lr"), (int, float)) and merged["lr"] <= 0:
        problems.append(f"training.lr must be > 0, got {merged['lr']}")
    if merged.get("mixed_precision") not in MIXED_PRECISION:
        problems.append(f"training.mixed_precision must be one of {MIXED_PRECISION}, "
                        f"got {merged.get('mixed_precision')!r}")


def budget_label(training: dict) -> str:
    """The budget of a job's stored settings, as records.csv's `budget` column writes it ('epochs=30', …)."""
    return TrainingConfig.from_dict(training).budget_spec.label
