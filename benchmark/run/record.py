"""A classifier job's record: the `Record` dataclass ⇄ result.json (written by benchmark.run.job, read by the
collector), and its per-image predictions file (predictions.npz, its sha256 in the record).

result.json keeps the shape it always had; fields added later (`best_step`, `optimizer_steps`, `images_seen`,
`predictions`, `artifacts`) are None (`notes` empty) when an older record is read, and keys the dataclass does not
know are kept in `extra` and written back unchanged.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from benchmark.run.run_dir import CorruptRecord, write_bytes_atomic

RESULT_SCHEMA = 1
PREDICTIONS_FILE = "predictions.npz"
PREDICTION_ARRAYS = ("val_labels", "val_probs", "test_labels", "test_probs")  # labels (N,), probabilities (N, C)


@dataclass
class Record:
    """One finished classifier job (result.json)."""

    key: str
    name: str
    spec: dict
    metrics: dict                      # {"val": {...}, "test": {...}} (benchmark.run.metrics)
    stage: str = "classifier"
    schema: int = RESULT_SCHEMA
    resolved: dict = field(default_factory=dict)      # rare class (index, name), n_rare_train, init seed, …
    counts: dict = field(default_factory=dict)        # real/synthetic per class, n_train_real, n_train_synthetic
    method_info: dict = field(default_factory=dict)
    generator_key: str | None = None
    audit: dict | None = None
    best_epoch: int | None = None      # the selected epoch (epochs budget); None under a step budget
    best_step: int | None = None       # the optimiser step of the selected validation
    optimizer_steps: int | None = None  # optimiser steps taken (the budget)
    images_seen: int | None = None     # training images drawn over those steps (duplicates and repeats counted)
    history: list = field(default_factory=list)       # one entry per validation
    timings: dict = field(default_factory=dict)
    compute: dict = field(default_factory=dict)
    dataset: dict = field(default_factory=dict)
    environment: dict = field(default_factory=dict)
    checkpoints: dict | None = None
    predictions: dict | None = None    # {"file": "predictions.npz", "sha256": …, "arrays": [...]}
    artifacts: dict | None = None      # {file: sha256} swapped in with this record (run_dir.commit_staged)
    notes: list = field(default_factory=list)         # what the run had to do differently (e.g. an unloadable state)
    extra: dict = field(default_factory=dict)         # keys of result.json this class does not know

    @classmethod
    def from_json(cls, data: dict) -> "Record":
        """From a parsed result.json (any harness version: missing fields take their defaults)."""
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {k: v for k, v in data.items() if k in known}
        values.setdefault("metrics", {})
        return cls(**values, extra={k: v for k, v in data.items() if k not in known})

    def to_json(self) -> dict:
        """The result.json payload."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**self.extra, **data}

    @property
    def training(self) -> dict:
        return self.spec.get("training") or {}


def _npz_bytes(arrays: dict) -> bytes:
    """An .npz of `arrays` whose bytes depend on the arrays only (fixed member times), so equal predictions have
    equal hashes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in PREDICTION_ARRAYS:
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), member.getvalue())
    return buffer.getvalue()


def write_predictions(run_dir: Path, arrays: dict) -> dict:
    """predictions.npz in `run_dir` (atomically): val/test labels (int64) and probabilities (float32); returns the
    record's `predictions` entry."""
    payload = {name: np.asarray(arrays[name], dtype=np.int64 if name.endswith("labels") else np.float32)
               for name in PREDICTION_ARRAYS}
    data = _npz_bytes(payload)
    write_bytes_atomic(Path(run_dir) / PREDICTIONS_FILE, data)
    return {"file": PREDICTIONS_FILE, "sha256": hashlib.sha256(data).hexdigest(), "arrays": list(PREDICTION_ARRAYS)}


class CorruptPredictions(CorruptRecord):
    """A predictions file that is missing, does not match the hash in its record, or does not load."""


def load_predictions(run_dir: Path, record: "Record | dict") -> dict:
    """The per-image predictions of a finished job, checked against the sha256 its record holds: {name: array}.
    Raises CorruptPredictions naming the file when it is missing, altered or unreadable; ValueError when the record
    predates predictions files."""
    record = record if isinstance(record, Record) else Record.from_json(record)
    entry = record.predictions
    if not entry:
        raise ValueError(f"{record.name} ({record.key}): its record holds no predictions file (written by an older "
                         "harness); run the job again (--force) to get per-image predictions")
    path = Path(run_dir) / entry.get("file", PREDICTIONS_FILE)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CorruptPredictions(path, f"cannot be read ({exc}); its record {record.name} names it") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry.get("sha256"):
        raise CorruptPredictions(path, f"sha256 {digest[:12]}… does not match its record's "
                                       f"{str(entry.get('sha256'))[:12]}…: the file was altered or truncated; run "
                                       "the job again (--force)")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as loaded:
            return {name: loaded[name] for name in PREDICTION_ARRAYS}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise CorruptPredictions(path, f"does not load as predictions ({exc})") from None
