"""Bounded CPU threads: the machine's core-slot registry shared by local workers (two processes, a killed one, an
unsafe folder), the local worker task that sizes its threads from it, the CPU figures a record carries, and the
cost estimate that leaves out records that ran oversubscribed."""

import functools
import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from benchmark.core.errors import UserError
from benchmark.plan.grid import Grid, expand
from benchmark.run import threads
from benchmark.run.run_dir import write_json_atomic

# a claimant in its own process: claims, prints what it got as JSON, holds the slots until its stdin closes
CLAIMANT = """
import json, sys
from benchmark.run import threads
claim = threads.claim_cores(int(sys.argv[3]), int(sys.argv[2]), sys.argv[1])
print(json.dumps({"pid": __import__("os").getpid(), "slots": claim.slots, "threads": claim.threads,
                  "warning": claim.warning()}), flush=True)
sys.stdin.read()
"""


def start_claimant(folder, total, wanted):
    process = subprocess.Popen([sys.executable, "-c", CLAIMANT, str(folder), str(total), str(wanted)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    assert line, process.communicate(timeout=30)
    return process, json.loads(line)


def end(process):
    if process.poll() is None:
        process.stdin.close()
        process.wait(timeout=30)


@pytest.fixture
def registry(tmp_path, monkeypatch):
    folder = tmp_path / "cores"
    monkeypatch.setenv(threads.REGISTRY_ENV, str(folder))
    monkeypatch.setenv(threads.SLOTS_ENV, "2")
    return folder


def test_two_processes_get_disjoint_slots_and_the_second_fewer_threads(registry):
    first, a = start_claimant(registry, 2, 1)
    try:
        second, b = start_claimant(registry, 2, 2)  # wants both: only one is left
        try:
            assert a["slots"] == [0] and a["threads"] == 1 and a["warning"] is None
            assert b["slots"] == [1] and b["threads"] == 1  # fewer than the 2 it wanted
            assert f"pid {a['pid']}" in b["warning"] and "--parallel" in b["warning"]
            assert threads.THREADS_ENV in b["warning"]
            third, c = start_claimant(registry, 2, 1)  # none left: 1 thread, and a loud warning
            end(third)
            assert c["slots"] == [] and c["threads"] == 1 and "none" in c["warning"]
            state = threads.free_slots(2, registry)
            assert state.slots == [] and sorted(state.busy) == sorted(f"pid {x['pid']} on {socket.gethostname()}" for x in (a, b))
        finally:
            end(second)
        assert threads.free_slots(2, registry).slots == [1]  # the second ended: its slot is free, the first's not
    finally:
        end(first)


def test_a_killed_claimants_slots_are_free_again(registry):
    holder, got = start_claimant(registry, 2, 2)
    try:
        assert got["slots"] == [0, 1]
        with threads.claim_cores(2, 2, registry) as blocked:
            assert blocked.slots == [] and blocked.threads == 1
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
        with threads.claim_cores(2, 2, registry) as claim:
            assert claim.slots == [0, 1] and claim.threads == 2 and claim.warning() is None
        assert threads.free_slots(2, registry).slots == [0, 1]  # released by the context
    finally:
        end(holder)


def test_local_worker_takes_its_threads_from_the_free_slots(registry, tmp_path, capsys):
    """A real submitit local worker wanting 2 threads while this process holds one of the 2 slots: it runs its
    task with 1 torch thread (what a job's apply_thread_limit reads), and the launcher warned on its terminal."""
    import submitit

    from benchmark.execute.local import ClaimingTask, check_cores

    with threads.claim_cores(1, 2, registry):
        assert check_cores(1) == 2  # the launcher's wish for one worker on 2 cores
        assert "only 1 of this machine's 2 core slots are free" in capsys.readouterr().err
        probe = "import os; print(*(os.environ.get(k) for k in %r))" % [
            threads.THREADS_ENV, "OMP_NUM_THREADS", threads.WORKERS_ENV, threads.CLAIMED_ENV]
        executor = submitit.LocalExecutor(folder=str(tmp_path / "logs"))
        job = executor.submit(ClaimingTask(functools.partial(subprocess.check_output, [sys.executable, "-c", probe],
                                                             text=True), wanted=2, workers=3))
        assert job.result().split() == ["1", "1", "3", "1"]
        assert "got only 1 of the 2 it wanted" in job.stderr()
    assert threads.free_slots(2, registry).slots == [0, 1]  # the worker's slot went with it


def test_the_registry_off_and_bad_settings(registry, tmp_path, monkeypatch):
    with threads.claim_cores(3, 0) as claim:  # GENMED_CORE_SLOTS=0: no registry, the wish as is
        assert claim.threads == 3 and claim.warning() is None
    monkeypatch.setenv(threads.SLOTS_ENV, "two")
    with pytest.raises(UserError, match="GENMED_CORE_SLOTS='two'"):
        threads.claim_cores(1)
    monkeypatch.setenv(threads.THREADS_ENV, "0")
    with pytest.raises(UserError, match="GENMED_TORCH_THREADS='0'"):
        threads.requested_threads(2)
    # a planted symlink at a slot path is refused and left alone, its target untouched
    registry.mkdir(exist_ok=True)
    target = tmp_path / "precious"
    target.write_text("keep")
    (registry / "core-0.lock").symlink_to(target)
    with pytest.raises(UserError, match="core-0.lock"):
        threads.claim_cores(1, 2, registry)
    assert target.read_text() == "keep" and (registry / "core-0.lock").is_symlink()


def test_a_default_registry_folder_writable_by_others_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv(threads.REGISTRY_ENV, raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert threads.registry_dir() == tmp_path / "genmed-cores"
    assert (tmp_path / "genmed-cores").stat().st_mode & 0o777 == 0o700
    (tmp_path / "genmed-cores").chmod(0o777)
    with pytest.raises(UserError, match="writable by other users"):
        threads.registry_dir()


def test_cpu_usage_records_threads_workers_and_load(monkeypatch):
    import torch

    before = torch.get_num_threads()
    monkeypatch.setenv(threads.THREADS_ENV, "1")
    monkeypatch.setenv(threads.WORKERS_ENV, "2")
    monkeypatch.setenv(threads.CLAIMED_ENV, "1")
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    try:
        assert threads.apply_thread_limit() == 1
        usage = threads.cpu_usage()
    finally:
        torch.set_num_threads(before)
    assert {k: usage[k] for k in ("torch_threads", "workers", "core_slots")} == {
        "torch_threads": 1, "workers": 2, "core_slots": 1}
    assert usage["cores"] == len(os.sched_getaffinity(0)) and usage["machine_cores"] == os.cpu_count()
    assert 0 <= usage["load_start"] and 0 <= usage["load_end"]


def write_record(runs, spec, key, rate, cpu):
    """A classifier record in the harness's format (tests/test_executors.py's cost fixtures), under its own key."""
    write_json_atomic(runs / key / "result.json", {
        "schema": 1, "key": key, "name": spec.name, "stage": "classifier", "spec": spec.to_dict(), "metrics": {},
        "counts": {"n_train_real": 500, "n_train_synthetic": 0},
        "timings": {"train_images_per_s": rate, **({"cpu": cpu} if cpu else {})}, "compute": {"device": "cpu"}})


def test_cost_estimate_leaves_out_records_that_ran_oversubscribed(data_env, tmp_path):
    from benchmark.plan.cost import estimate, oversubscribed

    (none,) = expand(Grid("c", None, {"dataset": ["breastmnist"], "generator": ["none"], "backbone": ["resnet18"],
                                      "rare_count": [10]}, [], [], {"epochs": 2}, "test"))
    runs = tmp_path / "runs"
    calm = {"torch_threads": 1, "workers": 2, "cores": 2, "machine_cores": 2, "core_slots": 1,
            "load_start": 2.1, "load_end": 2.0}
    # what issue 21 measured: two launchers' workers on 2 cores, the machine's load twice its cores, 7.6 images/s
    busy = {**calm, "torch_threads": 2, "workers": 1, "core_slots": 0, "load_start": 4.1, "load_end": 4.3}
    crowded = {**calm, "torch_threads": 2, "workers": 2, "core_slots": None}  # 2 × 2 threads on 2 cores
    assert oversubscribed({"timings": {"cpu": calm}, "compute": {"device": "cpu"}}) is None
    assert oversubscribed({"timings": {"cpu": busy}}) == "no free core slot (other workers held them all)"
    assert oversubscribed({"timings": {"cpu": {**busy, "core_slots": 1}}}) == "load 4.3 on 2 cores"
    assert oversubscribed({"timings": {"cpu": crowded}}) == "2 threads × 2 workers on 2 cores"
    assert oversubscribed({"timings": {"cpu": busy}, "compute": {"device": "cuda:0"}}) is None  # GPU: not judged
    write_record(runs, none, none.key, 50.0, calm)
    write_record(runs, none, "b" * 16, 7.6, busy)
    write_record(runs, none, "c" * 16, 9.0, crowded)
    write_record(runs, none, "d" * 16, 40.0, None)  # an older record without the figures: still used
    (line, _) = estimate([none], runs)
    hours = (2 * 500 + (2 * 78 + 156) / 3) / 45.0 / 3600  # the median of 50 and 40, the oversubscribed left out
    assert line.endswith(f"cpu {hours:,.1f} h at 45 images/s (median of 2 record(s)); 2 record(s) that ran "
                         "oversubscribed ignored (e.g. no free core slot (other workers held them all))"), line
    # only oversubscribed records: the docs' CPU figure, and the line says why
    for key in (none.key, "d" * 16):
        (runs / key / "result.json").unlink()
    (line, total) = estimate([none], runs)
    assert "cpu ~" in line and "at ~100 images/s (docs/benchmarks.md" in line, line
    assert line.endswith("; 2 record(s) that ran oversubscribed ignored (e.g. no free core slot (other workers "
                         "held them all))"), line
    assert total.startswith("total: cpu (docs)")


def test_a_local_workers_requeue_claims_again():
    """submitit's pre-timeout requeue resubmits the wrapped batch wrapped again, so the new worker claims too."""
    from benchmark.execute.local import ClaimingTask
    from benchmark.run.batch import JobBatch

    batch = JobBatch([], "runs", statuses={"a" * 16: "done"})
    delayed = ClaimingTask(batch, wanted=2, workers=1).checkpoint()
    assert isinstance(delayed.function, ClaimingTask) and delayed.function.wanted == 2
    assert delayed.function.task is batch
