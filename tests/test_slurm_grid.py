"""`launch/grid.py --executor slurm` against a real SLURM cluster (the `slurm_cluster` fixture), on the real
BreastMNIST: a staged grid end to end with its dependencies, scancel → failed → --retry-failed, scontrol requeue →
resume from the epoch state, and a 2-task DDP job on gloo. Tiny jobs (resnet18 with its standard stem, 28 px, a few
epochs; the DDP job with resnet18 itself, as its tolerance was measured).

The generator stage uses `MeanGenerator` below (registered through GENMED_REGISTRY_PATH): a trivial but real
generator that the SLURM jobs import from this module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from benchmark.generators.base import Generator

REPO = Path(__file__).resolve().parent.parent
# |test AUROC(2 processes) − test AUROC(1 process)| allowed for the DDP job below; see docs/benchmarks.md
# ("SLURM: 2-process DDP vs 1 process") for the measurements behind it.
DDP_AUROC_TOLERANCE = 0.03


class MeanGenerator(Generator):
    """A trivial but real generator: the per-class mean training image plus Gaussian pixel noise."""

    def fit(self, images, labels, seed, out_dir=None):
        self.means = np.stack([images[labels == c].mean(0) if (labels == c).any() else np.zeros(self.image_shape)
                               for c in range(self.num_classes)]).astype(np.float32)
        return {"fit_images": int(len(labels))}

    def sample(self, n, class_index, seed):
        noise = np.random.default_rng(seed).normal(0.0, float(self.config.get("noise", 20.0)), (n, *self.image_shape))
        return np.clip(np.rint(self.means[class_index][None] + noise), 0, 255).astype(np.uint8)

    def save(self, folder):
        from safetensors.numpy import save_file

        Path(folder).mkdir(parents=True, exist_ok=True)
        save_file({"means": self.means}, str(Path(folder) / "means.safetensors"))

    def load(self, folder):
        from safetensors.numpy import load_file

        self.means = load_file(str(Path(folder) / "means.safetensors"))["means"]


# ------------------------------------------------------------------------------------------------ helpers
FAST = "resnet18_fast"  # resnet18 with its standard stem at 28 px (no small-input adaptation): ≈ 4× cheaper epochs


@pytest.fixture(scope="session")
def extractors_dir(tmp_path_factory) -> Path:
    """One cache of the in-domain audit extractor for the session's generator jobs (trained by the first, ~15 s;
    each test's own results folder would train it again)."""
    return tmp_path_factory.mktemp("extractors")


@pytest.fixture
def env(slurm_cluster, real_data_dir, extractors_dir, tmp_path):
    folder = tmp_path / "reg" / "generators"
    folder.mkdir(parents=True)
    (folder / "meangen.yaml").write_text(
        "target: tests.test_slurm_grid:MeanGenerator\nversion: 1\nconfig: {kind: generative, noise: 20.0}\n")
    (tmp_path / "reg" / "backbones").mkdir()
    (tmp_path / "reg" / "backbones" / f"{FAST}.yaml").write_text(
        f"include: {REPO / 'registry' / 'backbones' / 'resnet18.yaml'}\nconfig: {{small_input: {{below: 0}}}}\n")
    return {**os.environ, "GENMED_DATA_DIR": str(real_data_dir), "GENMED_REGISTRY_PATH": str(tmp_path / "reg"),
            "GENMED_RESULTS_DIR": str(tmp_path / "results"), "SLURM_CONF": slurm_cluster.conf,
            "GENMED_SLURM_POLL_S": "1", "GENMED_EXTRACTORS_DIR": str(extractors_dir)}


def write_grid(tmp_path, name, generator=("none",), rare_count=(10,), epochs=1, backbone=FAST, **training) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps({  # JSON is YAML
        "name": name, "axes": {"dataset": ["breastmnist"], "rare_count": list(rare_count),
                               "generator": list(generator), "synthetic_ratio": [1], "backbone": [backbone],
                               "seed": [0]},
        "training": {"epochs": epochs, "batch_size": 64, "save_checkpoint": False, **training}}))
    return str(path)


def cli(*args, env, timeout=300):
    return subprocess.run([sys.executable, str(REPO / "launch" / "grid.py"), *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=timeout, stdin=subprocess.DEVNULL)


def ok(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def manifest(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "submissions.jsonl").read_text().splitlines()]


def records(out_dir: Path) -> dict[str, dict]:
    """result.json of every job, by stage + generator name."""
    found = {}
    for path in (out_dir / "runs").glob("*/result.json"):
        record = json.loads(path.read_text())
        found[f"{record['stage']}:{record['spec']['generator']}"] = record
    return found


def wait_until(predicate, timeout_s=120.0, what="condition"):
    end = time.time() + timeout_s
    while time.time() < end:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def squeue_state(job_id: str) -> str:
    return subprocess.run(["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"], capture_output=True,
                          text=True).stdout.strip()


def sacct_times(job_id: str) -> tuple[float, float]:
    """(Start, End) of a finished job from the accounting database (waits for slurmdbd to record the end)."""
    found = {}

    def ended():
        out = subprocess.run(["sacct", "-X", "-n", "-P", "-j", job_id, "-o", "JobID,Start,End"], capture_output=True,
                             text=True).stdout
        for line in out.splitlines():
            jid, start, end = line.split("|")
            if jid == job_id and end[:1].isdigit():
                found["times"] = tuple(datetime.fromisoformat(t).timestamp() for t in (start, end))
        return "times" in found

    wait_until(ended, 30, f"sacct to record the end of job {job_id}")
    return found["times"]


# ------------------------------------------------------------------------------------------------ tests
pytestmark = pytest.mark.slurm


def test_staged_grid_end_to_end_with_dependencies(env, tmp_path):
    """Generator stage → the generative classifier waits for exactly its generator job; the baseline does not wait;
    a collector after all; a rejected stage leaves a manifest entry for what was submitted; nothing twice."""
    grid = write_grid(tmp_path, "staged", generator=["meangen", "none"])
    out_dir = tmp_path / "results" / "staged"
    bad = tmp_path / "bad-partition.yaml"
    bad.write_text("include: local-cpu\npartition: no-such-partition\n")

    rejected = cli("--grid", grid, "--executor", "slurm", "--cluster-profile", f"classifier={bad}", env=env)
    assert rejected.returncode == 2, rejected.stdout + rejected.stderr
    assert "sbatch rejected the classifier stage" in rejected.stderr
    assert "invalid partition specified: no-such-partition" in rejected.stderr  # sbatch's own message
    assert f"bad-partition ({bad}): partition=no-such-partition" in rejected.stderr  # the profile behind it
    assert "Submitted before this: 1 job(s)" in rejected.stderr
    (generator_line,) = manifest(out_dir)  # the generator array went in, and is on record
    assert generator_line["stage"] == "generator" and generator_line["profile"] == "local-cpu"

    submitted = ok(cli("--grid", grid, "--executor", "slurm", env=env))  # local cluster: every stage local-cpu
    assert "submitted 2 job(s); left alone: 1 " in submitted  # the generator job (pending or running)
    assert "1 of them waiting for their generator job" in submitted and "collector: SLURM job" in submitted
    assert "submitted 0 job(s)" in ok(cli("--grid", grid, "--executor", "slurm", env=env))  # nothing twice

    final = ok(cli("--grid", grid, "--status", "--wait", env=env, timeout=400))
    assert "generator       1 jobs: 1 done" in final and "classifier      2 jobs: 2 done" in final
    assert "COMPLETED" in final.splitlines()[-1]  # the collector
    assert len(manifest(out_dir)) == 4  # generator, 2 classifiers, collector: each submitted once
    by_stage = {}
    for entry in manifest(out_dir):
        by_stage.setdefault(entry["stage"], []).append(entry)
    generative = next(e for e in by_stage["classifier"] if "meangen" in e["name"])
    baseline = next(e for e in by_stage["classifier"] if "none" in e["name"])
    assert generative["dependency"] == f"afterok:{generator_line['job_id']}"
    assert baseline["dependency"] is None
    assert by_stage["collector"][0]["dependency"].startswith("afterany:")

    # The scheduler's record and the jobs' own timestamps agree: the generative classifier started only after its
    # generator job ended; the baseline did not wait for it.
    gen_start, gen_end = sacct_times(generator_line["job_id"])
    cls_start, _ = sacct_times(generative["job_id"])
    base_start, _ = sacct_times(baseline["job_id"])
    assert cls_start >= gen_end, (gen_start, gen_end, cls_start)
    assert base_start < gen_end
    found = records(out_dir)
    assert found["classifier:meangen"]["timings"]["started_at"] >= found["generator:meangen"]["timings"]["finished_at"]
    assert found["classifier:meangen"]["counts"]["n_train_synthetic"] == 10  # ratio 1 × 10 rare images
    assert found["classifier:meangen"]["environment"]["slurm_job_id"] == generative["job_id"]
    assert len((out_dir / "records.csv").read_text().strip().splitlines()) == 1 + 2  # the collector ran
    assert "submitted 0 job(s); left alone: 3 done" in ok(cli("--grid", grid, "--executor", "slurm", env=env))


def test_scancel_shows_failed_and_retry_failed_completes_it(env, tmp_path):
    grid = write_grid(tmp_path, "cancelled", epochs=2)
    out_dir = tmp_path / "results" / "cancelled"
    args = ("--grid", grid, "--executor", "slurm", "--cluster-profile", "collector=none")
    ok(cli(*args, env=env))
    (entry,) = manifest(out_dir)
    wait_until(lambda: squeue_state(entry["job_id"]) == "RUNNING", what="the job to start")
    subprocess.run(["scancel", entry["job_id"]], check=True)
    wait_until(lambda: squeue_state(entry["job_id"]) in ("CANCELLED", ""), 60, "the job to be cancelled")

    status = ok(cli("--grid", grid, "--status", env=env))
    assert "1 jobs: 0 done, 0 running, 0 pending, 1 failed" in status and "--retry-failed" in status
    error = json.loads((out_dir / "runs" / entry["key"] / "error.json").read_text())
    assert f"SLURM job {entry['job_id']} ended CANCELLED without writing a result" in error["error"]
    assert "submitted 0 job(s); left alone: 1 failed" in ok(cli(*args, env=env))  # plain runs leave it alone

    assert "submitted 1 job(s)" in ok(cli(*args, "--retry-failed", env=env))  # resubmitted, then --cancel
    second = manifest(out_dir)[-1]["job_id"]
    assert f"cancelled SLURM job(s) {second}" in ok(cli("--grid", grid, "--cancel", env=env))
    wait_until(lambda: squeue_state(second) in ("CANCELLED", ""), 60, "--cancel to take effect")
    assert "1 failed" in ok(cli("--grid", grid, "--status", env=env))

    retried = ok(cli(*args, "--retry-failed", "--wait", env=env, timeout=300))
    assert "submitted 1 job(s)" in retried and "1 jobs: 1 done" in retried
    assert [e["key"] for e in manifest(out_dir)] == [entry["key"]] * 3
    assert (out_dir / "runs" / entry["key"] / "result.json").is_file()
    assert not (out_dir / "runs" / entry["key"] / "error.json").exists()


def test_scontrol_requeue_resumes_from_the_epoch_state(env, tmp_path):
    """A running job requeued by the scheduler continues from its last epoch state and ends with the same record
    as an uninterrupted run of the same job (bit for bit: same code, same CPU, one thread each)."""
    grid = write_grid(tmp_path, "requeued", epochs=12)  # the old run trains on for KillWait (5 s) after it
    every_epoch = tmp_path / "every-epoch.yaml"  # scontrol requeue sends no USR2: resume from the last epoch saved
    every_epoch.write_text("include: local-cpu\ncheckpoint_every_s: 0\n")
    args = ("--grid", grid, "--executor", "slurm", "--cluster-profile", f"local-cpu,classifier={every_epoch}",
            "--cluster-profile", "collector=none")
    reference_env = {**env, "GENMED_RESULTS_DIR": str(tmp_path / "reference")}
    ok(cli(*args, env=reference_env))  # the uninterrupted run, beside it on the second CPU
    ok(cli(*args, env=env))
    out_dir = tmp_path / "results" / "requeued"
    (entry,) = manifest(out_dir)
    progress = out_dir / "runs" / entry["key"] / "state" / "progress.json"

    def saved_an_epoch():
        try:
            return json.loads(progress.read_text())["epoch"] >= 1
        except (OSError, ValueError):
            return False

    wait_until(saved_an_epoch, 180, "the first epoch state")
    subprocess.run(["scontrol", "requeue", entry["job_id"]], check=True)
    ok(cli("--grid", grid, "--status", "--wait", env=env, timeout=300))
    ok(cli("--grid", grid, "--status", "--wait", env=reference_env, timeout=300))

    log = (out_dir / "logs" / entry["job_id"] / f"{entry['job_id']}_0_log.out").read_text()
    assert f"resuming {FAST}[breastmnist,rare=10,none,seed=0]" in log  # the second run started from the state
    resumed = records(out_dir)["classifier:none"]
    straight = records(tmp_path / "reference" / "requeued")["classifier:none"]
    assert resumed["metrics"] == straight["metrics"]
    strip = lambda history: [{k: v for k, v in h.items() if k != "train_s"} for h in history]  # noqa: E731
    assert strip(resumed["history"]) == strip(straight["history"]) and len(resumed["history"]) == 12
    assert resumed["best_epoch"] == straight["best_epoch"]
    assert not (out_dir / "runs" / entry["key"] / "state").exists()


def test_preemption_saves_the_running_epoch_then_requeues_and_resumes(env, tmp_path):
    """checkpoint_every_s 600 (the default): no state is saved during this short job, except on the preemption
    signal (SIGTERM + USR2, as SLURM sends): the running epoch ends, its state is saved, submitit requeues, and the
    resumed job ends with the uninterrupted run's record."""
    grid = write_grid(tmp_path, "preempted", epochs=16)
    args = ("--grid", grid, "--executor", "slurm", "--cluster-profile", "collector=none")
    reference_env = {**env, "GENMED_RESULTS_DIR": str(tmp_path / "reference")}
    ok(cli(*args, env=reference_env))
    ok(cli(*args, env=env))
    out_dir = tmp_path / "results" / "preempted"
    (entry,) = manifest(out_dir)
    board = out_dir / "runs" / entry["key"] / "tensorboard"

    def first_epoch_logged():  # TensorBoard events are flushed after every epoch
        return board.is_dir() and any(b"train/loss" in p.read_bytes() for p in board.rglob("*") if p.is_file())

    wait_until(first_epoch_logged, 300, "the first epoch")
    for signal_name in ("SIGTERM", "USR2"):
        subprocess.run(["scancel", entry["job_id"], "--signal", signal_name], check=True)
    ok(cli("--grid", grid, "--status", "--wait", env=env, timeout=400))
    ok(cli("--grid", grid, "--status", "--wait", env=reference_env, timeout=400))
    log = (out_dir / "logs" / entry["job_id"] / f"{entry['job_id']}_0_log.out").read_text()
    assert "saving the training state at the end of this epoch, then requeueing" in log, log[-3000:]
    assert f"resuming {FAST}[breastmnist,rare=10,none,seed=0]" in log, log[-3000:]
    resumed = records(out_dir)["classifier:none"]
    straight = records(tmp_path / "reference" / "preempted")["classifier:none"]
    assert resumed["metrics"] == straight["metrics"] and resumed["best_epoch"] == straight["best_epoch"]
    assert resumed["checkpoints"]["every_s"] == 600 and resumed["checkpoints"]["saves"] == 0  # after the requeue
    assert straight["checkpoints"]["saves"] == 0


def test_two_task_job_trains_with_ddp_on_gloo(env, tmp_path):
    """tasks_per_node: 2 → one job, two processes, one process group (gloo); one record, written once, with test
    metrics over the whole test set exactly once, close to the 1-process job's (DDP_AUROC_TOLERANCE)."""
    grid = write_grid(tmp_path, "ddp", rare_count=("all",), epochs=3, backbone="resnet18",
                      augment={"hflip": False, "rotate_degrees": 0.0, "brightness": 0.0, "contrast": 0.0})
    ddp_env = {**env, "GENMED_RESULTS_DIR": str(tmp_path / "ddp")}
    ok(cli("--grid", grid, "--executor", "slurm", "--cluster-profile", "local-cpu-ddp,collector=none", env=ddp_env))
    ok(cli("--grid", grid, "--executor", "slurm", "--cluster-profile", "collector=none", env=env))
    ok(cli("--grid", grid, "--status", "--wait", env=ddp_env, timeout=300))
    ok(cli("--grid", grid, "--status", "--wait", env=env, timeout=300))

    (entry,) = manifest(tmp_path / "ddp" / "ddp")
    two = records(tmp_path / "ddp" / "ddp")["classifier:none"]
    one = records(tmp_path / "results" / "ddp")["classifier:none"]
    assert two["compute"]["num_processes"] == 2 and one["compute"]["num_processes"] == 1
    assert two["compute"]["device"].startswith("cpu")
    for split, n in (("val", 78), ("test", 156)):  # every sample once: no duplicates from the uneven last batch
        assert two["metrics"][split]["n"] == n
        assert sum(map(sum, two["metrics"][split]["confusion_matrix"])) == n
    logs = tmp_path / "ddp" / "ddp" / "logs" / entry["job_id"]
    assert {p.name for p in logs.glob("*_log.out")} == {f"{entry['job_id']}_0_log.out", f"{entry['job_id']}_1_log.out"}
    assert len(list((tmp_path / "ddp" / "ddp" / "runs").glob("*/result.json"))) == 1
    assert abs(two["metrics"]["test"]["auroc"] - one["metrics"]["test"]["auroc"]) <= DDP_AUROC_TOLERANCE, (
        two["metrics"]["test"]["auroc"], one["metrics"]["test"]["auroc"])


# ------------------------------------------------------------------------------------------------ reliability
def slurm(*args):
    subprocess.run(list(args), check=True, capture_output=True, text=True)


def base_id(job_id: str) -> str:
    return job_id.split("_")[0]


def held_generators(tmp_path) -> str:
    """--cluster-profile value: generator jobs wait an hour before they may start (sbatch --begin), so that a test
    knows them pending; `scontrol update JobId=… StartTime=now` lets one go."""
    path = tmp_path / "held.yaml"
    path.write_text('include: local-cpu\nadditional: {begin: "now+3600"}\n')
    return f"generator={path},collector=none"


def test_retry_failed_twice_while_the_generator_is_queued_submits_nothing_the_second_time(env, tmp_path):
    """A cancelled generator: it is failed, its classifier (cancelled by SLURM for the dependency) blocked with the
    dependency named; --retry-failed resubmits both; a second --retry-failed while they are queued submits
    nothing, and --status shows them pending, not blocked, although the old error.json files are still there."""
    grid = write_grid(tmp_path, "retried", generator=["meangen"])
    out_dir = tmp_path / "results" / "retried"
    args = ("--grid", grid, "--executor", "slurm", "--cluster-profile", held_generators(tmp_path))
    ok(cli(*args, env=env))
    gen, cls = sorted(manifest(out_dir), key=lambda e: e["stage"] != "generator")
    assert cls["dependency"] == f"afterok:{gen['job_id']}"  # the generator's own array task
    slurm("scancel", base_id(gen["job_id"]))
    wait_until(lambda: squeue_state(cls["job_id"]) in ("CANCELLED", ""), 60, "SLURM to cancel the classifier")

    status = ok(cli("--grid", grid, "--status", env=env))
    assert "generator       1 jobs: 0 done, 0 running, 0 pending, 1 failed" in status, status
    assert f"by its dependency, SLURM job {gen['job_id']} (CANCELLED)" in status, status
    error = json.loads((out_dir / "runs" / cls["key"] / "error.json").read_text())
    assert error["blocked_by"] == {"slurm_job_id": gen["job_id"], "slurm_state": "CANCELLED"}

    first = ok(cli(*args, "--retry-failed", env=env))
    assert "submitted 2 job(s)" in first and "1 of them waiting for their generator job" in first, first
    new_gen = [e for e in manifest(out_dir) if e["stage"] == "generator"][-1]
    assert squeue_state(new_gen["job_id"]) == "PENDING"
    second = ok(cli(*args, "--retry-failed", env=env))
    assert "submitted 0 job(s); left alone: 2 pending" in second, second
    status = ok(cli("--grid", grid, "--status", env=env))
    assert "generator       1 jobs: 0 done, 0 running, 1 pending, 0 failed\n" in status, status
    assert "classifier      1 jobs: 0 done, 0 running, 1 pending, 0 failed\n" in status, status  # not blocked
    assert len(manifest(out_dir)) == 4  # two submissions of two jobs, nothing more
    slurm("scontrol", "update", f"JobId={base_id(new_gen['job_id'])}", "StartTime=now")
    final = ok(cli("--grid", grid, "--status", "--wait", env=env, timeout=400))
    assert "generator       1 jobs: 1 done" in final and "classifier      1 jobs: 1 done" in final, final


def test_a_classifier_blocked_by_a_cancelled_generator_task_reruns_without_it(env, tmp_path):
    """The generator job finished its work, but its SLURM task was cancelled (a pack cut short, scancel): SLURM
    cancels the classifier waiting for it. It is blocked, naming the dependency and its state, and --retry-failed
    resubmits it alone, without that dependency."""
    grid = write_grid(tmp_path, "depcancel", generator=["meangen"])
    out_dir = tmp_path / "results" / "depcancel"
    args = ("--grid", grid, "--executor", "slurm", "--cluster-profile", held_generators(tmp_path))
    ok(cli(*args, env=env))
    gen, cls = sorted(manifest(out_dir), key=lambda e: e["stage"] != "generator")
    code = ("import sys\nfrom pathlib import Path\nfrom benchmark.plan.grid import expand, generator_jobs, load_grid\n"
            "from benchmark.run.job import execute\n(g,) = generator_jobs(expand(load_grid(sys.argv[1])))\n"
            "print(execute(g, Path(sys.argv[2]) / g.key))")
    done = subprocess.run([sys.executable, "-c", code, grid, str(out_dir / "runs")], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=300)
    assert done.stdout.strip().endswith("done"), done.stdout + done.stderr  # the generator's work is done
    slurm("scancel", base_id(gen["job_id"]))
    wait_until(lambda: squeue_state(cls["job_id"]) in ("CANCELLED", ""), 60, "SLURM to cancel the classifier")

    status = ok(cli("--grid", grid, "--status", env=env))
    assert "generator       1 jobs: 1 done" in status, status
    assert "classifier      1 jobs: 0 done, 0 running, 0 pending, 0 failed, 1 blocked" in status, status
    assert f"by its dependency, SLURM job {gen['job_id']} (CANCELLED)" in status, status
    dry = ok(cli("--grid", grid, "--dry-run", env=env))
    assert f"{cls['key']}  blocked" in dry

    retried = ok(cli(*args, "--retry-failed", env=env))
    assert "submitted 1 job(s)" in retried and "0 of them waiting" in retried, retried
    assert manifest(out_dir)[-1]["key"] == cls["key"] and manifest(out_dir)[-1]["dependency"] is None
    final = ok(cli("--grid", grid, "--status", "--wait", env=env, timeout=400))
    assert "classifier      1 jobs: 1 done" in final, final
    assert not (out_dir / "runs" / cls["key"] / "error.json").exists()


def test_two_submitted_jobs_on_one_key_train_it_once(env, tmp_path, monkeypatch):
    """Two SLURM jobs started on one key at once (a duplicate submission from another checkout, a requeue race):
    one trains, the other exits 'running elsewhere' without touching the folder, which ends with one record."""
    import submitit

    from benchmark.execute.slurm.cluster import load_profile
    from benchmark.plan.grid import expand, load_grid
    from benchmark.run.batch import JobBatch

    for key in ("GENMED_DATA_DIR", "GENMED_REGISTRY_PATH"):
        monkeypatch.setenv(key, env[key])  # expand() resolves the spec on this data; the jobs inherit it
    grid = write_grid(tmp_path, "twice", epochs=3)
    (spec,) = expand(load_grid(grid))
    runs = tmp_path / "results" / "twice" / "runs"
    executor = submitit.AutoExecutor(folder=str(tmp_path / "logs" / "%j"), cluster="slurm")
    executor.update_parameters(**load_profile("local-cpu").submitit_parameters())
    jobs = executor.submit_array([JobBatch([spec.to_dict()], str(runs), resumable=True) for _ in range(2)])
    outcomes = sorted(job.result()[spec.key] for job in jobs)
    assert outcomes == ["done", "running elsewhere"], outcomes
    logs = "".join(p.read_text() for p in (tmp_path / "logs").rglob("*_log.out"))
    assert f"running elsewhere: {spec.name} ({spec.key}) is locked by pid" in logs and "SLURM job" in logs
    record = json.loads((runs / spec.key / "result.json").read_text())
    assert record["key"] == spec.key and len(record["history"]) == 3


def test_a_truncated_record_is_reported_with_its_path_and_rerun(env, tmp_path):
    grid = write_grid(tmp_path, "truncated")
    out_dir = tmp_path / "results" / "truncated"
    args = ("--grid", grid, "--executor", "slurm", "--cluster-profile", "collector=none")
    ok(cli(*args, "--wait", env=env, timeout=300))
    (entry,) = manifest(out_dir)
    result = out_dir / "runs" / entry["key"] / "result.json"
    result.write_text(result.read_text()[:100])
    status = ok(cli("--grid", grid, "--status", env=env))
    assert "1 corrupt" in status and f"{result}: is not valid JSON" in status, status
    rerun = ok(cli(*args, "--wait", env=env, timeout=300))
    assert "submitted 1 job(s)" in rerun and "1 jobs: 1 done" in rerun, rerun
    assert json.loads(result.read_text())["key"] == entry["key"]
    assert len(list(result.parent.glob("result.json.corrupt-*"))) == 1
