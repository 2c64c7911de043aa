"""What a grid's classifier stage will cost, for ``--dry-run``: jobs × epochs × images (step budgets: optimiser
steps × batch size), and device-hours from the
training throughput that earlier records of the same backbone and image size measured (per device; a record of a
job that shared its device with K - 1 others, ``jobs_per_device`` K, counts K × its rate), or else from
the CPU figures of docs/benchmarks.md. CPU records that ran oversubscribed are left out, and the line says so
(``oversubscribed``: their torch threads × workers above their cores, no free core slot, or the machine's load
above 1.25 × its cores at the start or end of training; records older than these figures are used). An estimate: the images per epoch come from an earlier record of the same
cell and method when there is one, else from the dataset's label counts after rarity subsampling plus the
synthetic images a numeric ratio or ``balance`` adds (``real_percentage`` and methods whose additions depend on
their own pools count real images only); cross-validated jobs are counted on the fixed split. Light: no torch, no
pandas.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

from benchmark.run.run_dir import RESULT_FILE

# docs/benchmarks.md: resnet18 at 28 px on this project's 2-core CPU host of 2026-12-01, two single-thread local
# workers at ≈ 50 images/s each (the host of the earlier "Training work" figure, 152, was faster), and the other
# backbones' step time relative to it. Used only when the results folder has no record of a backbone and size.
CPU_IMAGES_PER_S_RESNET18_28PX = 100.0
CPU_RELATIVE_STEP_TIME = {"resnet18": 1.0, "efficientnet_b0": 1.37, "densenet121": 1.75, "resnet50": 2.73}
EVAL_COST = 1 / 3  # a forward pass only: an evaluated image costs about a third of a trained one
LOAD_TOLERANCE = 1.25  # a 1-minute load average above 1.25 × the machine's cores: its threads did not get a core


def oversubscribed(record: dict) -> str | None:
    """Why a CPU record's throughput is not the machine's (its threads competed for cores), or None: from the
    ``timings.cpu`` figures of benchmark.run.threads.cpu_usage; a record without them, or of a GPU, is not judged."""
    device = str((record.get("compute") or {}).get("device") or "cpu")
    cpu = (record.get("timings") or {}).get("cpu")
    if not device.startswith("cpu") or not isinstance(cpu, dict):
        return None

    def number(name):
        value = cpu.get(name)
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        return value if numeric and math.isfinite(value) else None

    threads, workers, cores, machine = (number(n) for n in ("torch_threads", "workers", "cores", "machine_cores"))
    if threads and workers and cores and threads * workers > cores:
        return f"{threads:g} threads × {workers:g} workers on {cores:g} cores"
    if cpu.get("core_slots") == 0:
        return "no free core slot (other workers held them all)"
    loads = [v for v in (number("load_start"), number("load_end")) if v is not None]
    if loads and machine and max(loads) > LOAD_TOLERANCE * machine:
        return f"load {max(loads):.1f} on {machine:g} cores"
    return None


def _earlier_records(runs_dir: Path) -> list[dict]:
    records = []
    for path in sorted(Path(runs_dir).glob(f"*/{RESULT_FILE}")) if Path(runs_dir).is_dir() else []:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record.get("stage") == "classifier":
            records.append(record)
    return records


def _cell(spec_like) -> tuple:
    get = spec_like.get if isinstance(spec_like, dict) else lambda k, d=None: getattr(spec_like, k, d)
    return (get("dataset"), get("image_size"), str(get("rare_class")), str(get("rare_count")), get("generator"),
            str(get("synthetic_ratio")))


def _label_counts(dataset: str, size: int, cache: dict):
    from benchmark.data import dataset_source

    if (dataset, size) not in cache:
        source = dataset_source(dataset)
        cache[(dataset, size)] = source.load_labels(size) if source.is_present(size) else None
    return cache[(dataset, size)]


def _images_per_epoch(spec, labels) -> tuple[int, int, int, int] | None:
    """(training images, val images, test images, real training images) of one job from the label counts."""
    import numpy as np

    from benchmark.data.rarity import resolve_rare_class, resolve_rare_count

    train = labels["train"]
    num_classes = int(max(int(v.max()) for v in labels.values()) + 1)
    counts = np.bincount(train, minlength=num_classes)
    try:
        rare = resolve_rare_class(spec.rare_class, train, num_classes)
        kept = resolve_rare_count(spec.rare_count, int(counts[rare]))
    except Exception:  # noqa: BLE001 - infeasible settings are check_data's to report
        return None
    real = int(counts.sum() - counts[rare] + kept)
    ratio, added = spec.synthetic_ratio, 0
    if isinstance(ratio, (int, float)) and not isinstance(ratio, bool):
        added = int(round(float(ratio) * kept))
    elif ratio == "balance":
        added = int(max(0, max(c for i, c in enumerate(counts) if i != rare) - kept))
    return real + added, len(labels.get("val", ())), len(labels.get("test", ())), real


def estimate(jobs: list, runs_dir: Path) -> list[str]:
    """Lines for --dry-run: the classifier stage's work and device-hours per backbone and size."""
    return estimate_hours(jobs, runs_dir)[0]


def estimate_hours(jobs: list, runs_dir: Path) -> tuple[list[str], dict[str, float]]:
    """(the --dry-run cost lines, {device: device-hours of training}) of the classifier stage."""
    classifiers = [j for j in jobs if getattr(j, "stage", "") == "classifier"]
    if not classifiers:
        return [], {}
    seen_images, speeds, ignored = _measured(_earlier_records(runs_dir))
    labels_cache: dict = {}
    groups: dict[tuple, dict] = defaultdict(lambda: {"jobs": 0, "epochs": 0, "steps": 0, "train": 0, "eval": 0,
                                                     "unknown": 0})
    for spec in classifiers:
        group = groups[(spec.backbone, spec.image_size)]
        group["jobs"] += 1
        labels = _label_counts(spec.dataset, spec.image_size, labels_cache)
        sizes = _images_per_epoch(spec, labels) if labels is not None else None
        work = _job_work(spec, sizes, seen_images.get(_cell(spec), sizes[0] if sizes else None))
        if work is None:
            group["unknown"] += 1
            continue
        for name, amount in work.items():
            group[name] += amount
    lines = []
    totals: dict[str, float] = defaultdict(float)
    for (backbone, size), g in sorted(groups.items(), key=lambda kv: str(kv[0])):
        work = g["train"] + EVAL_COST * g["eval"]
        budgets = ([f"{g['epochs']:,} epochs"] if g["epochs"] or not g["steps"] else []) \
            + ([f"{g['steps']:,} optimiser steps (step budgets)"] if g["steps"] else [])
        head = (f"{backbone} @{size}px: {g['jobs']} jobs, {', '.join(budgets)}, {g['train']:,} training images"
                + (f" (+{g['eval']:,} evaluated)" if g["eval"] else "")
                + (f", {g['unknown']} job(s) of unknown size (data not downloaded)" if g["unknown"] else ""))
        measured = speeds.get((backbone, size))
        skipped = ignored.get((backbone, size))
        note = (f"; {len(skipped)} record(s) that ran oversubscribed ignored (e.g. {skipped[0]})" if skipped else "")
        if measured:
            parts = []
            for device, rates in sorted(measured.items()):
                rate = statistics.median(rates)
                hours = work / rate / 3600
                totals[device] += hours
                parts.append(f"{device} {hours:,.1f} h at {rate:,.0f} images/s (median of {len(rates)} record(s))")
            lines.append(f"{head}; " + "; ".join(parts) + note)
        elif backbone in CPU_RELATIVE_STEP_TIME:
            rate = CPU_IMAGES_PER_S_RESNET18_28PX / CPU_RELATIVE_STEP_TIME[backbone] / (size / 28) ** 2
            hours = work / rate / 3600
            totals["cpu (docs)"] += hours
            lines.append(f"{head}; cpu ~{hours:,.1f} h at ~{rate:,.0f} images/s (docs/benchmarks.md, 2-core CPU, "
                         "scaled by pixels); no GPU figure measured yet" + note)
        else:
            lines.append(f"{head}; no throughput known (no earlier record of it in {runs_dir})" + note)
    if totals:
        lines.append("total: " + ", ".join(f"{device} ~{hours:,.1f} device-hours" for device, hours in
                                           sorted(totals.items())) + " of training (start-up, generator jobs and "
                     "state saving not included)")
    return lines, dict(totals)


def _measured(records: list[dict]) -> tuple[dict, dict, dict]:
    """From earlier classifier records: ({cell: training images}, {(backbone, size): {device: [images/s]}},
    {(backbone, size): [why each record that ran oversubscribed was left out]})."""
    seen_images: dict = {}
    speeds: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    ignored: dict[tuple, list[str]] = defaultdict(list)
    for record in records:
        spec, counts = record.get("spec", {}), record.get("counts", {})
        if counts.get("n_train_real") is not None:
            seen_images[_cell(spec)] = int(counts["n_train_real"]) + int(counts.get("n_train_synthetic") or 0)
        rate = (record.get("timings") or {}).get("train_images_per_s")
        compute = record.get("compute") or {}
        device = str(compute.get("device") or "?").split(":")[0]
        if not (isinstance(rate, (int, float)) and rate == rate and rate > 0):
            continue
        group = (spec.get("backbone"), spec.get("image_size"))
        reason = oversubscribed(record)
        if reason:
            ignored[group].append(reason)
            continue
        # K jobs that shared one device (jobs_per_device) each measured 1/K-ish of it: the device did K × rate
        shared = compute.get("jobs_per_device") or 1
        speeds[group][device].append(float(rate) * int(shared))
    return seen_images, speeds, ignored


def _job_work(spec, sizes, per_epoch) -> dict | None:
    """{epochs, steps, train, eval} of one job: epochs × its training images, or for a step budget its steps ×
    the batch size (match_real_epochs: from the cell's real images); eval: its validations and one test pass.
    None when its size is unknown (data not downloaded)."""
    config = spec.training_config
    budget = config.budget_spec
    if budget.form == "epochs":
        if per_epoch is None:
            return None
        return {"epochs": budget.amount, "train": budget.amount * per_epoch,
                "eval": budget.amount * sizes[1] + sizes[2] if sizes else 0}
    if budget.form == "match_real_epochs" and not sizes:
        return None
    steps = budget.amount if budget.form == "steps" else budget.amount * -(-sizes[3] // config.batch_size)
    return {"steps": steps, "train": steps * config.batch_size,
            "eval": (budget.evaluations or 1) * sizes[1] + sizes[2] if sizes else 0}
