"""Jobs: run one classifier spec into its run folder (result.json atomically and last; error.json on failure)."""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import time
import traceback
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

from benchmark.specs import JobSpec

RESULT_FILE = "result.json"
ERROR_FILE = "error.json"
SPEC_FILE = "spec.json"
STATE_DIR = "state"
RESULT_SCHEMA = 1


def write_json_atomic(path: Path, payload: dict) -> None:
    """Write JSON via a temp file in the same folder + fsync + rename: readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        json.dump(payload, fh, indent=1, sort_keys=True, default=str)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@lru_cache(maxsize=1)
def git_state() -> dict:
    repo = Path(__file__).resolve().parent.parent

    def git(*args):
        try:
            done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout.strip() if done.returncode == 0 else ""

    sha = git("rev-parse", "HEAD")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no")) if sha else None
    return {"git_sha": sha or None, "git_dirty": dirty}


def environment() -> dict:
    """Versions and host: how a result was produced."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in ("torch", "torchvision", "timm", "accelerate", "torchmetrics", "numpy", "diffusers", "medmnist",
                    "genmed-rare"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return {"python": platform.python_version(), "versions": versions, "host": socket.gethostname(),
            "platform": platform.platform(), "slurm_job_id": os.environ.get("SLURM_JOB_ID"), **git_state()}


def run_dir_status(run_dir: Path) -> str:
    """'done' (result.json), 'failed' (error.json, no result) or 'pending'."""
    if (run_dir / RESULT_FILE).is_file():
        return "done"
    if (run_dir / ERROR_FILE).is_file():
        return "failed"
    return "pending"


def run_classifier(spec: JobSpec, run_dir: Path, progress: bool = False, resumable: bool = False) -> dict:
    """Train and evaluate one classifier job; returns the record (written by the caller)."""
    from benchmark import registry
    from benchmark.cell import build_cell
    from benchmark.seeding import init_seed
    from benchmark.train import train_classifier

    started_at, started = now_iso(), time.perf_counter()
    cell = build_cell(spec)
    bundle = cell.bundle
    seed = init_seed(spec.dataset_id, spec.rare_class, spec.rare_count, spec.seed, spec.backbone)
    method_entry = registry.get("generator", spec.generator)
    audit = None
    if spec.is_generative:
        from benchmark.generators.stage import SyntheticMix

        artifact_dir = Path(run_dir).parent / spec.generator_key
        if run_dir_status(artifact_dir) != "done":
            raise RuntimeError(f"blocked by {spec.generator_key}: generator job {spec.generator_spec.name} "
                               "has not finished")
        method = SyntheticMix(artifact_dir)
        audit = json.loads((artifact_dir / RESULT_FILE).read_text()).get("audit")
    else:
        method = method_entry.load()(**method_entry.config)
    training_set = method.build_training_set(cell.real, cell.rare_class, spec.synthetic_ratio,
                                             bundle.num_classes, seed)
    backbone_entry = registry.get("backbone", spec.backbone)
    backbone = backbone_entry.load()(name=backbone_entry.name, **backbone_entry.config)
    outcome = train_classifier(training_set, bundle, cell.rare_class, backbone, spec.training, seed,
                               run_dir=run_dir, progress=progress,
                               state_dir=Path(run_dir) / STATE_DIR if resumable else None)
    counts = training_set.counts(bundle.num_classes)
    return {
        "schema": RESULT_SCHEMA,
        "key": spec.key,
        "name": spec.name,
        "stage": spec.stage,
        "spec": spec.to_dict(),
        "resolved": {
            "rare_class": cell.rare_class,
            "rare_class_name": bundle.label_names[cell.rare_class],
            "n_rare_train": cell.n_rare,
            "n_rare_available": int((bundle.splits["train"].labels == cell.rare_class).sum()),
            "init_seed": seed,
            "backbone_adaptation": backbone.adaptation(bundle.image_size),
        },
        "counts": {**counts, "n_train_real": int(sum(counts["real_per_class"])),
                   "n_train_synthetic": int(sum(counts["synthetic_per_class"]))},
        "method_info": training_set.info,
        "generator_key": spec.generator_key,
        "audit": audit,
        "metrics": outcome["metrics"],
        "best_epoch": outcome["best_epoch"],
        "history": outcome["history"],
        "timings": {"started_at": started_at, "finished_at": now_iso(),
                    "wall_s": time.perf_counter() - started, "train_s": outcome["train_seconds"],
                    "train_images_per_s": outcome["train_images_per_s"]},
        "compute": {"device": outcome["device"], "num_processes": outcome["num_processes"],
                    "mixed_precision": outcome["mixed_precision"]},
        "dataset": {"name": bundle.name, "file": Path(bundle.path).name, "sha256": bundle.sha256,
                    "task": bundle.task, "num_classes": bundle.num_classes, "label_names": bundle.label_names,
                    "split_sizes": {s: len(v) for s, v in bundle.splits.items()}},
        "environment": environment(),
        "_is_main_process": outcome["is_main_process"],
    }


def execute(spec: JobSpec, run_dir: Path, force: bool = False, progress: bool = False,
            resumable: bool = False) -> str:
    """Run `spec` unless done. Returns 'skipped', 'done' or 'failed'. Never raises for a job's own failure:
    the traceback goes to error.json, and an earlier result.json is never removed or overwritten by a failure.
    `resumable`: save the training state every epoch and resume from it (preemption, requeue)."""
    run_dir = Path(run_dir)
    if run_dir_status(run_dir) == "done" and not force:
        return "skipped"
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / SPEC_FILE, spec.to_dict())
    try:
        record = run_classifier(spec, run_dir, progress=progress, resumable=resumable) \
            if spec.stage == "classifier" else run_generator_record(spec, run_dir)
    except Exception as exc:  # noqa: BLE001 - every failure is recorded, never cached as done
        write_json_atomic(run_dir / ERROR_FILE, {
            "key": spec.key, "name": spec.name, "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(), "failed_at": now_iso(), "host": socket.gethostname(),
        })
        return "failed"
    if record.pop("_is_main_process", True):
        write_json_atomic(run_dir / RESULT_FILE, record)
        (run_dir / ERROR_FILE).unlink(missing_ok=True)
        shutil.rmtree(run_dir / STATE_DIR, ignore_errors=True)
    return "done"


def run_generator_record(spec, run_dir: Path) -> dict:
    from benchmark.generators.stage import run_generator

    started_at = now_iso()
    outcome = run_generator(spec, run_dir)
    outcome["timings"].update(started_at=started_at, finished_at=now_iso())
    return {"schema": RESULT_SCHEMA, "key": spec.key, "name": spec.name, "stage": spec.stage,
            "spec": spec.to_dict(), **outcome, "environment": environment()}

