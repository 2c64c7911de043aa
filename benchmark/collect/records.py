"""Records: result.json files flattened into the public records table (records.csv), plus failed/missing jobs.

records.csv columns (one row per finished classifier job; documented in README "Records"):
  identity      key, name, grid, stage, dataset, image_size, rare_class, rare_class_name, rare_count, n_rare_train,
                generator, synthetic_ratio, backbone, seed, fold
  training      epochs, batch_size, lr, weight_decay, mixed_precision, best_epoch, budget, optimizer_steps,
                images_seen, best_step
  versions      results_version, dataset_version, generator_version, backbone_version
  metrics       <split>_<metric> for split in val, test and metric in benchmark.run.metrics.SCALAR_METRICS (arg-max
                metrics, rare_sensitivity_at_90spec, and thr_balanced_accuracy, thr_rare_sensitivity,
                thr_rare_specificity at `threshold`, chosen on val); test_confusion_matrix,
                test_per_class_recall, test_per_class_precision (JSON strings)
  counts        n_train_real, n_train_synthetic, n_real_extra, n_real_extra_available, effective_ratio
  compute       wall_s, train_s, train_images_per_s, num_processes, device, compute_hours
  provenance    dataset_sha256, git_sha, git_dirty, python_version, torch_version, timm_version,
                accelerate_version, host, finished_at
  audit         audit_<name> for generative methods (FID, copy rate, …), when present; audit_ct, audit_ct_z,
                audit_ct_p, … the data-copying test against the cell's held-back real images
                (benchmark.generators.audit), NaN with audit_ct_note saying why where it has none

`synthetic_ratio` keeps the grid's value (a number, "balance" or "real_percentage=P"); `effective_ratio` is what
the job actually trained with: (n_train_synthetic + n_real_extra) / n_rare_train, the rare images added per kept
real rare image (0 for methods that add none). `n_real_extra`, `n_real_extra_available` come from the method's
info (real_extra); 0 for every other method. A column a record predates is empty (NaN).

`budget` is the training budget's form and amount (benchmark.core.training: 'epochs=30', 'steps=600',
'match_real_epochs=30'); `optimizer_steps` the steps the job took and `images_seen` the training images drawn over
them (repeats counted); `best_step` the step of the selected validation (`best_epoch` is empty under a step budget).
Per-image predictions stay in each run folder (predictions.npz): :func:`read_predictions`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from benchmark.core import status as job_status
from benchmark.core.training import budget_label
from benchmark.run.metrics import SCALAR_METRICS
from benchmark.run.record import CorruptPredictions, Record, load_predictions  # noqa: F401 (CorruptPredictions)
from benchmark.run.run_dir import ERROR_FILE, RESULT_FILE


def current_results_version():
    """The harness's RESULTS_VERSION (benchmark.core.specs), or None in a harness that predates it."""
    from benchmark.core import specs

    return getattr(specs, "RESULTS_VERSION", None)


def effective_ratio(n_added, n_rare_train) -> float:
    """Rare images added (synthetic, duplicated or extra real) per kept real rare image; NaN when unknown."""
    try:
        return float(n_added) / float(n_rare_train) if n_rare_train else float("nan")
    except (TypeError, ValueError):
        return float("nan")


def flatten_result(result: "dict | Record", results_version=None) -> dict:
    """One records.csv row from a classifier's result.json (parsed, or its Record). `results_version`: the version
    to record when the result itself does not carry one (the collector passes that of the spec it looked the result
    up by)."""
    record = result if isinstance(result, Record) else Record.from_json(result)
    spec, resolved, training = record.spec, record.resolved or {}, record.training
    row = {
        "key": record.key, "name": record.name, "grid": spec.get("grid", ""), "stage": record.stage,
        "dataset": spec["dataset"], "image_size": spec["image_size"],
        "rare_class": resolved.get("rare_class", spec["rare_class"]),
        "rare_class_name": resolved.get("rare_class_name"),
        "rare_count": spec["rare_count"], "n_rare_train": resolved.get("n_rare_train"),
        "generator": spec["generator"], "synthetic_ratio": spec["synthetic_ratio"],
        "mixing": spec.get("mixing", "concat"), "backbone": spec["backbone"],
        "seed": spec["seed"], "fold": spec.get("fold", 0),
        **{k: training.get(k) for k in ("epochs", "batch_size", "lr", "weight_decay", "mixed_precision")},
        "best_epoch": record.best_epoch, "budget": budget_label(training),
        "optimizer_steps": record.optimizer_steps, "images_seen": record.images_seen, "best_step": record.best_step,
        "results_version": spec.get("results_version", record.extra.get("results_version", results_version)),
        "dataset_version": spec["entries"]["dataset"]["version"],
        "generator_version": spec["entries"]["generator"]["version"],
        "backbone_version": spec["entries"]["backbone"]["version"],
    }
    for split in ("val", "test"):
        metrics = record.metrics.get(split, {})
        for name in SCALAR_METRICS:
            row[f"{split}_{name}"] = metrics.get(name, float("nan"))
    test = record.metrics.get("test", {})
    for name in ("confusion_matrix", "per_class_recall", "per_class_precision"):
        row[f"test_{name}"] = json.dumps(test.get(name))
    row.update(_counts_columns(record, row["n_rare_train"]))
    row.update(_provenance_columns(record))
    for name, value in (record.audit or {}).items():
        if isinstance(value, (int, float, str, bool)) or value is None:
            row[f"audit_{name}"] = value
    return row


def _counts_columns(record: Record, n_rare_train) -> dict:
    counts, info = record.counts or {}, record.method_info or {}
    n_real_extra = int(info.get("n_real_extra") or 0)
    n_synthetic = counts.get("n_train_synthetic")
    return {"n_train_real": counts.get("n_train_real"), "n_train_synthetic": n_synthetic,
            "n_real_extra": n_real_extra, "n_real_extra_available": int(info.get("n_real_extra_available") or 0),
            "effective_ratio": effective_ratio(None if n_synthetic is None else n_synthetic + n_real_extra,
                                               n_rare_train)}


def _provenance_columns(record: Record) -> dict:
    env, timings, compute = record.environment or {}, record.timings or {}, record.compute or {}
    versions = env.get("versions", {})
    wall = timings.get("wall_s", float("nan"))
    return {
        "wall_s": wall, "train_s": timings.get("train_s"), "train_images_per_s": timings.get("train_images_per_s"),
        "num_processes": compute.get("num_processes", 1), "device": compute.get("device"),
        "compute_hours": wall * compute.get("num_processes", 1) / 3600.0,
        "dataset_sha256": (record.dataset or {}).get("sha256"), "git_sha": env.get("git_sha"),
        "git_dirty": env.get("git_dirty"), "python_version": env.get("python"),
        "torch_version": versions.get("torch"), "timm_version": versions.get("timm"),
        "accelerate_version": versions.get("accelerate"), "host": env.get("host"),
        "finished_at": timings.get("finished_at"),
    }


def read_predictions(run_dir: Path, record: "dict | Record | None" = None) -> dict:
    """A finished job's per-image predictions ({val_labels, val_probs (N, C), test_labels, test_probs}), checked
    against the sha256 in its record (read from `run_dir` when not given). Raises CorruptPredictions naming the
    file when it is missing, altered or unreadable."""
    from benchmark.run.run_dir import read_record

    return load_predictions(Path(run_dir), record if record is not None else read_record(Path(run_dir)))


@dataclass
class GridRecords:
    records: "object"  # pandas.DataFrame
    failed: list = field(default_factory=list)
    missing: list = field(default_factory=list)
    blocked: list = field(default_factory=list)
    out_dir: Path = Path(".")
    design: dict = field(default_factory=dict)
    sheets: dict = field(default_factory=dict)  # generators' picture sheets: benchmark.collect.report_figures.sheet_sources


def read_error(path: Path) -> str:
    """The failure an error.json records; a file that does not parse as one is named, never crashed on."""
    try:
        error = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        return f"unreadable {path} ({type(exc).__name__}: {exc})"
    if not isinstance(error, dict):
        return f"malformed {path} (not a JSON object)"
    return str(error.get("error", ""))


def gather(jobs, runs_dir: Path):
    """(rows, failed, missing, blocked) for the expected classifier jobs: a job counts only through its
    result.json; one whose generator job failed is blocked."""
    import sys

    from benchmark.run.run_dir import CorruptRecord, read_record
    from benchmark.run.run_dir import status as run_dir_status

    rows, failed, missing, blocked = [], [], [], []
    for spec in jobs:
        run_dir = Path(runs_dir) / spec.key
        result_path = run_dir / RESULT_FILE
        if not result_path.is_file() and spec.generator_key and job_status.with_generator(
                job_status.PENDING, run_dir_status(Path(runs_dir) / spec.generator_key)) == job_status.BLOCKED:
            blocked.append({"key": spec.key, "name": spec.name, "reason": f"blocked by {spec.generator_key}"})
        elif result_path.is_file():
            try:
                rows.append(flatten_result(read_record(run_dir), getattr(spec, "results_version", None)
                                           or current_results_version()))
            except CorruptRecord as exc:  # listed with its path and left out; the next grid run re-runs the job
                print(f"warning: corrupt record {exc}; listed as failed, not counted", file=sys.stderr)
                failed.append({"key": spec.key, "name": spec.name, "error": f"corrupt record {exc}"})
        elif (run_dir / ERROR_FILE).is_file():
            failed.append({"key": spec.key, "name": spec.name, "error": read_error(run_dir / ERROR_FILE)})
        else:
            missing.append({"key": spec.key, "name": spec.name})
    return rows, failed, missing, blocked


def collect_grid(grid_name_or_path: str, profile: str | None, results_root: Path) -> GridRecords:
    """Records of every job the grid (at `profile`) expands to, from `results_root/<grid label>/runs/`."""
    import pandas as pd

    from benchmark.plan.grid import expand, load_grid

    grid = load_grid(grid_name_or_path, profile)
    jobs = expand(grid)
    out_dir = Path(results_root) / grid.label
    rows, failed, missing, blocked = gather(jobs, out_dir / "runs")
    axes = dict(grid.axes)
    if grid.k_folds:  # cross-validation shows as the fold axis in the report's design table
        axes.setdefault("fold", list(range(1, grid.k_folds + 1)))
    design = {"grid": grid.name, "profile": grid.profile, "axes": axes, "training": grid.training,
              "n_jobs": len(jobs), "source": grid.source, "k_folds": grid.k_folds,
              "margins": grid.margins}
    from benchmark.collect.report_figures import sheet_sources

    return GridRecords(pd.DataFrame(rows), failed, missing, blocked, out_dir, design,
                       sheet_sources(jobs, out_dir / "runs"))


def write_records(df, path: Path) -> None:
    """records.csv (or .parquet by suffix), written atomically."""
    from benchmark.run.run_dir import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, index=False)
