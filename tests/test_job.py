"""Jobs: result records (schema, atomic, last), skipping finished work, failures never cached as done."""

import json
import os

import pytest

from benchmark.generators.base import Method
from benchmark.plan.grid import Grid, expand
from benchmark.run import run_dir as run_dir_module
from benchmark.run.job import execute
from benchmark.run.run_dir import status as run_dir_status
from benchmark.run.run_dir import write_json_atomic
from tests.registry_helpers import register_entry

TINY = {"epochs": 1, "batch_size": 64, "save_checkpoint": True}


class ExplodingMethod(Method):
    def build_training_set(self, real, rare_class, synthetic_ratio, num_classes, seed, held_back=None):
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
    write_json_atomic(run_dir / "result.json", {"schema": 1, "key": spec.key, "name": spec.name, "stage": spec.stage,
                                                "spec": spec.to_dict(), "metrics": {}, "finished": True})
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

    monkeypatch.setattr(run_dir_module.json, "dumps", crash)
    with pytest.raises(KeyboardInterrupt):
        write_json_atomic(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 1}


# ------------------------------------------------------------------------------------------------ run folders
def valid_record(spec) -> dict:
    return {"schema": 1, "key": spec.key, "name": spec.name, "stage": spec.stage, "spec": spec.to_dict(),
            "metrics": {"test": {}}}


def test_run_folder_status_names_corrupt_records_with_their_path(tmp_path):
    spec = tiny_spec("none")
    run_dir = tmp_path / spec.key
    assert run_dir_status(run_dir) == "pending"
    write_json_atomic(run_dir / "error.json", {"error": "x"})
    assert run_dir_status(run_dir) == "failed"
    write_json_atomic(run_dir / "error.json", {"error": "x", "blocked_by": {"slurm_job_id": "7_0"}})
    assert run_dir_status(run_dir) == "blocked"
    text = json.dumps(valid_record(spec))
    (run_dir / "result.json").write_text(text)
    assert run_dir_status(run_dir) == "done" and run_dir_module.read_record(run_dir)["key"] == spec.key
    for content, why in ((text[:len(text) // 2], "is not valid JSON"),
                         (json.dumps({k: v for k, v in valid_record(spec).items() if k != "spec"}),
                          "lacks required field(s) spec"),
                         (json.dumps({k: v for k, v in valid_record(spec).items() if k != "metrics"}),
                          "lacks required field(s) metrics"),
                         (json.dumps({**valid_record(spec), "key": "0" * 16}), "not of its folder's key"),
                         ("[1, 2]", "not a JSON object")):
        (run_dir / "result.json").write_text(content)
        assert run_dir_status(run_dir) == "corrupt", content
        reason = run_dir_module.corrupt_reason(run_dir)
        assert reason.startswith(f"{run_dir / 'result.json'}: ") and why in reason, reason


def hold_lock(run_dir, seconds=60):
    """A separate process holding the run folder's lock (as a running job does)."""
    import subprocess
    import sys

    code = ("import sys, time; from benchmark.run import run_dir as rd\nwith rd.lock(sys.argv[1]):\n"
            "    print('locked', flush=True); time.sleep(float(sys.argv[2]))")
    proc = subprocess.Popen([sys.executable, "-c", code, str(run_dir), str(seconds)], stdout=subprocess.PIPE,
                            text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_locked_run_folder_is_left_alone_and_the_lock_dies_with_its_process(tmp_path, capsys):
    spec = tiny_spec("none")
    run_dir = tmp_path / spec.key
    holder = hold_lock(run_dir)
    try:
        info = run_dir_module.lock_holder(run_dir)
        assert info["pid"] == holder.pid and info["host"] and info["since"]
        assert run_dir_status(run_dir) == "running"
        before = sorted(p.name for p in run_dir.iterdir())
        assert execute(spec, run_dir) == "running elsewhere"  # before reading the data or writing anything
        assert sorted(p.name for p in run_dir.iterdir()) == before == ["lock"]
        assert f"is locked by pid {holder.pid}" in capsys.readouterr().out
    finally:
        holder.kill()  # SIGKILL: no clean-up in the holder; the kernel releases its flock
        holder.wait()
    assert run_dir_module.lock_holder(run_dir) is None and run_dir_status(run_dir) == "pending"
    with run_dir_module.lock(run_dir):  # free again
        assert json.loads((run_dir / "lock").read_text())["pid"] == os.getpid()


def test_a_corrupt_record_is_moved_aside_and_the_job_runs_again(data_env, exploding_registry, tmp_path):
    spec = tiny_spec("exploding")
    run_dir = tmp_path / spec.key
    run_dir.mkdir()
    (run_dir / "result.json").write_text('{"schema": 1, "key": "')  # torn write
    assert execute(spec, run_dir) == "failed"  # it ran again (and this method fails): never 'skipped'
    (moved,) = run_dir.glob("result.json.corrupt-*")
    assert moved.read_text() == '{"schema": 1, "key": "'
    assert not (run_dir / "result.json").exists() and run_dir_status(run_dir) == "failed"


@pytest.mark.slow
def test_two_processes_on_one_key_train_it_once(data_env, tmp_path):
    """Two processes started on one key at once: one trains, the other exits 'running elsewhere' without touching
    the folder, which ends with one valid record."""
    import subprocess
    import sys
    import time

    spec = tiny_spec("none", epochs=2)
    run_dir = tmp_path / spec.key
    code = ("import sys\nfrom pathlib import Path\nfrom benchmark.run.job import execute\n"
            "from tests.test_job import tiny_spec\n"
            "print('status:', execute(tiny_spec('none', epochs=2), Path(sys.argv[1])), flush=True)")
    repo = os.path.dirname(os.path.dirname(__file__))
    start = lambda: subprocess.Popen([sys.executable, "-c", code, str(run_dir)], cwd=repo,  # noqa: E731
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first = start()
    deadline = time.time() + 120
    while run_dir_module.lock_holder(run_dir) is None and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    second = start()
    outs = [p.communicate(timeout=600)[0] for p in (first, second)]
    assert "status: done" in outs[0], outs[0]
    assert "status: running elsewhere" in outs[1] and f"is locked by pid {first.pid}" in outs[1], outs[1]
    record = run_dir_module.read_record(run_dir)
    assert record["key"] == spec.key and len(record["history"]) == 2
    assert not list(run_dir.glob("result.json.corrupt-*")) and not (run_dir / "error.json").exists()


@pytest.mark.slow
def test_time_based_checkpoints_save_on_request_and_resume_to_the_same_record(data_env, tmp_path, monkeypatch):
    """checkpoint_every_s > 0: no save until it is due; a requested save (the preemption signal, deferred by
    JobBatch) happens at the end of the running epoch, then the deferred action runs; resuming from that state
    gives the uninterrupted run's record."""
    from benchmark.run import train

    spec = tiny_spec("oversample", epochs=3, save_checkpoint=False)
    assert execute(spec, tmp_path / "straight" / spec.key) == "done"
    calls = {"predict": 0}
    real_predict = train.predict

    def preempted():
        raise KeyboardInterrupt("requeued")

    def predict_and_signal_in_epoch_2(*args, **kwargs):
        calls["predict"] += 1
        if calls["predict"] == 2:  # epoch 2's validation: the signal arrives before the epoch ends
            train.Checkpointing.current.defer(preempted)
        return real_predict(*args, **kwargs)

    monkeypatch.setattr(train, "predict", predict_and_signal_in_epoch_2)
    run_dir = tmp_path / "resumed" / spec.key
    with pytest.raises(KeyboardInterrupt, match="requeued"):
        execute(spec, run_dir, resumable=True, checkpoint_every_s=3600)
    assert json.loads((run_dir / "state" / "progress.json").read_text())["epoch"] == 2  # saved once: epoch 2
    monkeypatch.setattr(train, "predict", real_predict)
    train.Checkpointing.release()
    assert execute(spec, run_dir, resumable=True, checkpoint_every_s=3600) == "done"
    straight = json.loads((tmp_path / "straight" / spec.key / "result.json").read_text())
    resumed = json.loads((run_dir / "result.json").read_text())
    assert resumed["metrics"] == straight["metrics"] and resumed["best_epoch"] == straight["best_epoch"]
    strip = lambda history: [{k: v for k, v in h.items() if k != "train_s"} for h in history]  # noqa: E731
    assert strip(resumed["history"]) == strip(straight["history"])
    assert resumed["checkpoints"] == {"every_s": 3600.0, "saves": 0, "save_s": 0.0, "bytes_written": 0}
    assert straight["checkpoints"] is None  # not resumable: no state saved


def hold_lock_as(run_dir, env, seconds):
    import subprocess
    import sys

    code = ("import sys, time; from benchmark.run import run_dir as rd\nwith rd.lock(sys.argv[1]):\n"
            "    print('locked', flush=True); time.sleep(float(sys.argv[2]))")
    proc = subprocess.Popen([sys.executable, "-c", code, str(run_dir), str(seconds)], stdout=subprocess.PIPE,
                            text=True, cwd=os.path.dirname(os.path.dirname(__file__)), env={**os.environ, **env})
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_ranks_follow_their_own_jobs_lock_and_a_requeued_job_waits_for_its_predecessor(tmp_path, monkeypatch):
    import time

    run_dir = tmp_path / "k"
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    # rank 0 of this SLURM job holds the lock: rank 1 runs the job with it
    holder = hold_lock_as(run_dir, {"SLURM_JOB_ID": "77", "SLURM_RESTART_COUNT": "1"}, 30)
    assert run_dir_module.lock_holder(run_dir)["owner"] == "slurm:77/1"
    assert run_dir_module.follow_lock(run_dir, timeout_s=5) == "run"
    holder.kill()
    holder.wait()
    # another SLURM job holds it: every rank of this one leaves the folder alone
    holder = hold_lock_as(run_dir, {"SLURM_JOB_ID": "78"}, 30)
    assert run_dir_module.follow_lock(run_dir, timeout_s=5) == "running elsewhere"
    with pytest.raises(run_dir_module.RunningElsewhere, match="SLURM job 78"):
        with run_dir_module.lock(run_dir):
            pass
    holder.kill()
    holder.wait()
    # the previous run of this same job (restart 0) is still being killed: the requeued run waits for it
    holder = hold_lock_as(run_dir, {"SLURM_JOB_ID": "77", "SLURM_RESTART_COUNT": "0"}, 3)
    started = time.monotonic()
    with run_dir_module.lock(run_dir):
        waited = time.monotonic() - started
        assert json.loads((run_dir / "lock").read_text())["owner"] == "slurm:77/1"  # this run holds it now
    holder.wait()
    assert waited >= 1.0, waited
