"""Jobs: result records (schema, atomic, last), skipping finished work, failures never cached as done."""

import json
import os
from dataclasses import replace

import pytest

from benchmark import job as job_module
from benchmark.generators.base import Method
from benchmark.grid import Grid, expand
from benchmark.job import execute, run_dir_status, write_json_atomic
from tests.registry_helpers import register_entry

TINY = {"epochs": 1, "batch_size": 64, "save_checkpoint": True}


class ExplodingMethod(Method):
    def build_training_set(self, real, rare_class, synthetic_ratio, num_classes, seed):
        raise RuntimeError("planted failure")


def tiny_spec(generator="oversample", **training):
    axes = {"dataset": ["breastmnist"], "generator": [generator], "backbone": ["resnet18"], "rare_count": [10],
            "synthetic_ratio": [2]}
    return expand(Grid("t", None, axes, [], [], {**TINY, **training}, "test"))[0]


@pytest.fixture
def exploding_registry(tmp_path, monkeypatch):
    register_entry(tmp_path, monkeypatch, "generator", "exploding",
                   "target: tests.test_job:ExplodingMethod\nversion: 1\n")


@pytest.mark.slow
def test_result_record_schema_and_skip_when_done(data_env, tmp_path):
    spec = tiny_spec()
    run_dir = tmp_path / spec.key
    assert execute(spec, run_dir) == "done"
    record = json.loads((run_dir / "result.json").read_text())
    assert record["key"] == spec.key and record["name"] == spec.name
    assert record["spec"]["generator"] == "oversample" and record["spec"]["synthetic_ratio"] == 2.0
    assert record["resolved"]["rare_class"] == 0 and record["resolved"]["n_rare_train"] == 10
    assert record["counts"] == {"real_per_class": [10, 399], "synthetic_per_class": [20, 0],
                                "n_train_real": 409, "n_train_synthetic": 20}
    for split, n in (("val", 78), ("test", 156)):
        metrics = record["metrics"][split]
        assert metrics["n"] == n and 0.0 <= metrics["auroc"] <= 1.0
        assert sum(map(sum, metrics["confusion_matrix"])) == n
    assert record["timings"]["wall_s"] > 0 and record["timings"]["train_images_per_s"] > 0
    assert len(record["dataset"]["sha256"]) == 64
    assert record["environment"]["versions"]["torch"] == "2.14.1"
    assert (run_dir / "model.safetensors").is_file()
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    mtime = (run_dir / "result.json").stat().st_mtime_ns
    assert execute(spec, run_dir) == "skipped"
    assert (run_dir / "result.json").stat().st_mtime_ns == mtime


def test_failing_job_writes_error_json_and_is_not_done(data_env, exploding_registry, tmp_path):
    spec = tiny_spec("exploding")
    run_dir = tmp_path / spec.key
    assert execute(spec, run_dir) == "failed"
    assert not (run_dir / "result.json").exists()
    error = json.loads((run_dir / "error.json").read_text())
    assert error["error"] == "RuntimeError: planted failure" and "planted failure" in error["traceback"]
    assert "build_training_set" in error["traceback"]
    assert run_dir_status(run_dir) == "failed"


def test_forced_rerun_that_fails_keeps_the_finished_result(data_env, exploding_registry, tmp_path):
    spec = tiny_spec("exploding")
    run_dir = tmp_path / spec.key
    write_json_atomic(run_dir / "result.json", {"key": spec.key, "finished": True})
    before = (run_dir / "result.json").read_bytes()
    assert execute(spec, run_dir) == "skipped"
    assert execute(spec, run_dir, force=True) == "failed"
    assert (run_dir / "result.json").read_bytes() == before
    assert (run_dir / "error.json").is_file()


def test_atomic_write_never_leaves_a_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "result.json"
    write_json_atomic(path, {"a": 1})

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(job_module.json, "dump", crash)
    with pytest.raises(KeyboardInterrupt):
        write_json_atomic(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 1}
