"""Checks before any job starts: a grid's generative methods built once (no data, no training), and external banks
holding the rare-class images each job needs."""

from __future__ import annotations

import numpy as np

from benchmark.core.errors import UserError
from benchmark.data import dataset_source


def check_generator_configs(jobs: list) -> None:
    """Build every generative method once with its registry config (no training) so that a bad config — an
    unknown sampler, a negative guidance scale, a typo in a key — stops the run before any job starts."""
    from benchmark.core import registry
    from benchmark.generators.extractor import check_audit_extractor

    seen = set()
    for spec in jobs:
        if getattr(spec, "stage", "") != "classifier" or not spec.is_generative:
            continue
        marker = (spec.generator, spec.dataset, spec.image_size)
        if marker in seen:
            continue
        seen.add(marker)
        entry = registry.get("generator", spec.generator)
        source = dataset_source(spec.dataset)
        channels = getattr(source, "info", {}).get("n_channels", 1)
        try:
            registry.create("generator", entry, num_classes=source.num_classes or 2,
                            image_shape=(channels, spec.image_size, spec.image_size))
            check_audit_extractor(entry.config.get("audit_extractor"))
        except UserError as exc:
            raise UserError(f"generator {spec.generator!r} ({entry.source}): {exc} Nothing was started.") from None


def check_external_banks(jobs: list) -> None:
    """Every job that mixes in an external bank finds enough images of its rare class there: the count its
    synthetic ratio needs in its cell (after rarity, inside the fold's training part), against the bank's images
    of that class. All shortfalls go into one UserError (nothing starts)."""
    from benchmark.core.training_set import synthetic_count
    from benchmark.generators.external import KIND, _bank_path, bank_class_counts

    problems: dict = {}
    train_labels: dict = {}  # (dataset, size) -> training labels, read once
    for spec in jobs:
        config = spec.entries["generator"]["config"]
        if getattr(spec, "stage", "") != "classifier" or config.get("kind") != KIND or not spec.is_resolved \
                or spec.synthetic_ratio in (0, 0.0):
            continue
        source = dataset_source(spec.dataset)
        if (spec.dataset, spec.image_size) not in train_labels:
            train_labels[(spec.dataset, spec.image_size)] = source.load_labels(spec.image_size)
        split_labels = train_labels[(spec.dataset, spec.image_size)]
        labels = split_labels["train"]
        if spec.k_folds:
            from benchmark.data.folds import fold_labels

            labels = fold_labels(split_labels, spec.k_folds, spec.fold, spec.fold_seed,
                                 f"dataset {spec.dataset!r}")["train"]
        rare, n_rare = spec.resolved["rare_class"], spec.resolved["rare_count"]
        counts = np.bincount(labels, minlength=max(source.num_classes or 0, int(labels.max()) + 1))
        counts[rare] = n_rare
        needed = synthetic_count(spec.synthetic_ratio, n_rare, counts)
        where = f"external bank of {spec.generator!r}"
        names = source.label_names
        rare_name = names[rare] if names else str(rare)
        held = bank_class_counts(_bank_path(config, where), where).get(rare_name, 0)
        if needed > held:
            problem = (f"{where} ({config.get('path')}) holds {held} image(s) of the rare class {rare_name!r}; "
                       f"synthetic_ratio {spec.synthetic_ratio!r} at rare_count {spec.rare_count} needs {needed}. "
                       "Add images of that class to the bank, use a smaller ratio, or exclude the combination")
            problems.setdefault(problem, []).append(spec.name)
    if problems:
        lines = [f"{p}: {names[0]}" + (f" and {len(names) - 1} more job(s)" if len(names) > 1 else "")
                 for p, names in problems.items()]
        raise UserError("External banks too small for the grid; nothing was started:\n  - " + "\n  - ".join(lines))
