"""Grids: YAML-declared axes expanded into a validated list of JobSpecs (Cartesian product, couplings, excludes).

A grid file (``registry/grids/<name>.yaml``)::

    name: rare_sweep
    version: 1
    axes:                        # each a list; ``seed`` may also be {range: [start, stop]}
      dataset: [breastmnist]
      image_size: [28]
      rare_class: [minority]     # "minority" (of the train split) or a class index
      rare_count: [all, 20]      # rare-class train images kept
      generator: [none, class_weight, oversample]
      synthetic_ratio: [1, 2]    # ignored (set to 0) for methods that declare uses_synthetic_ratio: false
      backbone: [resnet18]
      seed: {range: [0, 3]}
      budget: [{epochs: 3}, {match_real_epochs: 3}]   # optional: budget forms to compare (default: the training
                                 # section's); with several values job names end with the budget ('epochs=3')
      mixing: [concat, pretrain_finetune, synthetic_rare_only]   # optional (default concat): how added images
                                 # enter training; only methods that add images (uses_synthetic_ratio, ratio > 0)
                                 # are multiplied; 'pretrain_finetune=0.25' fine-tunes the last quarter of the steps
    coupled: [[rare_count, synthetic_ratio]]   # axes that vary together (zip), not as a product
    exclude: [{generator: oversample, rare_count: all}]
    training: {epochs: 20, batch_size: 64, lr: 0.001}   # or budget: {match_real_epochs: 20} (benchmark.core.training)
    k_folds: 5                   # optional: stratified 5-fold cross-validation over train+val (0/absent: the
                                 # dataset's fixed split); adds the axis ``fold`` (1..k, default all k folds)
    profiles:
      smoke: {axes: {seed: [0, 1, 2]}, training: {epochs: 3}}

Expansion validates everything (names, types, values) and raises one UserError listing every problem.
Nothing heavy is imported here: a dry run of 10,000 jobs stays well under a second of work.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark.core import registry
from benchmark.core.errors import UserError, unknown_name_error
from benchmark.core.registry import deep_merge
from benchmark.core.specs import JobSpec, canonical_json, format_ratio
from benchmark.core.training import budget_problems, with_budget
from benchmark.core.training import validate_training as _validate_training
from benchmark.core.training_set import (DEFAULT_MIXING, REAL_PERCENTAGE_PREFIX, canonical_mixing, mixing_mode_problem,
                                         mixing_problem, no_held_back_note)

AXES = ("dataset", "image_size", "rare_class", "rare_count", "generator", "synthetic_ratio", "backbone", "seed",
        "fold", "budget", "mixing")
AXIS_DEFAULTS = {"image_size": [28], "rare_class": ["minority"], "rare_count": ["all"], "synthetic_ratio": [1],
                 "seed": [0], "budget": [None], "mixing": [DEFAULT_MIXING]}  # budget None: the training section's
BUDGET_KEYS = ("epochs", "budget")  # a profile that sets either replaces the grid's budget as a whole
GRID_KEYS = {"name", "version", "description", "axes", "coupled", "exclude", "training", "profiles", "stages",
             "k_folds", "margins"}


@dataclass(frozen=True)
class Grid:
    name: str
    profile: str | None
    axes: dict
    coupled: list
    exclude: list
    training: dict
    source: str
    k_folds: int = 0  # 0: the dataset's fixed train/val/test split; k ≥ 2: stratified k-fold CV over train+val
    margins: dict = field(default_factory=dict)  # equivalence margin per metric (the collector's TOST; not in keys)

    @property
    def label(self) -> str:
        """Folder name under results/: the grid name, with the profile appended when one is used."""
        return self.name if not self.profile else f"{self.name}-{self.profile}"


def load_grid(name_or_path: str, profile: str | None = None) -> Grid:
    """A grid by registry name or path to a YAML file, with `profile` applied."""
    if str(name_or_path).endswith((".yaml", ".yml")) or Path(name_or_path).is_file():
        path = Path(name_or_path)
        if not path.is_file():
            raise UserError(f"Grid file {path} does not exist.")
        entry = registry.entry_from_file("grid", path)
    else:
        entry = registry.get("grid", name_or_path)
    data = entry.config
    check_plain_name(entry.name, "name", entry.source)
    if profile is not None:
        check_plain_name(profile, "profile", entry.source)
    unknown = set(data) - GRID_KEYS - {"include"}
    if unknown:
        raise UserError(f"{entry.source}: unknown grid key(s) {', '.join(sorted(unknown))}; "
                        f"valid keys: {', '.join(sorted(GRID_KEYS))}.")
    for key, kind in (("axes", dict), ("training", dict), ("profiles", dict), ("coupled", list), ("exclude", list)):
        if data.get(key) is not None and not isinstance(data[key], kind):
            raise UserError(f"{entry.source}: '{key}' must be a {'mapping' if kind is dict else 'list'}, got "
                            f"{type(data[key]).__name__} {data[key]!r:.60}. See the README's Grids section.")
    axes = dict(data.get("axes") or {})
    training = dict(data.get("training") or {})
    profiles = data.get("profiles") or {}
    if profile:
        if profile not in profiles:
            raise unknown_name_error(f"profile of grid {entry.name!r}", profile, profiles)
        chosen = profiles[profile] or {}
        if not isinstance(chosen, dict) or any(chosen.get(k) is not None and not isinstance(chosen[k], dict)
                                               for k in ("axes", "training")):
            raise UserError(f"{entry.source}: profile {profile!r} must be a mapping whose axes and training are "
                            "mappings (see the README's Grids section).")
        bad = set(chosen) - {"axes", "training", "exclude", "coupled", "description", "k_folds", "margins"}
        if bad:
            raise UserError(f"{entry.source}: profile {profile!r} has unknown key(s) {', '.join(sorted(bad))}; "
                            "a profile may override axes, training, exclude, coupled, k_folds and margins.")
        axes.update(chosen.get("axes") or {})
        chosen_training = chosen.get("training") or {}
        if any(k in chosen_training for k in BUDGET_KEYS):
            training = {k: v for k, v in training.items() if k not in BUDGET_KEYS}
        training = deep_merge(training, chosen_training)
        data = {**data, **{k: chosen[k] for k in ("exclude", "coupled", "k_folds") if k in chosen}}
        if "margins" in chosen:
            data = {**data, "margins": {**(data.get("margins") or {}), **(chosen["margins"] or {})}}
    k_folds = data.get("k_folds")
    return Grid(entry.name, profile, axes, list(data.get("coupled") or []), list(data.get("exclude") or []),
                training, entry.source, 0 if k_folds is None else k_folds,
                check_margins(data.get("margins"), entry.source))


def check_plain_name(name, what: str, source: str) -> None:
    """A grid's name and profile become a folder under the results root: letters, digits, '_', '-', '.', starting
    with a letter or digit (no path separators, no '..'); exit 2 naming the file otherwise."""
    import re

    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", name) or ".." in name:
        raise UserError(f"{source}: grid {what} {name!r} is not a plain name (letters, digits, '_', '-', '.'; it "
                        "names a folder under the results root). Rename it, e.g. name: my_grid.")


def check_margins(margins, source: str) -> dict:
    """A grid's `margins`: {metric: margin} for the collector's equivalence tests (two one-sided tests), e.g.
    {test_auroc: 0.02} or by base name {auroc: 0.02}; each a number in (0, 1]. Exit 2 naming the file otherwise."""
    from benchmark.run.metrics import SCALAR_METRICS

    if margins is None:
        return {}
    if not isinstance(margins, dict):
        raise UserError(f"{source}: 'margins' must map metric names to numbers, e.g. margins: {{test_auroc: 0.02}}; "
                        f"got {margins!r}.")
    problems = []
    for metric, value in margins.items():
        base = str(metric).split("_", 1)[1] if str(metric).startswith(("test_", "val_")) else str(metric)
        if base not in SCALAR_METRICS:
            problems.append(f"unknown metric {metric!r} (metrics: {', '.join(SCALAR_METRICS)})")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            problems.append(f"{metric}: the margin must be a number in (0, 1], got {value!r}")
    if problems:
        raise UserError(f"{source}: invalid margins: " + "; ".join(problems) + ". Nothing was started.")
    return {str(k): float(v) for k, v in margins.items()}


def _axis_values(name: str, raw: Any, source: str, problems: list) -> list:
    if isinstance(raw, dict) and set(raw) == {"range"}:
        bounds = raw["range"]
        if (isinstance(bounds, list) and len(bounds) == 2 and all(isinstance(b, int) for b in bounds)):
            return list(range(*bounds))
        problems.append(f"axis {name!r}: 'range' must be [start, stop] integers, got {bounds!r}")
        return []
    if not isinstance(raw, list):
        raw = [raw]
    if not raw:
        problems.append(f"axis {name!r} is empty")
    return raw


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_training(training: dict, problems: list) -> dict:
    """The grid's training section checked and stored in its one spelling (benchmark.core.training)."""
    return _validate_training(training, problems)


def validate_axes(grid: Grid) -> tuple[dict, list]:
    """Per-axis value lists, checked against the registries; returns (axes, problems)."""
    problems: list[str] = []
    unknown = set(grid.axes) - set(AXES)
    for name in sorted(unknown):
        problems.append(f"unknown axis {name!r}; valid axes: {', '.join(AXES)}")
    axes = {}
    k_folds = grid.k_folds
    if not _is_int(k_folds) or k_folds < 0 or k_folds == 1:
        problems.append(f"k_folds must be 0 (the dataset's fixed split) or an integer ≥ 2, got {k_folds!r}")
        k_folds = 0
    for name in AXES:
        if name == "fold":
            default = list(range(1, k_folds + 1)) if k_folds else [0]
            axes[name] = _axis_values(name, grid.axes.get(name, default), grid.source, problems)
            continue
        if name not in grid.axes and name not in AXIS_DEFAULTS:
            problems.append(f"axis {name!r} is required")
            continue
        axes[name] = _axis_values(name, grid.axes.get(name, AXIS_DEFAULTS.get(name)), grid.source, problems)

    for kind, axis in (("dataset", "dataset"), ("generator", "generator"), ("backbone", "backbone")):
        reg = registry.get_registry(kind)
        for value in axes.get(axis, []):
            if not isinstance(value, str) or value not in reg:
                problems.append(str(unknown_name_error(kind, value, reg.list())))
    for value in axes.get("image_size", []):
        if not _is_int(value) or value < 8:
            problems.append(f"image_size must be an integer ≥ 8, got {value!r}")
    for value in axes.get("rare_class", []):
        if value != "minority" and not (_is_int(value) and value >= 0):
            problems.append(f"rare_class must be 'minority' or a class index ≥ 0, got {value!r}")
    for value in axes.get("rare_count", []):
        if value != "all" and not (_is_int(value) and value >= 1):
            problems.append(f"rare_count must be 'all' or an integer ≥ 1, got {value!r}")
    for value in axes.get("synthetic_ratio", []):
        problem = mixing_mode_problem(value)
        if problem:
            problems.append(problem)
    for value in axes.get("mixing", []):
        problem = mixing_problem(value)
        if problem:
            problems.append(f"axis mixing: {problem}")
    for value in axes.get("seed", []):
        if not _is_int(value) or value < 0:
            problems.append(f"seed must be an integer ≥ 0, got {value!r}")
    if "budget" in grid.axes:
        for value in axes.get("budget", []):
            problems.extend(budget_problems(value, "axis budget"))
    for value in axes.get("fold", []):
        if k_folds and not (_is_int(value) and 1 <= value <= k_folds):
            problems.append(f"fold must be an integer in 1..{k_folds} (k_folds: {k_folds}), got {value!r}")
        elif not k_folds and value != 0:
            problems.append(f"axis 'fold' ({value!r}) needs k_folds ≥ 2 in the grid; without k_folds the only "
                            "fold is 0, the dataset's fixed split")

    for group in grid.coupled:
        if not isinstance(group, list) or len(group) < 2 or any(a not in AXES for a in group):
            problems.append(f"coupled: each entry must list two or more axes from {', '.join(AXES)}, got {group!r}")
            continue
        lengths = {a: len(axes.get(a, [])) for a in group}
        if len(set(lengths.values())) != 1:
            problems.append(f"coupled axes {group} must have equal lengths, got {lengths}")
    for rule in grid.exclude:
        if not isinstance(rule, dict) or any(a not in AXES for a in rule):
            problems.append(f"exclude: each rule must map axes to values, got {rule!r}")
    return axes, problems


def _check_dataset_values(axes: dict, problems: list) -> None:
    """Resolutions and class indices against each dataset's metadata (no data file is read)."""
    from benchmark.data import dataset_source

    for name in axes.get("dataset", []):
        if not isinstance(name, str) or name not in registry.get_registry("dataset"):
            continue
        try:
            source = dataset_source(name)
        except UserError as exc:
            problems.append(str(exc))
            continue
        for size in axes.get("image_size", []):
            if _is_int(size) and size not in source.sizes:
                problems.append(f"dataset {name!r} has no image_size {size}; available: {source.sizes}")
        if source.num_classes is not None:
            for rare_class in axes.get("rare_class", []):
                if _is_int(rare_class) and rare_class >= source.num_classes:
                    problems.append(f"rare_class {rare_class} is out of range for {name!r} "
                                    f"({source.num_classes} classes: 0..{source.num_classes - 1})")
        if source.unsupported_reason:
            problems.append(source.unsupported_reason)


def _excluded(point: dict, rules: list) -> bool:
    return any(all(point.get(a) == v for a, v in rule.items()) for rule in rules if isinstance(rule, dict))


def expand(grid: Grid, left_out: list | None = None, resolve: bool = True) -> list[JobSpec]:
    """The grid's jobs in a deterministic order, deduplicated by key; raises UserError listing every problem.

    With `resolve` (the default, and what every consumer uses) the jobs are keyed from their data by
    benchmark.plan.identity.resolve_jobs: the dataset's content hash and the resolved rarity enter every key, spellings
    of one experiment (`minority` / its index, `all` / its count) collapse into one job, impossible rare counts and
    synthetic ratios the generator's bank cannot hold are errors. Jobs of a dataset not on disk yet stay
    unresolved (``spec.is_resolved`` False) until ``resolve_jobs(jobs, download=True)``.

    Points that cannot run are left out, not errors: a method whose entry says ``needs_held_back: true``
    (real_extra) at rare_count all, where no real image is held back. With a list `left_out`, one
    (reason, count) per kind of left-out point is appended to it (launch/grid.py prints them)."""
    axes, problems = validate_axes(grid)
    training = validate_training(grid.training, problems)
    trainings = _budget_trainings(grid, axes, training) if not problems else {}
    if not problems:
        _check_dataset_values(axes, problems)
    if problems:
        listing = "\n  - ".join(problems)
        raise UserError(f"Grid {grid.name!r} ({grid.source}) is invalid; nothing was started:\n  - {listing}")

    coupled = [list(g) for g in grid.coupled]
    in_group = {a for g in coupled for a in g}
    factors: list[list[dict]] = [[{a: v for a, v in zip(g, values)} for values in zip(*(axes[a] for a in g))]
                                 for g in coupled]
    factors += [[{a: v} for v in axes[a]] for a in AXES if a not in in_group]

    entries = {kind: {n: registry.get(kind, n) for n in axes[kind]} for kind in ("dataset", "generator", "backbone")}
    identities = {kind: {n: e.identity for n, e in es.items()} for kind, es in entries.items()}
    from benchmark.generators.base import check_method_configs
    from benchmark.generators.external import external_identities  # bring-your-own banks: their hash in the key
    from benchmark.generators.pipeline import pipeline_identities  # bring-your-own diffusers pipelines: likewise

    check_method_configs(entries["generator"])
    identities["generator"].update(external_identities(entries["generator"], axes["dataset"], axes["image_size"]))
    identities["generator"].update(pipeline_identities(entries["generator"], axes["dataset"], axes["image_size"]))
    uses_ratio = {n: e.config.get("uses_synthetic_ratio", True) for n, e in entries["generator"].items()}
    needs_held_back = {n for n, e in entries["generator"].items() if e.config.get("needs_held_back")}
    skipped: dict[str, set] = {}

    jobs: dict[tuple, JobSpec] = {}
    for combo in itertools.product(*factors):
        point = {k: v for part in combo for k, v in part.items()}
        if _excluded(point, grid.exclude):
            continue
        if point["rare_count"] == "all" and point["generator"] in needs_held_back:
            skipped.setdefault(point["generator"], set()).add(tuple(sorted(point.items(), key=str)))
            continue
        ratio = canonical_ratio(point["synthetic_ratio"]) if uses_ratio[point["generator"]] else 0.0
        # mixing applies to added images: methods that add none (ratio-free ones, ratio 0) run once, as concat
        mixing = canonical_mixing(point["mixing"]) if ratio not in (0, 0.0) else DEFAULT_MIXING
        spec = JobSpec(
            dataset=point["dataset"], image_size=point["image_size"], rare_class=point["rare_class"],
            rare_count=point["rare_count"], generator=point["generator"], synthetic_ratio=ratio,
            backbone=point["backbone"], seed=point["seed"], training=trainings[canonical_json(point["budget"])],
            fold=point["fold"], k_folds=grid.k_folds if point["fold"] else 0,
            entries={"dataset": identities["dataset"][point["dataset"]],
                     "generator": identities["generator"][point["generator"]],
                     "backbone": identities["backbone"][point["backbone"]]},
            grid=grid.label, budget_in_name=len(trainings) > 1, mixing=mixing,
        )
        # one spec per point (ratio-free methods repeat over the ratio axis); keys come after resolution
        jobs.setdefault((point["dataset"], point["image_size"], point["rare_class"], point["rare_count"],
                         point["generator"], str(ratio), point["backbone"], point["seed"], point["fold"],
                         canonical_json(point["budget"]), mixing), spec)
    if left_out is not None:
        left_out.extend(no_held_back_note(name, len(points)) for name, points in sorted(skipped.items()))
    if resolve:
        from benchmark.plan.identity import resolve_jobs

        return resolve_jobs(list(jobs.values()), left_out=left_out)
    unique: dict[str, JobSpec] = {}
    for spec in jobs.values():
        unique.setdefault(spec.key, spec)
    return list(unique.values())


def _budget_trainings(grid: Grid, axes: dict, training: dict) -> dict:
    """{canonical_json(budget axis value): the jobs' training settings}: the training section's own for the default
    (None), else the section with its budget replaced by the value. One dict per value, shared by its jobs."""
    out = {}
    for value in axes["budget"]:
        name = canonical_json(value)
        if name not in out:
            out[name] = training if value is None else _validate_training(with_budget(grid.training, value), [])
    return out


def canonical_ratio(ratio):
    """One spelling per synthetic ratio: numbers as floats (1 and 1.0), 'real_percentage=50.0' as
    'real_percentage=50'; 'balance' unchanged."""
    if isinstance(ratio, str):
        if ratio.startswith(REAL_PERCENTAGE_PREFIX):
            return REAL_PERCENTAGE_PREFIX + format_ratio(float(ratio[len(REAL_PERCENTAGE_PREFIX):]))
        return ratio
    return float(ratio)


def generator_jobs(jobs: list[JobSpec]) -> list:
    """The generator jobs the classifier jobs need, once each (keyed without backbone or ratio)."""
    needed = {}
    for spec in jobs:
        if spec.generator_spec is not None:
            needed.setdefault(spec.generator_key, spec.generator_spec)
    return list(needed.values())


def filter_jobs(jobs: list[JobSpec], pattern: str | None) -> list[JobSpec]:
    """Jobs whose readable name or key matches a shell-style pattern (substring match when no wildcard)."""
    if not pattern:
        return jobs
    import fnmatch

    if not any(ch in pattern for ch in "*?["):
        return [j for j in jobs if pattern in j.name or j.key.startswith(pattern)]
    return [j for j in jobs if fnmatch.fnmatchcase(j.name, pattern) or fnmatch.fnmatchcase(j.key, pattern)]
