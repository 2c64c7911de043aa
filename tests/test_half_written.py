"""No half-written state (issue 21 item 4): artifacts staged and swapped in only with the record that names their
sha256, crashes at each point of a swap recovered, an unloadable training state moved aside (a fresh start), a full
disk while writing a record becoming that job's error.json without stopping its pack, and the bounded, locked hash
cache. Every case is planted on disk and checked against independently computed file contents and hashes."""

from __future__ import annotations

import errno
import hashlib
import json
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest

from benchmark.core.errors import UserError
from benchmark.data import cache
from benchmark.plan.grid import Grid, expand
from benchmark.run import run_dir as rd
from tests.dataset_makers import make_npz, write_registry


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def snapshot(folder: Path) -> dict:
    """{relative path: bytes} of every file in a run folder but its lock."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != rd.LOCK_FILE}


KEY = "0123456789abcdef"


def planted_record(run_dir: Path, artifacts: dict, **extra) -> dict:
    """A finished run folder: the files `artifacts` ({name: bytes}) and a record naming their sha256."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for name, data in artifacts.items():
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / name).write_bytes(data)
    record = {"schema": 1, "key": run_dir.name, "name": "planted", "stage": "generator", "spec": {},
              rd.ARTIFACTS_FIELD: {n: hashlib.sha256(d).hexdigest() for n, d in artifacts.items()}, **extra}
    (run_dir / rd.RESULT_FILE).write_text(json.dumps(record))
    return record


# ------------------------------------------------------------------------------------------------ staging (no training)
def test_commit_swaps_artifacts_in_with_their_hashes_and_drops_the_old_records_extras(tmp_path):
    run_dir = tmp_path / KEY
    planted_record(run_dir, {"samples.npz": b"old bank", "old_only.png": b"old picture", "model/w.bin": b"old w"})
    staged = rd.begin_staging(run_dir)
    (staged / "samples.npz").write_bytes(b"new bank")
    (staged / "model").mkdir()
    (staged / "model" / "w.bin").write_bytes(b"new weights")
    record = rd.commit_staged(run_dir, {"schema": 1, "key": KEY, "name": "new", "stage": "generator", "spec": {}})

    on_disk = json.loads((run_dir / rd.RESULT_FILE).read_text())
    assert on_disk == record and on_disk["name"] == "new"
    assert on_disk[rd.ARTIFACTS_FIELD] == {"model/w.bin": hashlib.sha256(b"new weights").hexdigest(),
                                           "samples.npz": hashlib.sha256(b"new bank").hexdigest()}
    assert (run_dir / "samples.npz").read_bytes() == b"new bank"
    assert (run_dir / "model" / "w.bin").read_bytes() == b"new weights"
    assert not (run_dir / "old_only.png").exists()  # named by the old record only: never beside the new one
    assert not rd.staging_dir(run_dir).exists() and not (run_dir / "model.old").exists()
    assert rd.verify_artifact(run_dir, "samples.npz") == run_dir / "samples.npz"


def test_weights_beside_a_record_from_before_staging_go_when_the_new_record_does_not_name_them(tmp_path):
    run_dir = tmp_path / KEY
    record = planted_record(run_dir, {"model.safetensors": b"old weights", "spec.json": b"{}"})
    del record[rd.ARTIFACTS_FIELD]  # written by a harness before staging
    (run_dir / rd.RESULT_FILE).write_text(json.dumps(record))
    (rd.begin_staging(run_dir) / "predictions.npz").write_bytes(b"new predictions")
    rd.commit_staged(run_dir, {"schema": 1, "key": KEY, "name": "new", "stage": "generator", "spec": {}})
    assert sorted(p.name for p in run_dir.iterdir()) == ["predictions.npz", "result.json", "spec.json"]


def test_a_crash_before_the_commit_point_leaves_the_old_record_and_artifacts(tmp_path):
    run_dir = tmp_path / KEY
    planted_record(run_dir, {"model.safetensors": b"old weights", "predictions.npz": b"old predictions"})
    before = snapshot(run_dir)
    staged = rd.begin_staging(run_dir)
    (staged / "model.safetensors").write_bytes(b"new weights")  # the run dies here: no staged record
    (staged / rd.RESULT_FILE).write_text('{"schema": 1, "key": "')  # or dies mid-record (a torn write)
    assert rd.recover_staging(run_dir) == "discarded"
    assert snapshot(run_dir) == before and rd.status(run_dir) == rd.DONE


def test_a_crash_after_the_commit_point_is_rolled_forward_by_the_next_run(tmp_path):
    run_dir = tmp_path / KEY
    planted_record(run_dir, {"model.safetensors": b"old weights", "predictions.npz": b"old predictions"})
    staged = rd.begin_staging(run_dir)
    (staged / "model.safetensors").write_bytes(b"new weights")
    (staged / "predictions.npz").write_bytes(b"new predictions")
    new = {"schema": 1, "key": KEY, "name": "new", "stage": "generator", "spec": {},
           rd.ARTIFACTS_FIELD: rd.artifact_hashes(staged)}
    (staged / rd.RESULT_FILE).write_text(json.dumps(new))
    # the process died mid-swap: old record already removed, one artifact moved in
    (run_dir / rd.RESULT_FILE).unlink()
    os.replace(staged / "model.safetensors", run_dir / "model.safetensors")
    assert rd.status(run_dir) == rd.PENDING  # never the old record beside the new weights
    assert rd.recover_staging(run_dir) == "completed"
    assert json.loads((run_dir / rd.RESULT_FILE).read_text()) == new
    for name in ("model.safetensors", "predictions.npz"):
        assert sha(run_dir / name) == new[rd.ARTIFACTS_FIELD][name]
    assert not rd.staging_dir(run_dir).exists()


def test_an_altered_artifact_is_named_with_the_fix(tmp_path):
    run_dir = tmp_path / KEY
    planted_record(run_dir, {"model.safetensors": b"weights"})
    (run_dir / "model.safetensors").write_bytes(b"swapped by hand")
    with pytest.raises(rd.ArtifactMismatch, match=r"model\.safetensors: sha256 .* altered .*\(--force\)"):
        rd.verify_artifact(run_dir, "model.safetensors")
    (run_dir / "model.safetensors").unlink()
    with pytest.raises(rd.ArtifactMismatch, match="is missing"):
        rd.verify_artifact(run_dir, "model.safetensors")


def test_a_bank_that_does_not_match_its_record_is_refused(tmp_path):
    from benchmark.generators.stage import BANK_FILE, read_bank, write_bank

    run_dir = tmp_path / KEY
    images, labels = np.full((3, 1, 4, 4), 7, np.uint8), np.zeros(3, np.int64)
    write_bank(run_dir / BANK_FILE, images, labels)
    record = planted_record(run_dir, {})
    record[rd.ARTIFACTS_FIELD] = {BANK_FILE: sha(run_dir / BANK_FILE)}
    assert (read_bank(run_dir, record)[0] == images).all()
    write_bank(run_dir / BANK_FILE, images + 1, labels)  # a valid bank, but not the one the record names
    with pytest.raises(UserError, match=r"does not match the sha256 its record holds.*--force"):
        read_bank(run_dir, record)


def test_fit_log_paths_name_the_run_folder_not_the_staging_folder(tmp_path):
    from benchmark.generators.stage import _in_run_dir

    staged, run_dir = tmp_path / KEY / rd.STAGING_DIR, tmp_path / KEY
    log = {"grids": [f"{staged}/grid_step000100.png"], "loss": [1.0], "note": f"{staged}x/other"}
    assert _in_run_dir(log, staged, run_dir) == {"grids": [f"{run_dir}/grid_step000100.png"], "loss": [1.0],
                                                 "note": f"{staged}x/other"}


# ------------------------------------------------------------------------------------------------ jobs (tiny training)
@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A 40 + 12 image .npz dataset and the `tinynet` backbone (tests/dataset_makers.py)."""
    npz = make_npz(tmp_path / "tiny.npz", {"train": [40, 12], "val": [8, 8], "test": [8, 8]})
    write_registry(tmp_path, monkeypatch, {"tinynpz": {"target": "benchmark.data.npz:NpzDataset",
                                                       "config": {"path": str(npz), "image_size": 28}}})


def tiny_jobs(**training) -> dict:
    axes = {"dataset": ["tinynpz"], "generator": ["none", "oversample", "class_weight"], "backbone": ["tinynet"],
            "rare_count": [4], "synthetic_ratio": ["balance"]}
    settings = {"batch_size": 8, "eval_batch_size": 16, "track": False, "save_checkpoint": True,
                "budget": {"steps": 2, "evaluations": 1}, **training}
    return {j.generator: j for j in expand(Grid("t", None, axes, [], [], settings, "test"))}


def enospc_for(monkeypatch, key: str) -> None:
    """A full disk when the record of `key` is written (the project's atomic writer, result.json only)."""
    real = rd.write_json_atomic

    def writer(path, payload):
        if Path(path).name == rd.RESULT_FILE and key in Path(path).parts:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, payload)

    monkeypatch.setattr(rd, "write_json_atomic", writer)


def test_a_full_disk_fails_one_job_of_a_pack_keeps_its_old_record_and_the_others_finish(tiny, tmp_path, monkeypatch):
    from benchmark.collect.records import read_predictions
    from benchmark.run.batch import JobBatch
    from benchmark.run.job import execute

    jobs, without_weights = tiny_jobs(), tiny_jobs(save_checkpoint=False)
    full, fine, unlockable = jobs["none"], jobs["oversample"], jobs["class_weight"]
    assert without_weights["oversample"].key == fine.key  # save_checkpoint is not in the key
    runs = tmp_path / "runs"
    for spec in (full, fine):
        assert execute(spec, runs / spec.key) == "done"
    old_full, old_fine = snapshot(runs / full.key), json.loads((runs / fine.key / rd.RESULT_FILE).read_text())
    assert set(old_full) >= {"result.json", "model.safetensors", "predictions.npz"}

    enospc_for(monkeypatch, full.key)
    real_lock = rd.lock

    def lock(run_dir, *args, **kwargs):  # a full disk already when the lock file is created
        if Path(run_dir).name == unlockable.key:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(Path(run_dir) / rd.LOCK_FILE))
        return real_lock(run_dir, *args, **kwargs)

    monkeypatch.setattr(rd, "lock", lock)
    pack = [full.to_dict(), unlockable.to_dict(), without_weights["oversample"].to_dict()]
    statuses = JobBatch(pack, str(runs), force=True).run_here(pack)
    assert statuses == {full.key: "failed", unlockable.key: "failed", fine.key: "done"}

    # the job whose record hit the full disk: old record and old artifacts, byte for byte; its error.json
    after = snapshot(runs / full.key)
    error = json.loads(after.pop(rd.ERROR_FILE))
    assert "No space left on device" in error["error"] and error["key"] == full.key
    assert {k: v for k, v in after.items() if k != rd.SPEC_FILE} == \
        {k: v for k, v in old_full.items() if k != rd.SPEC_FILE}
    record = json.loads(after[rd.RESULT_FILE])
    assert {n: hashlib.sha256(after[n]).hexdigest() for n in record[rd.ARTIFACTS_FIELD]} == record[rd.ARTIFACTS_FIELD]
    assert not rd.staging_dir(runs / full.key).exists()
    # the job whose lock could not be made: error.json, no record
    assert "No space left" in json.loads((runs / unlockable.key / rd.ERROR_FILE).read_text())["error"]
    assert not (runs / unlockable.key / rd.RESULT_FILE).exists()
    # the job after them ran: a new record naming exactly its new files; the old weights went with the old record
    new = json.loads((runs / fine.key / rd.RESULT_FILE).read_text())
    assert new["timings"]["started_at"] >= old_fine["timings"]["started_at"]
    assert set(new[rd.ARTIFACTS_FIELD]) == {"predictions.npz"} and not (runs / fine.key / "model.safetensors").exists()
    assert sha(runs / fine.key / "predictions.npz") == new[rd.ARTIFACTS_FIELD]["predictions.npz"] \
        == new["predictions"]["sha256"]
    assert set(read_predictions(runs / fine.key)) >= {"val_probs", "test_probs"}


def test_an_unloadable_training_state_is_moved_aside_and_the_job_starts_fresh(tiny, tmp_path):
    from benchmark.run.job import execute

    spec = tiny_jobs()["oversample"]
    assert execute(spec, tmp_path / "fresh" / spec.key) == "done"
    run_dir = tmp_path / "resumed" / spec.key
    state = run_dir / rd.STATE_DIR
    state.mkdir(parents=True)
    planted = {rd.PROGRESS_FILE: json.dumps({"epoch": 1, "step": 1, "evaluations": 1, "passes": 0,
                                             "batch_in_pass": 1, "history": [], "best_step": None,
                                             "train_seconds": 0.1, "train_images": 8}).encode(),
               "model.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\":1}"}  # e.g. after a library upgrade
    for name, data in planted.items():
        (state / name).write_bytes(data)
    assert execute(spec, run_dir, resumable=True) == "done"

    aside = sorted(run_dir.glob(f"{rd.STATE_DIR}{rd.UNLOADABLE_SUFFIX}*"))
    assert len(aside) == 1 and {p.name: p.read_bytes() for p in aside[0].iterdir()} == planted
    resumed = json.loads((run_dir / rd.RESULT_FILE).read_text())
    fresh = json.loads((tmp_path / "fresh" / spec.key / rd.RESULT_FILE).read_text())
    assert len(resumed["notes"]) == 1 and "did not load" in resumed["notes"][0] and aside[0].name in resumed["notes"][0]
    assert fresh["notes"] == []
    assert resumed["predictions"]["sha256"] == fresh["predictions"]["sha256"]  # a fresh start from the seed
    assert resumed["metrics"] == fresh["metrics"] and resumed["optimizer_steps"] == fresh["optimizer_steps"] == 2


# ------------------------------------------------------------------------------------------------ the hash cache
@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("GENMED_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_the_hash_cache_is_bounded_and_keeps_what_is_used(cache_dir, monkeypatch):
    monkeypatch.setenv(cache.MAX_ENTRIES_ENV, "4")
    computed = []

    def digest(key):
        return cache._cached_digest(key, lambda: computed.append(key) or f"h-{key}")

    for key in ("k0", "k1", "k2", "k3", "k4", "k5"):
        assert digest(key) == f"h-{key}"
    stored = json.loads((cache_dir / "sha256.json").read_text())
    assert list(stored) == ["k2", "k3", "k4", "k5"]  # the oldest evicted first
    assert digest("k2") == "h-k2" and computed.count("k2") == 1  # a hit: not computed again, refreshed
    assert digest("k6") == "h-k6"
    assert list(json.loads((cache_dir / "sha256.json").read_text())) == ["k4", "k5", "k2", "k6"]
    assert sorted(p.name for p in cache_dir.iterdir()) == ["sha256.json", "sha256.json.lock"]  # no temp files left


def _fill(prefix: str, n: int) -> None:
    for i in range(n):
        cache._cached_digest(f"{prefix}{i}", lambda i=i: f"{prefix}-{i}")


def test_concurrent_processes_lose_no_cache_entries(cache_dir):
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_fill, args=(prefix, 60)) for prefix in ("a", "b", "c")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [w.exitcode for w in workers] == [0, 0, 0]
    stored = json.loads((cache_dir / "sha256.json").read_text())
    assert stored == {f"{p}{i}": f"{p}-{i}" for p in "abc" for i in range(60)}


def test_a_symlink_at_the_cache_lock_is_not_followed(cache_dir, tmp_path):
    cache_dir.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (cache_dir / "sha256.json.lock").symlink_to(victim)
    assert cache._cached_digest("k", lambda: "h") == "h"  # computed, not cached
    assert victim.read_text() == "keep me" and not (cache_dir / "sha256.json").exists()


def test_a_bad_cache_cap_is_a_clear_error(cache_dir, monkeypatch):
    monkeypatch.setenv(cache.MAX_ENTRIES_ENV, "lots")
    with pytest.raises(UserError, match=r"GENMED_HASH_CACHE_MAX_ENTRIES is 'lots'; set it to a positive"):
        cache._cached_digest("k", lambda: "h")
