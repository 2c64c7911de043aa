"""Real submissions through submitit to a real SLURM cluster (the `slurm_cluster` fixture), with the `local-cpu`
profile: results, arrays with a parallelism limit, afterok dependencies, scancel, failures, multi-task jobs, requeue.

Every test uses its own fresh `tmp_path` folder for submitit's files: job ids restart at 1 on a new cluster, and a
reused folder would hand back an old `<id>_0_result.pkl`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
import submitit

from benchmark.execute.slurm.cluster import load_profile
from benchmark.execute.slurm.reachable import slurm_available

pytestmark = pytest.mark.slurm

# Jobs unpickle these functions in a fresh interpreter: ship them by value so that the job does not need to import
# this test module (and pytest) from the submitting process's working directory.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

JOB_WAIT_S = 90  # any single job here finishes in seconds; this only stops a broken cluster from hanging the suite


# ------------------------------------------------------------------------------------------------ job functions
def stamp(tag, sleep_s=0.0):
    """Run, sleeping `sleep_s`; report when, where and as which SLURM job."""
    start = time.time()
    time.sleep(sleep_s)
    return {"tag": tag, "start": start, "end": time.time(), "job_id": os.environ.get("SLURM_JOB_ID"),
            "array_task": os.environ.get("SLURM_ARRAY_TASK_ID"), "pid": os.getpid()}


def boom(message):
    raise ValueError(message)


def rank_info():
    env = submitit.JobEnvironment()
    return {"global_rank": env.global_rank, "local_rank": env.local_rank, "num_tasks": env.num_tasks,
            "num_nodes": env.num_nodes, "job_id": env.job_id, "pid": os.getpid()}


class EpochCounter(submitit.helpers.Checkpointable):
    """A stand-in for training: one 'epoch' per second, state saved atomically after each, resumes from it."""

    def __init__(self, state_file: str, epochs: int):
        self.state_file, self.epochs = state_file, epochs

    def __call__(self):
        state = Path(self.state_file)
        epoch = int(state.read_text()) if state.exists() else 0
        started_at = epoch
        with open(self.state_file + ".starts", "a") as log:
            log.write(f"{epoch} {os.environ.get('SLURM_RESTART_COUNT', '0')}\n")
        while epoch < self.epochs:
            time.sleep(1)
            epoch += 1
            tmp = state.with_suffix(".tmp")
            tmp.write_text(str(epoch))
            tmp.replace(state)
        return {"epochs": epoch, "started_at": started_at, "restarts": os.environ.get("SLURM_RESTART_COUNT", "0")}

    def checkpoint(self, *args, **kwargs):
        """Called by submitit on the pre-timeout/preemption signal (USR2), before it requeues the job."""
        with open(self.state_file + ".checkpoints", "a") as log:
            log.write(f"{Path(self.state_file).read_text() if Path(self.state_file).exists() else 0}\n")
        return super().checkpoint(*args, **kwargs)


# ------------------------------------------------------------------------------------------------ helpers
def executor(folder: Path, profile: str = "local-cpu", **overrides):
    ex = submitit.AutoExecutor(folder=folder / "%j")
    assert ex.cluster == "slurm"
    ex.update_parameters(**{**load_profile(profile).submitit_parameters(), **overrides})
    return ex


def wait_until(predicate, timeout_s: float = JOB_WAIT_S, every_s: float = 0.25, what: str = "condition"):
    end = time.time() + timeout_s
    while time.time() < end:
        if predicate():
            return
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def result(job, timeout_s: float = JOB_WAIT_S):
    wait_until(lambda: job.done(), timeout_s, what=f"job {job.job_id}")
    return job.result()


def squeue_state(job_id: str) -> str:
    out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T %r"], capture_output=True, text=True).stdout
    return out.strip()


def sacct(job_id: str, timeout_s: float = 30) -> dict:
    """Allocation line of a finished job from the accounting database: State, Start, End (epoch seconds). Waits
    for the end to be recorded: slurmctld reports to slurmdbd a moment after the job's result file appears."""
    def read():
        out = subprocess.run(["sacct", "-X", "-n", "-P", "-j", job_id, "-o", "JobID,State,Start,End"],
                             capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            jid, state, start, end = line.split("|")
            if jid == job_id:
                return {"State": state, "Start": epoch(start), "End": epoch(end)}
        return None

    def epoch(stamp):
        return time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S")) if stamp[:1].isdigit() else None

    line = {}

    def ended():
        nonlocal line
        line = read() or {}
        return line.get("End") is not None and line["State"] not in ("PENDING", "RUNNING", "REQUEUED")
    try:
        wait_until(ended, timeout_s, what=f"sacct to record the end of job {job_id}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last sacct line: {line}") from None
    return line


# ------------------------------------------------------------------------------------------------ tests
def test_cluster_is_detected(slurm_cluster):
    ok, reason = slurm_available()
    assert ok, reason
    assert reason.startswith("SLURM controller answers")


def test_function_result(slurm_cluster, tmp_path):
    job = executor(tmp_path).submit(stamp, "hello")
    out = result(job)
    assert out["tag"] == "hello"
    assert out["job_id"] == job.job_id  # ran as that SLURM job, not locally
    assert job.state == "COMPLETED" or job.done()


def test_job_array_runs_with_its_parallelism_limit(slurm_cluster, tmp_path):
    profile = load_profile("local-cpu")
    assert profile.array_parallelism == 2
    ex = executor(tmp_path)
    t0 = time.time()
    jobs = ex.map_array(stamp, [f"task{i}" for i in range(4)], [2.0] * 4)
    array_id = jobs[0].job_id.split("_")[0]
    assert [j.job_id for j in jobs] == [f"{array_id}_{i}" for i in range(4)]  # one SLURM array, one submission
    # The array's sbatch script lies in the folder of the array id (%j), its tasks' files in <id>_<task>/.
    assert "#SBATCH --array=0-3%2" in (tmp_path / array_id / f"{array_id}_submission.sh").read_text()
    outs = [result(j) for j in jobs]
    assert [o["tag"] for o in outs] == ["task0", "task1", "task2", "task3"]
    assert [o["array_task"] for o in outs] == ["0", "1", "2", "3"]
    # How many ran at once: at most the limit, and the limit was used (2 CPUs, 1 per task).
    events = sorted([(o["start"], 1) for o in outs] + [(o["end"], -1) for o in outs])
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    assert peak == 2, outs
    assert time.time() - t0 < 60


def test_afterok_dependency_is_honoured(slurm_cluster, tmp_path):
    first = executor(tmp_path).submit(stamp, "first", 4.0)
    deps = {"dependency": f"afterok:{first.job_id}"}
    second = executor(tmp_path, slurm_additional_parameters=deps).submit(stamp, "second")
    wait_until(lambda: first.state == "RUNNING" or first.done(), what="first job to start")
    if not first.done():
        assert squeue_state(second.job_id) == "PENDING Dependency"
    a, b = result(first), result(second)
    assert b["start"] >= a["end"], (a, b)  # started only after the first one ended
    acct_a, acct_b = sacct(first.job_id), sacct(second.job_id)
    assert acct_a["State"] == acct_b["State"] == "COMPLETED"
    assert acct_b["Start"] >= acct_a["End"]  # the scheduler's own record agrees


def test_afterok_on_a_failed_job_cancels_the_dependent(slurm_cluster, tmp_path):
    first = executor(tmp_path).submit(boom, "generator failed")
    deps = {"dependency": f"afterok:{first.job_id}"}
    second = executor(tmp_path, slurm_additional_parameters=deps).submit(stamp, "never")
    # DependencyParameters=kill_invalid_depend: cancelled, not pending forever (a real cluster may differ).
    wait_until(lambda: second.done(force_check=True), what="dependent job to be cancelled")
    assert second.state.startswith("CANCELLED")
    assert sacct(first.job_id)["State"] == "FAILED"
    assert not second.paths.result_pickle.exists()


def generator_like(i, sleep_s, fail_index, until_file=None, timeout_s=60.0):
    """Sleep `sleep_s`, or, with `until_file`, run until that file exists (at most `timeout_s`)."""
    start = time.time()
    if until_file is None:
        time.sleep(sleep_s)
    else:
        while not Path(until_file).exists() and time.time() - start < timeout_s:
            time.sleep(0.1)
    if i == fail_index:
        raise ValueError(f"task {i} fails")
    return {"i": i, "start": start, "end": time.time()}


def stamp_and_mark(tag, folder):
    """stamp(), and leave a file named `tag` in `folder` as it starts."""
    Path(folder, tag).touch()
    return stamp(tag)


def test_aftercorr_pairs_the_tasks_of_two_arrays(slurm_cluster, tmp_path):
    """Stage dependencies without one job per pair: task i of the second array waits for task i of the first only;
    a failed task cancels just its partner. The slow task 0 runs until c2 has started (event-driven, not a fixed
    sleep that a loaded machine may outlast): were c2 waiting for it, it would end only at its timeout, before c2."""
    marks = tmp_path / "marks"
    marks.mkdir()
    firsts = executor(tmp_path).map_array(generator_like, [0, 1, 2], [0.0, 0.2, 0.5], [1, 1, 1],
                                          [str(marks / "c2"), None, None])
    first_array = firsts[0].job_id.split("_")[0]
    deps = {"dependency": f"aftercorr:{first_array}"}
    seconds = executor(tmp_path, slurm_additional_parameters=deps).map_array(stamp_and_mark, ["c0", "c1", "c2"],
                                                                             [str(marks)] * 3)
    wait_until(lambda: all(j.done(force_check=True) for j in firsts + seconds), what="both arrays")
    assert [j.state for j in firsts] == ["COMPLETED", "FAILED", "COMPLETED"]
    assert seconds[1].state.startswith("CANCELLED")
    g0, g2 = firsts[0].result(), firsts[2].result()
    c0, c2 = seconds[0].result(), seconds[2].result()
    assert c0["start"] >= g0["end"] and c2["start"] >= g2["end"]
    assert c2["start"] < g0["end"]  # c2 did not wait for the slow task 0


def test_scancel_shows_as_cancelled(slurm_cluster, tmp_path):
    job = executor(tmp_path).submit(stamp, "long", 120.0)
    wait_until(lambda: job.state == "RUNNING", what="job to start")
    subprocess.run(["scancel", job.job_id], check=True)
    wait_until(lambda: job.done(force_check=True), timeout_s=30, what="cancelled job to be done")
    assert job.state.startswith("CANCELLED")
    assert sacct(job.job_id)["State"].startswith("CANCELLED")
    # job.result() waits up to submitit's 15 s for a result file a slow file system may still show, then says why.
    # The scheduler has recorded the job's end (sacct above) and a cancelled job writes none: no need to wait.
    job._results_timeout_s = 0
    with pytest.raises(submitit.core.utils.UncompletedJobError, match=r"has not produced any output \(state: CANCELLED"):
        job.result()


def test_raising_function_gives_failed_job_error_with_traceback(slurm_cluster, tmp_path):
    job = executor(tmp_path).submit(boom, "boom from the job")
    with pytest.raises(submitit.core.utils.FailedJobError) as err:
        result(job)
    message = str(err.value)
    assert "Traceback" in message and "ValueError: boom from the job" in message
    assert "in boom" in message  # the remote frame
    assert sacct(job.job_id)["State"] == "FAILED"


def test_two_tasks_per_node_give_two_ranks(slurm_cluster, tmp_path):
    profile = load_profile("local-cpu-ddp")
    assert profile.tasks_per_node == 2
    job = executor(tmp_path, "local-cpu-ddp").submit(rank_info)
    wait_until(lambda: job.done(), what="2-task job")
    outs = job.results()  # one result per task
    assert [o["global_rank"] for o in outs] == [0, 1]
    assert [o["local_rank"] for o in outs] == [0, 1]
    assert {o["num_tasks"] for o in outs} == {2} and {o["num_nodes"] for o in outs} == {1}
    assert outs[0]["pid"] != outs[1]["pid"]


def test_profile_rejected_by_sbatch_shows_its_message(slurm_cluster, tmp_path):
    ex = executor(tmp_path, slurm_partition="no-such-partition")
    with pytest.raises(submitit.core.utils.FailedJobError, match="invalid partition specified: no-such-partition"):
        ex.submit(stamp, "never")


def test_scontrol_requeue_resumes_from_the_last_saved_state(slurm_cluster, tmp_path):
    state = tmp_path / "state.txt"
    # The old run ignores SIGTERM (submitit) and is killed KillWait (5 s) later: leave it epochs to spare.
    job = executor(tmp_path).submit(EpochCounter(str(state), 15))
    wait_until(lambda: state.exists() and int(state.read_text()) >= 2, what="two epochs")
    subprocess.run(["scontrol", "requeue", job.job_id], check=True)
    out = result(job, timeout_s=120)
    assert out["epochs"] == 15
    assert out["restarts"] == "1" and out["started_at"] >= 2, out  # the second run resumed, not restarted
    starts = [line.split() for line in Path(str(state) + ".starts").read_text().splitlines()]
    assert starts[0] == ["0", "0"] and starts[-1][1] == "1"


def test_preemption_signal_checkpoints_and_requeues(slurm_cluster, tmp_path):
    """What SLURM does on preemption (and submitit on the time limit): SIGTERM + USR2. submitit calls
    checkpoint(), requeues the job itself, and the new run resumes."""
    state = tmp_path / "state.txt"
    job = executor(tmp_path).submit(EpochCounter(str(state), 8))
    wait_until(lambda: state.exists() and int(state.read_text()) >= 2, what="two epochs")
    job._interrupt()  # scancel --signal TERM, then --signal USR2: submitit's own test hook
    out = result(job, timeout_s=120)
    assert out["epochs"] == 8
    assert out["restarts"] == "1" and out["started_at"] >= 2, out
    assert Path(str(state) + ".checkpoints").read_text().strip()  # checkpoint() ran before the requeue
