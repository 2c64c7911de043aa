"""Planning a grid run before anything starts: data presence, rarity feasibility, job statuses and the job table."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np

from benchmark.data import dataset_source
from benchmark.data.rarity import resolve_rare_class, resolve_rare_count
from benchmark.errors import UserError
from benchmark.job import run_dir_status
from benchmark.specs import JobSpec


def results_root(path: str | None = None) -> Path:
    return Path(path or os.environ.get("GENMED_RESULTS_DIR") or "results")


def check_data(jobs: list[JobSpec], download: bool = False) -> list[str]:
    """One line per (dataset, size): present or will download. Where the file is on disk (or after downloading,
    with `download`), its labels are read and every job's rarity is checked (inside the fold's training part for
    cross-validated jobs); problems raise one UserError."""
    from benchmark.data.folds import fold_labels

    lines, problems = [], []
    cells: dict[tuple, set] = {}
    for spec in jobs:
        k_folds = getattr(spec, "k_folds", 0)
        fold = (k_folds, spec.fold, spec.fold_seed) if k_folds else (0, 0, 0)
        cells.setdefault((spec.dataset, spec.image_size), set()).add((spec.rare_class, spec.rare_count, *fold))
    for (dataset, size), rarities in sorted(cells.items()):
        source = dataset_source(dataset)
        present = source.is_present(size)
        if not present and not download:
            url = getattr(source, "url", None)
            lines.append(f"{dataset}@{size}: will download" + (f" from {url(size)}" if url else "")
                         + f" into {source.path(size).parent}")
            continue
        labels = source.load_labels(size)
        num_classes = source.num_classes or int(max(int(v.max()) for v in labels.values()) + 1)
        counts = [int((labels["train"] == c).sum()) for c in range(num_classes)]
        lines.append(f"{dataset}@{size}: present ({source.path(size)}; train class counts {counts})")
        fold_cache: dict[tuple, dict] = {}
        for rare_class, rare_count, k_folds, fold, seed in sorted(rarities, key=str):
            try:
                split = labels
                where = f"{dataset} (rare class {{}}): "
                if k_folds:
                    if (k_folds, fold, seed) not in fold_cache:
                        fold_cache[(k_folds, fold, seed)] = fold_labels(labels, k_folds, fold, seed,
                                                                        f"dataset {dataset!r}")
                    split = fold_cache[(k_folds, fold, seed)]
                    where = f"{dataset} (rare class {{}}, fold {fold}/{k_folds}): "
                train_counts = np.bincount(split["train"], minlength=num_classes)
                resolved = resolve_rare_class(rare_class, split["train"], num_classes)
                resolve_rare_count(rare_count, int(train_counts[resolved]), where.format(resolved))
            except UserError as exc:
                if str(exc) not in problems:
                    problems.append(str(exc))
    if problems:
        raise UserError("Impossible rarity settings; nothing was started:\n  - " + "\n  - ".join(problems))
    if download:
        check_generator_configs(jobs)
    return lines


def check_generator_configs(jobs: list) -> None:
    """Build every generative method once with its registry config (no training) so that a bad config — an
    unknown sampler, a negative guidance scale, a typo in a key — stops the run before any job starts."""
    from benchmark import registry

    seen = set()
    for spec in jobs:
        if getattr(spec, "stage", "") != "classifier" or not spec.is_generative:
            continue
        marker = (spec.generator, spec.dataset, spec.image_size)
        if marker in seen:
            continue
        seen.add(marker)
        entry = registry.get("generator", spec.generator)
        config = {k: v for k, v in entry.config.items() if k not in ("kind", "uses_synthetic_ratio", "bank_multiple")}
        source = dataset_source(spec.dataset)
        channels = getattr(source, "info", {}).get("n_channels", 1)
        try:
            entry.load()(num_classes=source.num_classes or 2, image_shape=(channels, spec.image_size,
                                                                          spec.image_size), **config)
        except UserError as exc:
            raise UserError(f"generator {spec.generator!r} ({entry.source}): {exc} Nothing was started.") from None


def statuses(jobs: list, runs_dir: Path) -> dict[str, str]:
    """done / pending / failed per job; a classifier job whose generator job failed is 'blocked'."""
    status = {spec.key: run_dir_status(runs_dir / spec.key) for spec in jobs}
    for spec in jobs:
        generator_key = getattr(spec, "generator_key", None)
        if generator_key and status[spec.key] != "done":
            if status.get(generator_key, run_dir_status(runs_dir / generator_key)) == "failed":
                status[spec.key] = "blocked"
    return status


def job_table(jobs: list[JobSpec], status: dict[str, str], limit: int | None = None) -> str:
    rows = [(spec.name, spec.key, status[spec.key]) for spec in jobs]
    shown = rows if limit is None else rows[:limit]
    width = max((len(r[0]) for r in shown), default=4)
    lines = [f"{'name':<{width}}  {'key':<16}  status", f"{'-' * width}  {'-' * 16}  ------"]
    lines += [f"{name:<{width}}  {key:<16}  {st}" for name, key, st in shown]
    if limit is not None and len(rows) > limit:
        lines.append(f"... and {len(rows) - limit} more (use --only to filter)")
    return "\n".join(lines)


STATES = ("done", "pending", "failed", "blocked")


def summary_line(jobs: list, status: dict[str, str]) -> str:
    """e.g. '4 generator jobs: 4 done, …; 36 classifier jobs: 30 done, 6 pending, 0 failed'."""
    parts = []
    for stage in ("generator", "classifier"):
        stage_jobs = [spec for spec in jobs if spec.stage == stage]
        if not stage_jobs and stage == "generator":
            continue
        counts = Counter(status[spec.key] for spec in stage_jobs)
        shown = [s for s in STATES if s != "blocked" or counts.get(s)]
        parts.append(f"{len(stage_jobs)} {stage} jobs: " + ", ".join(f"{counts.get(s, 0)} {s}" for s in shown))
    return "; ".join(parts)
