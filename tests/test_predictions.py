"""Per-image predictions (predictions.npz, its sha256 in the record) reproduce the record's metrics; a corrupt or
missing file is named; the Record dataclass reads old result.json files and writes the same shape back."""

import json
import math

import numpy as np
import pytest

from benchmark.collect.records import flatten_result, read_predictions
from benchmark.run.record import PREDICTIONS_FILE, CorruptPredictions, Record, write_predictions
from benchmark.run.run_dir import write_json_atomic


def same(a, b) -> bool:
    """Equal, with NaN equal to NaN (a metric undefined on a split is NaN in both)."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b


def rank_auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """AUROC as the Mann-Whitney statistic with mid-ranks for ties (independent of torchmetrics)."""
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    n_pos, n_neg = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@pytest.mark.slow
def test_saved_probabilities_reproduce_the_record_metrics(tmp_path, monkeypatch):
    import torch

    from benchmark.run.metrics import classification_metrics, threshold_metrics
    from tests.test_budget import run, tiny_jobs, tiny_registry

    tiny_registry(tmp_path, monkeypatch)
    spec = tiny_jobs(("oversample",), ratio=1, epochs=2)["oversample"]
    record, run_dir = run(spec, tmp_path / "runs")
    assert record["predictions"]["file"] == PREDICTIONS_FILE and len(record["predictions"]["sha256"]) == 64
    assert record["optimizer_steps"] == 2 * 6 and record["best_epoch"] in (1, 2)  # 44 + 4 images: 6 steps a pass
    predictions = read_predictions(run_dir, record)
    assert predictions["test_probs"].shape == (16, 2) and predictions["test_probs"].dtype == np.float32
    assert predictions["val_labels"].tolist() == [0] * 8 + [1] * 8
    rare = record["resolved"]["rare_class"]
    threshold = record["metrics"]["val"]["threshold"]
    for split in ("val", "test"):
        probs = torch.from_numpy(predictions[f"{split}_probs"])
        labels = torch.from_numpy(predictions[f"{split}_labels"])
        again = {**classification_metrics(probs, labels, 2, rare), **threshold_metrics(probs, labels, rare, threshold)}
        assert same(json.loads(json.dumps(again)), record["metrics"][split]), split
        scores = predictions[f"{split}_probs"][:, 1].astype(np.float64)
        assert rank_auroc(scores, predictions[f"{split}_labels"] == 1) == pytest.approx(
            record["metrics"][split]["auroc"], abs=1e-9)


def fake_record(tmp_path, **fields):
    arrays = {"val_labels": [0, 1, 1], "val_probs": [[0.9, 0.1], [0.3, 0.7], [0.4, 0.6]],
              "test_labels": [1, 0], "test_probs": [[0.2, 0.8], [0.6, 0.4]]}
    entry = write_predictions(tmp_path, arrays)
    return {"schema": 1, "key": tmp_path.name, "name": "net[x,seed=0]", "stage": "classifier", "spec": {},
            "metrics": {}, "predictions": entry, **fields}


def test_predictions_file_is_checked_against_its_hash(tmp_path):
    record = fake_record(tmp_path)
    back = read_predictions(tmp_path, record)
    np.testing.assert_allclose(back["test_probs"], [[0.2, 0.8], [0.6, 0.4]], rtol=1e-6)
    assert write_predictions(tmp_path / "again", {k: v for k, v in back.items()})["sha256"] == \
        record["predictions"]["sha256"]  # the same predictions give the same bytes
    path = tmp_path / PREDICTIONS_FILE
    data = bytearray(path.read_bytes())
    data[-30] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptPredictions, match=rf"{path}: sha256 .* does not match its record"):
        read_predictions(tmp_path, record)
    path.unlink()
    with pytest.raises(CorruptPredictions, match=rf"{path}: cannot be read"):
        read_predictions(tmp_path, record)


def test_read_predictions_reads_the_record_from_the_run_folder(tmp_path):
    record = fake_record(tmp_path)
    write_json_atomic(tmp_path / "result.json", record)
    assert read_predictions(tmp_path)["val_labels"].tolist() == [0, 1, 1]
    del record["predictions"]
    with pytest.raises(ValueError, match="holds no predictions file"):
        read_predictions(tmp_path, record)


OLD_RECORD = {  # a result.json written before budgets, predictions and the Record class
    "schema": 1, "key": "abc", "name": "resnet18[breastmnist,rare=20,none,seed=0]", "stage": "classifier",
    "spec": {"dataset": "breastmnist", "image_size": 28, "rare_class": "minority", "rare_count": 20,
             "generator": "none", "synthetic_ratio": 0.0, "backbone": "resnet18", "seed": 0, "grid": "g",
             "training": {"epochs": 3, "batch_size": 32, "lr": 0.001, "weight_decay": 0.05, "mixed_precision": "no"},
             "entries": {k: {"version": 1} for k in ("dataset", "generator", "backbone")}, "results_version": 1},
    "resolved": {"rare_class": 0, "rare_class_name": "malignant", "n_rare_train": 20},
    "counts": {"n_train_real": 419, "n_train_synthetic": 0}, "method_info": {}, "generator_key": None,
    "audit": None, "metrics": {"val": {"auroc": 0.8}, "test": {"auroc": 0.7}}, "best_epoch": 2,
    "history": [{"epoch": 1}], "timings": {"wall_s": 10.0}, "compute": {"num_processes": 1}, "dataset": {},
    "environment": {}, "checkpoints": None, "something_else": [1, 2]}


def test_record_reads_old_results_and_keeps_their_shape():
    record = Record.from_json(OLD_RECORD)
    assert record.best_epoch == 2 and record.optimizer_steps is None and record.extra == {"something_else": [1, 2]}
    written = record.to_json()
    assert {k: v for k, v in written.items() if k in OLD_RECORD} == OLD_RECORD
    assert set(written) - set(OLD_RECORD) == {"best_step", "optimizer_steps", "images_seen", "predictions",
                                              "artifacts", "notes"}
    row = flatten_result(OLD_RECORD)
    assert row["budget"] == "epochs=3" and row["epochs"] == 3 and row["optimizer_steps"] is None
    assert row["test_auroc"] == 0.7 and row["results_version"] == 1


def test_records_csv_carries_the_budget_spent():
    new = {**OLD_RECORD, "spec": {**OLD_RECORD["spec"], "training": {
        "batch_size": 32, "budget": {"match_real_epochs": 3, "evaluations": 3}}},
        "best_epoch": None, "best_step": 28, "optimizer_steps": 42, "images_seen": 1344}
    row = flatten_result(new)
    assert (row["budget"], row["optimizer_steps"], row["images_seen"], row["best_step"]) == (
        "match_real_epochs=3", 42, 1344, 28)
    assert row["epochs"] is None and row["best_epoch"] is None
