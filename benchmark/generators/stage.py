"""The generator stage: fit a generator once per cell, sample a bank, audit it (into the run's staging folder,
swapped in with the record: benchmark.run.run_dir.commit_staged); and mixing its bank into training, the bank checked
against the sha256 its record holds."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np

from benchmark.core.errors import UserError
from benchmark.core.training_set import DEFAULT_BANK_MULTIPLE, TrainingSet, bank_size, synthetic_count
from benchmark.generators.base import Method

BANK_FILE = "samples.npz"
MODEL_DIR = "model"

def write_bank(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    from benchmark.run.run_dir import atomic_path

    with atomic_path(path, suffix=".tmp.npz") as tmp:
        np.savez_compressed(tmp, images=images, labels=labels)


def read_bank(run_dir: Path, record: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The sample bank of a finished generator job; a corrupt or missing bank, or one whose sha256 is not the one
    `record` (the job's record, when given) holds, is a clear error."""
    import io

    from benchmark.run.run_dir import ARTIFACTS_FIELD

    path = Path(run_dir) / BANK_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"Generator artifact {run_dir} has no {BANK_FILE}; run the grid again to rebuild it.") from None
    expected = ((record or {}).get(ARTIFACTS_FIELD) or {}).get(BANK_FILE)
    if expected is not None and hashlib.sha256(data).hexdigest() != expected:
        raise UserError(f"Generator artifact {path} does not match the sha256 its record holds (replaced or altered "
                        "after the run). Rebuild it with: launch/grid.py ... --force --only <generator key>.")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            images, labels = npz["images"], npz["labels"]
    except Exception as exc:  # noqa: BLE001 - zip, pickle-free npz and key errors alike
        raise UserError(f"Generator artifact {path} is corrupt ({type(exc).__name__}: {exc}). "
                        "Rebuild it with: launch/grid.py ... --force --only <generator key>.") from None
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) != len(labels):
        raise UserError(f"Generator artifact {path} is corrupt (images {images.dtype} {images.shape}, "
                        f"{len(labels)} labels). Rebuild it with --force.")
    return images, labels


def _content_hashes(images: np.ndarray) -> list[str]:
    return [hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest() for image in images]


def check_no_leakage(fit_images: np.ndarray, bundle) -> None:
    """Refuse to fit a generator on any image whose content is a validation or test image and not also a
    training image (an exact duplicate that the dataset itself has in both splits is a training image)."""
    train = set(_content_hashes(bundle.splits["train"].images))
    held_out = {h for split in ("val", "test") for h in _content_hashes(bundle.splits[split].images)} - train
    leaked = [i for i, h in enumerate(_content_hashes(fit_images)) if h in held_out]
    if leaked:
        raise RuntimeError(f"leakage: {len(leaked)} image(s) given to the generator are validation/test images "
                           f"(positions {leaked[:10]}); generators may only see the cell's training images")


def run_generator(spec, run_dir: Path, artifacts_dir: Path | None = None) -> dict:
    """Fit the generator on the cell's real training images only, sample its bank, audit it, save everything into
    `artifacts_dir` (the run's staging folder; default `run_dir`); paths in the fit log name `run_dir`, where the
    files are once swapped in.

    The audit's distribution reference is every rare-class image of the training split (before rarity
    subsampling; evaluation only), its memorisation checks use the fit set, its data-copying test (``ct_*``) the
    cell's held-back rare images (rarity removed them: the generator never saw them), and its in-domain features
    come from the dataset's cached extractor (:mod:`benchmark.generators.extractor`, trained once per dataset and
    size)."""
    from benchmark.core import registry
    from benchmark.generators import extractor
    from benchmark.generators.audit import audit
    from benchmark.run.cell import build_cell
    from benchmark.run.threads import apply_thread_limit

    apply_thread_limit()
    out = Path(run_dir) if artifacts_dir is None else Path(artifacts_dir)
    started = time.perf_counter()
    cell = build_cell(spec)
    real = cell.real
    entry = registry.get("generator", spec.generator)
    planned = (getattr(spec, "entries", None) or {}).get("generator", {}).get("config", {})
    # a pipeline's planned content hash (the key's) travels with the config, so a folder changed since planning
    # stops the job instead of sampling from other weights
    config = {**entry.config, "pipeline_sha256": planned["pipeline_sha256"]} if planned.get("pipeline_sha256") \
        else None
    generator = registry.create("generator", entry, config=config, num_classes=cell.bundle.num_classes,
                                image_shape=real.images.shape[1:])
    elsewhere = getattr(generator, "trained_elsewhere", False)  # a pipeline trained outside: it never saw the cell
    seed = spec.generator_seed  # the cell's, seed, fold and generator: benchmark.core.seeding
    check_no_leakage(real.images, cell.bundle)
    fit_log = _in_run_dir(generator.fit(real.images, real.labels, seed, out_dir=out), out, run_dir)
    fit_seconds = time.perf_counter() - started
    generator.save(out / MODEL_DIR)
    n_bank = bank_size(np.bincount(real.labels, minlength=cell.rare_class + 1), cell.rare_class, int(entry.config.get("bank_multiple", DEFAULT_BANK_MULTIPLE)))
    sample_started = time.perf_counter()
    bank = generator.sample(n_bank, cell.rare_class, seed + 1)
    sample_seconds = time.perf_counter() - sample_started
    write_bank(out / BANK_FILE, bank, np.full(n_bank, cell.rare_class, dtype=np.int64))
    audit_started = time.perf_counter()
    train = cell.bundle.splits["train"]
    reference = train.images[train.labels == cell.rare_class]  # evaluation only: never given to the generator
    domain, domain_record, trained_here = extractor.for_cell(spec, cell.bundle, Path(run_dir).parent,
                                                             entry.config.get("audit_extractor"))
    domain_info = {"extractor_key": domain_record["key"], "extractor_trained_here": trained_here,
                   "extractor_train_n": domain_record["identity"]["train_n"],
                   "extractor_train_balanced_accuracy": domain_record["train_balanced_accuracy"]}
    # memorisation is checked against what the generator saw: the fit set; for a model trained elsewhere that is
    # unknown, so (as for external banks) the whole training split, and no data-copying test (no provably unseen
    # sample)
    seen_rare, seen_all = (reference, train.images) if elsewhere else (real.images[real.labels == cell.rare_class],
                                                                       real.images)
    held_back = None if elsewhere else cell.held_back.images[cell.held_back.labels == cell.rare_class]
    report = audit(bank, seen_rare, seen_all, out_dir=out, reference=reference, domain_extractor=domain,
                   domain_info=domain_info, sheet_heading=spec.name, held_back=held_back)
    audit_seconds = time.perf_counter() - audit_started
    if getattr(spec, "track", True) and isinstance(fit_log, dict):
        from benchmark.generators.audit import REAL_VS_SYNTHETIC_PNG
        from benchmark.run.tracking import log_generator_fit

        log_generator_fit(out, _in_run_dir(fit_log, run_dir, out),
                          {"audit/real_vs_synthetic": out / REAL_VS_SYNTHETIC_PNG})
    return {
        "resolved": {"rare_class": cell.rare_class, "n_rare_train": cell.n_rare, "generator_seed": seed,
                     "bank_size": n_bank, "fit_images": len(real.labels), "audit_reference_n": len(reference),
                     "fit_images_sha256": hashlib.sha256(np.ascontiguousarray(real.images).tobytes()).hexdigest()},
        "fit_log": fit_log,
        "audit": report,
        "timings": {"fit_s": fit_seconds, "sample_s": sample_seconds, "audit_s": audit_seconds,
                    "wall_s": time.perf_counter() - started,
                    "bank_images_per_s": n_bank / sample_seconds if sample_seconds else float("nan")},
        "dataset": {"sha256": cell.bundle.sha256, "file": Path(cell.bundle.path).name},
    }


def _in_run_dir(value, staged: Path, run_dir: Path):
    """`value` (a fit log: JSON-like) with paths under `staged` renamed to `run_dir`, where they end up."""
    if isinstance(value, dict):
        return {k: _in_run_dir(v, staged, run_dir) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_in_run_dir(v, staged, run_dir) for v in value)
    if isinstance(value, str) and Path(staged) != Path(run_dir) and value.startswith(f"{staged}/"):
        return f"{run_dir}/{value[len(str(staged)) + 1:]}"
    return value


class SyntheticMix(Method):
    """Classifier-side use of a generator: the first ratio × n_rare images of the cell's bank are added as
    synthetic rare-class images (a prefix, so larger ratios contain smaller ones)."""

    def __init__(self, artifact_dir: Path, **config):
        super().__init__(**config)
        self.artifact_dir = Path(artifact_dir)

    def build_training_set(self, real, rare_class, synthetic_ratio, num_classes, seed, held_back=None):
        counts = np.bincount(real.labels, minlength=num_classes)
        n_rare = int(counts[rare_class])
        needed = synthetic_count(synthetic_ratio, n_rare, counts)
        if needed == 0:
            return real
        from benchmark.run.run_dir import CorruptRecord, read_record

        try:
            record = read_record(self.artifact_dir)
        except CorruptRecord:
            record = None  # the job's status check said done: a record that went bad since is read as unhashed
        images, labels = read_bank(self.artifact_dir, record)
        if needed > len(images):
            raise UserError(f"synthetic_ratio {synthetic_ratio} needs {needed} synthetic images but the bank at "
                            f"{self.artifact_dir} has {len(images)}; raise the generator's bank_multiple.")
        if not (labels[:needed] == rare_class).all() or images.shape[1:] != real.images.shape[1:]:
            raise UserError(f"Generator bank at {self.artifact_dir} does not match this cell "
                            f"(labels or image shape {images.shape[1:]} vs {real.images.shape[1:]}).")
        return TrainingSet(
            np.concatenate([real.images, images[:needed]]),
            np.concatenate([real.labels, labels[:needed]]),
            np.concatenate([real.is_synthetic, np.ones(needed, dtype=bool)]),
            None,
            {"synthetic_from": self.artifact_dir.name, "synthetic_added": needed},
        )
