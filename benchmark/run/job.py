"""Jobs: run one classifier or generator spec into its run folder: its artifacts staged, then swapped in with
result.json (their sha256 in it: benchmark.run.run_dir.commit_staged); error.json on failure, a full disk included."""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
import time
import traceback
from functools import lru_cache
from pathlib import Path

from benchmark import REPO_ROOT
from benchmark.core.specs import JobSpec
from benchmark.core.training_set import apply_mixing
from benchmark.run import run_dir as rd
from benchmark.run.record import RESULT_SCHEMA, Record, write_predictions
from benchmark.run.run_dir import RESULT_FILE  # noqa: F401 (benchmarks/ import it from here)
from benchmark.run.run_dir import ERROR_FILE, SPEC_FILE, STATE_DIR, now_iso, write_json_atomic
from benchmark.run.threads import JOBS_PER_DEVICE_ENV, cpu_usage



@lru_cache(maxsize=1)
def git_state() -> dict:
    repo = REPO_ROOT

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
            "platform": platform.platform(), "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "pid": os.getpid(),
            **git_state()}


def run_classifier(spec: JobSpec, run_dir: Path, progress: bool = False, resumable: bool = False,
                   checkpoint_every_s: float = 0.0, artifacts_dir: Path | None = None) -> tuple[Record, bool]:
    """Train and evaluate one classifier job: (its record, whether this is the main process). The main process
    writes the per-image predictions (predictions.npz) and the weights into `artifacts_dir` (the run's staging
    folder; default the run folder); the caller writes the record."""
    artifacts_dir = Path(run_dir) if artifacts_dir is None else Path(artifacts_dir)
    from benchmark.core import registry
    from benchmark.run.cell import build_cell
    from benchmark.run.train import train_classifier

    started_at, started = now_iso(), time.perf_counter()
    cell = build_cell(spec)
    bundle = cell.bundle
    seed = spec.init_seed  # the cell's (not its rare count's), seed, fold and backbone: benchmark.core.seeding
    method, audit = _method(spec, cell, Path(run_dir))
    training_set = method.build_training_set(cell.real, cell.rare_class, spec.synthetic_ratio,
                                             bundle.num_classes, seed, held_back=cell.held_back)
    # how the added images enter training (spec.mixing; concat: unchanged): benchmark.core.training_set
    training_set = apply_mixing(training_set, cell.real, cell.rare_class, spec.mixing)
    if hasattr(method, "audit"):  # a bank made elsewhere: the same audit as a harness generator's bank
        audit = method.audit(spec, cell, Path(run_dir).parent)
    backbone = registry.create("backbone", spec.backbone)
    outcome = train_classifier(training_set, bundle, cell.rare_class, backbone, spec.training_config, seed,
                               run_dir=run_dir, progress=progress,
                               state_dir=Path(run_dir) / STATE_DIR if resumable else None,
                               checkpoint_every_s=checkpoint_every_s, n_real=len(cell.real.labels),
                               artifacts_dir=artifacts_dir)
    predictions = write_predictions(artifacts_dir, outcome.predictions) if outcome.is_main_process else None
    counts = training_set.counts(bundle.num_classes)
    record = Record(
        key=spec.key, name=spec.name, stage=spec.stage, spec=spec.to_dict(),
        resolved={"rare_class": cell.rare_class, "rare_class_name": bundle.label_names[cell.rare_class],
                  "n_rare_train": cell.n_rare,
                  "n_rare_available": int((bundle.splits["train"].labels == cell.rare_class).sum()),
                  "init_seed": seed, "backbone_adaptation": backbone.adaptation(bundle.image_size)},
        counts={**counts, "n_train_real": int(sum(counts["real_per_class"])),
                "n_train_synthetic": int(sum(counts["synthetic_per_class"]))},
        method_info=training_set.info if outcome.switch_step is None else
        {**training_set.info, "switch_step": outcome.switch_step},
        generator_key=spec.generator_key, audit=audit, metrics=outcome.metrics,
        best_epoch=outcome.best_epoch, best_step=outcome.best_step, optimizer_steps=outcome.optimizer_steps,
        images_seen=outcome.images_seen, history=outcome.history,
        timings={"started_at": started_at, "finished_at": now_iso(), "wall_s": time.perf_counter() - started,
                 "train_s": outcome.train_seconds, "train_images_per_s": outcome.train_images_per_s,
                 "cpu": cpu_usage()},  # threads, workers, cores, machine load: plan/cost.py skips oversubscribed
        compute={"device": outcome.device, "num_processes": outcome.num_processes,
                 "mixed_precision": outcome.mixed_precision,
                 # jobs sharing the device at once (cluster profile jobs_per_device): per-job images/s is lower
                 "jobs_per_device": int(os.environ.get(JOBS_PER_DEVICE_ENV) or 1),
                 **({"mixed_precision_note": outcome.mixed_precision_note} if outcome.mixed_precision_note else {})},
        dataset={"name": bundle.name, "file": Path(bundle.path).name, "sha256": bundle.sha256, "task": bundle.task,
                 "num_classes": bundle.num_classes, "label_names": bundle.label_names,
                 "split_sizes": {s: len(v) for s, v in bundle.splits.items()}},
        environment=environment(),
        checkpoints=outcome.checkpoints,  # state saves (resumable runs): count, seconds, bytes
        predictions=predictions, notes=list(outcome.notes))
    return record, outcome.is_main_process


def _method(spec: JobSpec, cell, run_dir: Path):
    """The job's method (a generator's bank mixed in, or a registry method) and the bank's audit, if any."""
    from benchmark.core import registry

    if not spec.is_generative:
        method_entry = registry.get("generator", spec.generator)
        return registry.create("generator", method_entry, config=spec.entries["generator"]["config"]), None  # the key's
    from benchmark.generators.stage import SyntheticMix

    artifact_dir = run_dir.parent / spec.generator_key
    if rd.status(artifact_dir) != rd.DONE:
        raise RuntimeError(f"blocked by {spec.generator_key}: generator job {spec.generator_spec.name} "
                           f"has not finished ({rd.status(artifact_dir)})")
    return SyntheticMix(artifact_dir), rd.read_record(artifact_dir).get("audit")


def execute(spec: JobSpec, run_dir: Path, force: bool = False, progress: bool = False,
            resumable: bool = False, rank: int = 0, checkpoint_every_s: float = 0.0) -> str:
    """Run `spec` unless done. Returns 'skipped', 'done', 'failed' or 'running elsewhere'. Never raises for a job's
    own failure: the traceback goes to error.json, and an earlier result.json is never removed or overwritten by a
    failure. `resumable`: save the training state and resume from it (preemption, requeue): after every epoch, or
    at most every `checkpoint_every_s` seconds when that is > 0 (benchmark.run.train.Checkpointing).

    One process per key: the run folder's lock (benchmark.run.run_dir.lock) is taken before anything there is read or
    written; when another live process holds it, this returns 'running elsewhere' and leaves the folder alone. A
    corrupt result.json is moved aside (result.json.corrupt-<time>) and the job runs again. Ranks > 0 of a
    multi-task job do not lock: they follow what rank 0 of the same SLURM job decided."""
    run_dir = Path(run_dir)
    if rank > 0:
        verdict = rd.follow_lock(run_dir, force)
        return verdict if verdict != "run" else _run(spec, run_dir, progress, resumable, checkpoint_every_s, rank)
    try:
        with rd.lock(run_dir):
            recovered = rd.recover_staging(run_dir)  # what a crashed earlier run left staged
            if recovered:
                print(f"{spec.name} ({spec.key}): an earlier run's staged artifacts were {recovered} "
                      f"({'its record was committed' if recovered == 'completed' else 'it never committed'})",
                      flush=True)
            found = rd.status(run_dir, probe_lock=False)
            if found == rd.DONE and not force:
                return "skipped"
            if found == rd.CORRUPT:
                reason = rd.corrupt_reason(run_dir)
                moved = rd.move_aside_corrupt(run_dir)
                print(f"corrupt record {reason}; moved aside to {moved.name}, running {spec.name} again", flush=True)
            return _run(spec, run_dir, progress, resumable, checkpoint_every_s)
    except rd.RunningElsewhere as exc:
        print(f"running elsewhere: {spec.name} ({spec.key}) is locked by {rd.describe_holder(exc.holder)}; "
              "left alone", flush=True)
        return rd.RUNNING_ELSEWHERE
    except rd.UnsafeRunFolder as exc:  # e.g. a symlink planted at the lock path: refused, recorded, never followed
        print(f"refused: {spec.name} ({spec.key}): {exc}", flush=True)
        record_failure(spec, run_dir, exc)
        return "failed"


def record_failure(spec: JobSpec, run_dir: Path, exc: BaseException) -> None:
    """error.json: what failed and where (a failure is never cached as done; the next run retries the job). When
    even that cannot be written (a full disk), the failure goes to the job log only: the job stays not done."""
    try:
        write_json_atomic(run_dir / ERROR_FILE, {
            "key": spec.key, "name": spec.name, "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(), "failed_at": now_iso(), "host": socket.gethostname(),
        })
    except OSError as write_error:
        print(f"failed: {spec.name} ({spec.key}): {type(exc).__name__}: {exc}; its error.json could not be "
              f"written either ({write_error})", flush=True)


def _run(spec: JobSpec, run_dir: Path, progress: bool, resumable: bool, checkpoint_every_s: float,
         rank: int = 0) -> str:
    """Run the job with its artifacts staged (rank 0 owns the staging folder; other ranks write no artifacts),
    then commit them with the record. Any failure — an OSError such as a full disk while writing the record
    included — discards what was staged and becomes error.json; the folder's earlier record is left as it was."""
    staged = rd.begin_staging(run_dir) if rank == 0 else rd.staging_dir(run_dir)
    try:
        write_json_atomic(run_dir / SPEC_FILE, spec.to_dict())
        if spec.stage == "classifier":
            record, is_main = run_classifier(spec, run_dir, progress=progress, resumable=resumable,
                                             checkpoint_every_s=checkpoint_every_s, artifacts_dir=staged)
            record = record.to_json()
        else:
            record, is_main = run_generator_record(spec, run_dir, staged), True
        if is_main:
            rd.commit_staged(run_dir, record)
    except Exception as exc:  # noqa: BLE001 - every failure is recorded, never cached as done
        if rank == 0:
            rd.discard_staging(run_dir)
        record_failure(spec, run_dir, exc)
        return "failed"
    if is_main:
        (run_dir / ERROR_FILE).unlink(missing_ok=True)
        shutil.rmtree(run_dir / STATE_DIR, ignore_errors=True)
    return "done"


def run_generator_record(spec, run_dir: Path, artifacts_dir: Path | None = None) -> dict:
    from benchmark.generators.stage import run_generator

    started_at = now_iso()
    outcome = run_generator(spec, run_dir, artifacts_dir)
    outcome["timings"].update(started_at=started_at, finished_at=now_iso())
    return {"schema": RESULT_SCHEMA, "key": spec.key, "name": spec.name, "stage": spec.stage,
            "spec": spec.to_dict(), **outcome, "environment": environment()}

