"""Executors without a cluster: cluster-profile choice, job states from files + SLURM states, what a submission
plans (dependencies, packing, retries), the manifest, JobBatch (checkpointable, picklable) and the CLI's errors."""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.core.errors import UserError
from benchmark.execute.slurm.follow import status_report
from benchmark.execute.slurm.manifest import Manifest
from benchmark.execute.slurm.profiles import LOCAL_CLUSTER_MARK, parse_profile_overrides, stage_profiles
from benchmark.execute.slurm.state import classify, grid_state
from benchmark.execute.slurm.submit import plan_submission
from benchmark.plan.grid import Grid, expand, generator_jobs
from benchmark.run.batch import JobBatch, distributed_env
from benchmark.run.run_dir import write_json_atomic
from tests.registry_helpers import register_entry

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def generative_registry(tmp_path, monkeypatch):
    register_entry(tmp_path, monkeypatch, "generator", "meangen",
                   "target: tests.test_slurm_grid:MeanGenerator\nversion: 1\nconfig: {kind: generative}\n")


@pytest.fixture
def real_cluster_conf(tmp_path, monkeypatch):
    """SLURM_CONF of some cluster that is not the local test cluster."""
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=site\n")
    monkeypatch.setenv("SLURM_CONF", str(conf))
    return conf


def grid_jobs(**axes):
    base = {"dataset": ["breastmnist"], "generator": ["meangen", "none"], "backbone": ["resnet18"],
            "rare_count": [10], "synthetic_ratio": [1, 2], "seed": [0, 1]}
    classifiers = expand(Grid("t", None, {**base, **axes}, [], [], {"epochs": 1}, "test"))
    return generator_jobs(classifiers) + classifiers


# ------------------------------------------------------------------------------------------------ profiles
def test_profile_overrides_parse_per_stage_and_for_all():
    assert parse_profile_overrides(["gpu-small"]) == ("gpu-small", {})
    assert parse_profile_overrides(["gpu-small,collector=none", "generator=gpu-multi"]) == (
        "gpu-small", {"collector": "none", "generator": "gpu-multi"})
    with pytest.raises(UserError, match="Did you mean 'classifier'"):
        parse_profile_overrides(["clasifier=gpu-small"])
    with pytest.raises(UserError, match="two profiles for every stage"):
        parse_profile_overrides(["gpu-small", "local-cpu"])


def test_stage_profiles_precedence(real_cluster_conf, tmp_path, monkeypatch):
    # rare_sweep's stages: gpu-small for generator and classifier, cpu-collector for the collector
    chosen = stage_profiles("rare_sweep", None)
    assert {s: p.name for s, p in chosen.items()} == {"generator": "gpu-small", "classifier": "gpu-small",
                                                      "collector": "cpu-collector"}
    chosen = stage_profiles("rare_sweep", ["local-cpu", "classifier=local-cpu-ddp", "collector=none"])
    assert chosen["generator"].name == "local-cpu" and chosen["classifier"].tasks_per_node == 2
    assert chosen["collector"] is None
    # on the local test cluster every stage defaults to local-cpu (the grid's profiles name a real cluster's)
    local = tmp_path / "local.conf"
    local.write_text(f"# Single-node cluster {LOCAL_CLUSTER_MARK} (do not edit)\nClusterName=genmed\n")
    monkeypatch.setenv("SLURM_CONF", str(local))
    assert {p.name for p in stage_profiles("rare_sweep", None).values()} == {"local-cpu"}


def test_stage_without_profile_and_unknown_profile_are_clear_errors(real_cluster_conf, tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text("name: g\naxes: {dataset: [breastmnist], generator: [none], backbone: [resnet18]}\n")
    with pytest.raises(UserError, match=r"No cluster profile for the classifier stage.*--cluster-profile classifier"):
        stage_profiles(str(grid), None, ("classifier",))
    assert stage_profiles(str(grid), ["classifier=local-cpu"], ("classifier", "collector"))["collector"] is None
    with pytest.raises(UserError, match=r"--cluster-profile classifier=gpu-smal: Unknown cluster profile "
                                        r"'gpu-smal'. Did you mean 'gpu-small'"):
        stage_profiles(str(grid), ["classifier=gpu-smal"], ("classifier",))
    grid.write_text("name: g\naxes: {dataset: [breastmnist], generator: [none], backbone: [resnet18]}\n"
                    "stages: {classifer: gpu-small}\n")
    with pytest.raises(UserError, match="stages: Unknown stage 'classifer'. Did you mean 'classifier'"):
        stage_profiles(str(grid), None)


# ------------------------------------------------------------------------------------------------ states
def test_classify_combines_files_and_slurm_states(generative_registry):
    jobs = grid_jobs(synthetic_ratio=[1], seed=[0, 1])
    gens = [j for j in jobs if j.stage == "generator"]
    gen_cls = {j.seed: j for j in jobs if j.stage == "classifier" and j.generator == "meangen"}
    base = {j.seed: j for j in jobs if j.generator == "none"}
    files = {j.key: "pending" for j in jobs}
    files[gens[0].key] = "failed"              # generator of seed 0 failed → its classifier is blocked
    files[base[0].key] = "done"
    latest = {gens[1].key: {"job_id": "7_0"}, gen_cls[1].key: {"job_id": "8"}, base[1].key: {"job_id": "9_1"},
              gens[0].key: {"job_id": "7_1"}, gen_cls[0].key: {"job_id": "10"}}
    states = {"7_0": "RUNNING", "8": "PENDING", "9_1": "CANCELLED", "7_1": "FAILED", "10": "CANCELLED"}
    status = classify(jobs, files, latest, states)
    assert status[gens[1].key] == "running" and status[gen_cls[1].key] == "pending"
    assert status[base[1].key] == "failed"        # cancelled without a result
    assert status[gens[0].key] == "failed" and status[gen_cls[0].key] == "blocked"
    assert status[base[0].key] == "done"
    # in a running packed task, a job that has not begun (no spec.json since its submission) waits its turn
    assert classify(jobs, files, latest, states, started=set())[gens[1].key] == "pending"
    # SLURM unreachable: submitted jobs without files are unknown, not failed
    assert classify(jobs, files, latest, {}, reachable=False)[base[1].key] == "unknown"
    # a job never submitted
    assert classify(jobs, files, {}, {})[gens[1].key] == "not submitted"


def test_grid_state_records_slurm_failures_as_error_json(generative_registry, tmp_path, monkeypatch):
    jobs = grid_jobs(generator=["none"], synthetic_ratio=[1], seed=[0])
    Manifest(tmp_path).append([{"key": jobs[0].key, "stage": "classifier", "job_id": "42_3",
                                "submitted_at": "t"}])
    monkeypatch.setattr("benchmark.execute.slurm.state.slurm_states", lambda ids: {"42_3": "TIMEOUT"})
    state = grid_state(jobs, tmp_path)
    assert state.status[jobs[0].key] == "failed"
    error = json.loads((tmp_path / "runs" / jobs[0].key / "error.json").read_text())
    assert "SLURM job 42_3 ended TIMEOUT without writing a result" in error["error"]
    assert error["source"] == "launcher" and str(tmp_path / "logs" / "42_3") in error["error"]
    assert "failed" in status_report(state) and "--retry-failed" in status_report(state)


# ------------------------------------------------------------------------------------------------ planning
def test_plan_waits_for_exactly_the_needed_generator_and_packs_within_groups(generative_registry):
    jobs = grid_jobs()  # 2 generator jobs (seeds), 4 generative classifier jobs, 2 baseline jobs
    gens = {j.seed: j for j in jobs if j.stage == "generator"}
    status = {j.key: "not submitted" for j in jobs}
    status[gens[1].key] = "done"
    plan = plan_submission(jobs, status, runs_per_task=2)
    assert [[s.key for s in b] for b in plan.generator_batches] == [[gens[0].key]]
    groups = dict(plan.classifier_groups)
    assert set(groups) == {gens[0].key, None}
    assert all(s.generator_key == gens[0].key for b in groups[gens[0].key] for s in b)
    assert [len(b) for b in groups[gens[0].key]] == [2]                # packed 2 per task, one generator per task
    assert sum(map(len, groups[None])) == 4 and [len(b) for b in groups[None]] == [2, 2]
    assert plan.n_jobs == 7 and plan.skipped == {"done": 1}


def test_plan_never_resubmits_queued_jobs_and_retries_only_failed(generative_registry):
    jobs = grid_jobs(synthetic_ratio=[1], seed=[0])
    gen = next(j for j in jobs if j.stage == "generator")
    cls = next(j for j in jobs if j.generator == "meangen" and j.stage == "classifier")
    base = next(j for j in jobs if j.generator == "none")
    # generator still running: its classifier waits for the job already queued; the running one is left alone
    status = {gen.key: "running", cls.key: "not submitted", base.key: "pending"}
    plan = plan_submission(jobs, status)
    assert plan.generator_batches == [] and plan.classifier_groups == [(gen.key, [[cls]])]
    assert plan.skipped == {"running": 1, "pending": 1}
    # failed generator: plain submissions leave it (and the blocked classifier) alone; --retry-failed takes both
    status = {gen.key: "failed", cls.key: "blocked", base.key: "not submitted"}
    assert plan_submission(jobs, status).n_jobs == 1
    retry = plan_submission(jobs, status, retry_failed=True)
    assert retry.generator_batches == [[gen]] and retry.classifier_groups == [(gen.key, [[cls]])]
    assert retry.skipped == {"not submitted": 1}
    # --force resubmits done jobs, never queued ones
    status = {gen.key: "done", cls.key: "done", base.key: "running"}
    forced = plan_submission(jobs, status, force=True)
    assert forced.n_jobs == 2 and forced.skipped == {"running": 1}


def test_manifest_keeps_the_latest_line_per_key_and_survives_a_torn_line(tmp_path, capsys):
    manifest = Manifest(tmp_path)
    manifest.append([{"key": "a", "job_id": "1_0"}, {"key": "b", "job_id": "1_1"}])
    manifest.append([{"key": "a", "job_id": "5"}])
    with open(manifest.path, "a") as fh:
        fh.write('{"key": "c", "job_')
    assert {k: e["job_id"] for k, e in manifest.latest().items()} == {"a": "5", "b": "1_1"}
    assert "not valid JSON" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ JobBatch
def test_job_batch_is_a_checkpointable_that_resubmits_itself(tmp_path):
    import submitit

    batch = JobBatch([{"key": "x"}], str(tmp_path), resumable=True, statuses={"x": "done"})
    assert isinstance(batch, submitit.helpers.Checkpointable)
    delayed = batch.checkpoint()
    assert delayed.function is batch and delayed.function.statuses == {"x": "done"}
    copy = pickle.loads(pickle.dumps(batch))
    assert copy.resumable and copy.statuses == {"x": "done"}
    assert batch() == {"x": "done"}  # a job finished before the requeue is not run again


def test_distributed_env_from_the_job_environment(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "1234")
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    ranks = [distributed_env("1234", r, r, 2, 1, lambda: "node1") for r in (0, 1)]
    assert ranks[0]["MASTER_PORT"] == ranks[1]["MASTER_PORT"] and 20000 <= int(ranks[0]["MASTER_PORT"]) < 40000
    assert ranks[1] == {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": ranks[0]["MASTER_PORT"], "RANK": "1",
                             "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    assert distributed_env("1234", 5, 1, 8, 2, lambda: "node1")["MASTER_ADDR"] == "node1"
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # a requeued job gets another port
    assert distributed_env("1234", 0, 0, 2, 1, lambda: "n")["MASTER_PORT"] != ranks[0]["MASTER_PORT"]


# ------------------------------------------------------------------------------------------------ CLI
def cli(*args, env=None):
    return subprocess.run([sys.executable, str(REPO / "launch" / "grid.py"), *args], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, **(env or {})}, timeout=120)


def test_cli_slurm_without_sbatch_and_unknown_profile_exit_2(real_data_dir, tmp_path):
    env = {"GENMED_DATA_DIR": str(real_data_dir), "PATH": str(Path(sys.executable).parent), "GENMED_RESULTS_DIR":
           str(tmp_path), "SLURM_CONF": str(tmp_path / "none.conf")}
    args = ["--grid", "rare_sweep", "--profile", "smoke", "--only", "seed=0", "--executor", "slurm"]
    out = cli(*args, env=env)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "error: --executor slurm: no SLURM here (sbatch not found on PATH)" in out.stderr
    assert "--executor local" in out.stderr
    out = cli(*args, "--cluster-profile", "gpu-smal", env=env)
    assert out.returncode == 2 and "Did you mean 'gpu-small'" in out.stderr, out.stderr
    assert not (tmp_path / "rare_sweep-smoke" / "submissions.jsonl").exists()


def test_cli_status_without_submissions_is_light(tmp_path):
    code = ("import sys, runpy; sys.argv = ['grid.py', '--grid', 'rare_sweep', '--profile', 'smoke', '--status', "
            f"'--results', {str(tmp_path)!r}]\ntry:\n    runpy.run_path({str(REPO / 'launch' / 'grid.py')!r}, "
            "run_name='__main__')\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "heavy = [m for m in ('torch', 'submitit', 'pandas') if m in sys.modules]\nprint('heavy:', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "nothing submitted for this grid yet" in out.stdout
    assert "30 jobs: 0 done, 0 running, 0 pending, 0 failed, 30 not submitted" in out.stdout
    assert "heavy: []" in out.stdout


# ------------------------------------------------------------------------------------------------ reliability
def _by_role(jobs):
    gen = next(j for j in jobs if j.stage == "generator")
    cls = next(j for j in jobs if j.stage == "classifier" and j.generator == "meangen")
    base = next(j for j in jobs if j.generator == "none")
    return gen, cls, base


def test_retry_failed_twice_while_the_generator_is_queued_submits_nothing_the_second_time(generative_registry):
    jobs = grid_jobs(synthetic_ratio=[1], seed=[0])
    gen, cls, base = _by_role(jobs)
    files = {gen.key: "failed", cls.key: "failed", base.key: "done"}  # old error.json files of the first attempt
    latest = {gen.key: {"job_id": "3_0"}, cls.key: {"job_id": "4_0", "dependency": "afterok:3_0"}}
    status = classify(jobs, files, latest, {"3_0": "FAILED", "4_0": "CANCELLED"})
    assert status[gen.key] == "failed" and status[cls.key] == "blocked"
    first = plan_submission(jobs, status, retry_failed=True)
    assert first.generator_batches == [[gen]] and first.classifier_groups == [(gen.key, [[cls]])]
    # resubmitted: both queued now, while their folders still hold the old error.json files
    latest = {gen.key: {"job_id": "9_0"}, cls.key: {"job_id": "10_0", "dependency": "afterok:9_0"}}
    status = classify(jobs, files, latest, {"9_0": "PENDING", "10_0": "PENDING"})
    assert status[gen.key] == "pending" and status[cls.key] == "pending"
    second = plan_submission(jobs, status, retry_failed=True)
    assert second.n_jobs == 0 and second.skipped == {"pending": 2, "done": 1}


def test_a_classifier_cancelled_for_its_dependency_is_blocked_and_retried_without_it(generative_registry,
                                                                                      tmp_path, monkeypatch):
    from benchmark.plan import table as plan_table

    jobs = grid_jobs(synthetic_ratio=[1], seed=[0])
    gen, cls, base = _by_role(jobs)
    runs = tmp_path / "runs"
    write_json_atomic(runs / gen.key / "result.json", {"schema": 1, "key": gen.key, "name": gen.name,
                                                       "stage": "generator", "spec": gen.to_dict()})
    Manifest(tmp_path).append([
        {"key": gen.key, "stage": "generator", "job_id": "5_0", "submitted_at": "2026-01-01T00:00:00+00:00"},
        {"key": cls.key, "stage": "classifier", "job_id": "6_0", "dependency": "afterok:5_0",
         "submitted_at": "2026-01-01T00:00:00+00:00"},
        {"key": base.key, "stage": "classifier", "job_id": "7_0", "submitted_at": "2026-01-01T00:00:00+00:00"}])
    # the generator's task finished its job, then was cancelled (packed with another one, or scancel): SLURM
    # cancelled the classifier that waited for it; the baseline ran and its record is there
    write_json_atomic(runs / base.key / "result.json", {"schema": 1, "key": base.key, "name": base.name,
                                                        "stage": "classifier", "spec": base.to_dict(),
                                                        "metrics": {}})
    asked = []
    monkeypatch.setattr("benchmark.execute.slurm.state.slurm_states", lambda ids: asked.append(set(ids)) or {
        "5_0": "CANCELLED", "6_0": "CANCELLED", "7_0": "COMPLETED"})
    state = grid_state(jobs, tmp_path)
    assert "5_0" in asked[0]  # the dependency's state is asked for
    assert state.status == {gen.key: "done", cls.key: "blocked", base.key: "done"}
    assert state.blocked_by == {cls.key: ("5_0", "CANCELLED")}
    error = json.loads((runs / cls.key / "error.json").read_text())
    assert error["blocked_by"] == {"slurm_job_id": "5_0", "slurm_state": "CANCELLED"}
    assert "because the job it waited for (afterok:5_0), SLURM job 5_0, ended CANCELLED" in error["error"]
    report = status_report(state)
    assert f"blocked  {cls.name}  by its dependency, SLURM job 5_0 (CANCELLED)" in report
    assert plan_table.statuses(jobs, runs)[cls.key] == "blocked"  # --dry-run and the local launcher see it too
    retry = plan_submission(jobs, state.status, retry_failed=True)
    assert retry.generator_batches == [] and retry.classifier_groups == [(None, [[cls]])]  # no dependency
    # later: SLURM has forgotten both jobs; the error.json still says blocked, with its dependency
    monkeypatch.setattr("benchmark.execute.slurm.state.slurm_states", lambda ids: {})
    later = grid_state(jobs, tmp_path)
    assert later.status[cls.key] == "blocked" and "SLURM job 5_0 (CANCELLED)" in status_report(later)


def test_corrupt_records_are_shown_with_their_path_and_resubmitted(generative_registry, tmp_path, monkeypatch):
    jobs = grid_jobs(generator=["none"], synthetic_ratio=[1], seed=[0])
    run_dir = tmp_path / "runs" / jobs[0].key
    run_dir.mkdir(parents=True)
    (run_dir / "result.json").write_text('{"key": "')
    monkeypatch.setattr("benchmark.execute.slurm.state.slurm_states", lambda ids: {})
    state = grid_state(jobs, tmp_path)
    assert state.status[jobs[0].key] == "corrupt"
    assert f"corrupt  {jobs[0].name}  {run_dir / 'result.json'}: is not valid JSON" in status_report(state)
    assert plan_submission(jobs, state.status).n_jobs == 1
    assert plan_submission(jobs, state.status, retry_failed=True).n_jobs == 1


def test_generators_are_never_packed_so_classifiers_wait_for_their_own_task_only(generative_registry):
    jobs = grid_jobs(seed=[0, 1, 2])
    plan = plan_submission(jobs, {j.key: "not submitted" for j in jobs}, runs_per_task=4)
    assert [len(b) for b in plan.generator_batches] == [1, 1, 1]
    assert sorted(k for k, _ in plan.classifier_groups if k) == sorted(b[0].key for b in plan.generator_batches)


def test_cli_argument_errors_exit_2_without_a_traceback(real_data_dir, tmp_path):
    env = {"GENMED_DATA_DIR": str(real_data_dir), "GENMED_RESULTS_DIR": str(tmp_path / "results"),
           "SLURM_CONF": str(tmp_path / "none.conf")}
    base = ["--grid", "rare_sweep", "--profile", "smoke", "--only", "seed=0"]
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    for args, said in (([*base, "--parallel", "0"], "argument --parallel: must be at least 1, got 0"),
                       ([*base, "--runs-per-task", "-1", "--dry-run"], "argument --runs-per-task: must be at least 1"),
                       ([*base, "--parallel", "two"], "expected an integer >= 1, got 'two'"),
                       ([*base, "--results", str(a_file)], f"--results: {a_file} is a file, not a folder"),
                       ([*base, "--results", str(a_file), "--dry-run"], f"{a_file} is a file"),
                       ([*base, "--dry-run", "--cluster-profile", "gpu-smal"], "Did you mean 'gpu-small'"),
                       ([*base, "--dry-run", "--cluster-profile", "classifier=nope"], "Unknown cluster profile 'nope'"),
                       ([*base, "--dry-run", "--executor", "local", "--cluster-profile", "local-cpu"],
                        "--cluster-profile and --wait need SLURM, but the executor is local")):
        out = cli(*args, env=env)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        assert said in out.stderr and "Traceback" not in out.stderr, (args, out.stderr)
    assert not (tmp_path / "results").exists()
    ok = cli(*base, "--dry-run", "--cluster-profile", "local-cpu", env=env)  # a known profile: fine
    assert ok.returncode == 0, ok.stderr


def one_job_grid(tmp_path, epochs):
    """A one-job grid file and its spec, keyed as the CLI keys it: call with GENMED_DATA_DIR set (data_env), or the
    spec stays unresolved and its key is not the one the CLI's run folder gets."""
    from benchmark.plan.grid import expand, load_grid

    path = tmp_path / "one.yaml"
    path.write_text(json.dumps({"name": "one", "axes": {
        "dataset": ["breastmnist"], "rare_count": [10], "generator": ["none"], "backbone": ["resnet18"],
        "seed": [0]}, "training": {"epochs": epochs, "batch_size": 64, "save_checkpoint": False, "track": False}}))
    (spec,) = expand(load_grid(str(path)))
    assert spec.is_resolved, "one_job_grid needs GENMED_DATA_DIR (the data_env fixture)"
    return str(path), spec


@pytest.mark.slow
def test_cli_a_truncated_record_is_corrupt_in_dry_run_and_rerun_by_the_next_run(data_env, tmp_path):
    real_data_dir = data_env
    grid, spec = one_job_grid(tmp_path, epochs=1)
    env = {"GENMED_DATA_DIR": str(real_data_dir), "GENMED_RESULTS_DIR": str(tmp_path / "results")}
    run_dir = tmp_path / "results" / "one" / "runs" / spec.key
    run_dir.mkdir(parents=True)
    (run_dir / "result.json").write_text('{"schema": 1, "key": "' + spec.key + '", "metr')
    dry = cli("--grid", grid, "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert f"{spec.key}  corrupt" in dry.stdout
    assert "1 classifier jobs: 0 done, 0 pending, 0 failed, 1 corrupt" in dry.stdout
    assert f"corrupt  {spec.name}  {run_dir / 'result.json'}: is not valid JSON" in dry.stdout
    run = cli("--grid", grid, "--executor", "debug", env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "moved aside to result.json.corrupt-" in run.stdout + run.stderr
    (moved,) = run_dir.glob("result.json.corrupt-*")
    assert moved.read_text().endswith('"metr')  # kept as it was, never deleted
    assert json.loads((run_dir / "result.json").read_text())["key"] == spec.key
    assert "1 classifier jobs: 1 done" in cli("--grid", grid, "--dry-run", env=env).stdout


@pytest.mark.slow
def test_cli_sigterm_to_the_local_launcher_stops_its_workers(data_env, tmp_path):
    """kill <launcher pid> (SIGTERM, as a closed terminal or a batch system sends) ends the submitit workers and
    their training as Ctrl-C does: no process of the run is left, nothing is recorded as done or failed."""
    import signal
    import time

    import psutil

    grid, spec = one_job_grid(tmp_path, epochs=500)
    env = {**os.environ, "GENMED_DATA_DIR": str(data_env), "GENMED_RESULTS_DIR": str(tmp_path / "results")}
    run_dir = tmp_path / "results" / "one" / "runs" / spec.key
    launcher = subprocess.Popen([sys.executable, str(REPO / "launch" / "grid.py"), "--grid", grid, "--executor",
                                 "local", "--parallel", "1"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        seen = set()
        deadline = time.time() + 180
        while time.time() < deadline and launcher.poll() is None:
            seen |= {p.pid for p in psutil.Process(launcher.pid).children(recursive=True)}
            if (run_dir / "spec.json").exists() and len(seen) >= 2:  # controller + task, and the job has begun
                break
            time.sleep(0.2)
        # (a failure here kills the run first: its workers hold the pipes, so communicate() alone would wait for them)
        started = (run_dir / "spec.json").exists() and launcher.poll() is None
        if not started:
            os.killpg(launcher.pid, signal.SIGKILL)
        assert started, launcher.communicate(timeout=60)
        seen |= {p.pid for p in psutil.Process(launcher.pid).children(recursive=True)}
        assert run_dir_holder_pid(run_dir) in seen  # a worker trains it
        launcher.send_signal(signal.SIGTERM)
        out, err = launcher.communicate(timeout=60)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    assert launcher.returncode == 128 + signal.SIGTERM, (out, err)
    assert "stopped by SIGTERM" in err, err
    # the launcher ends without a traceback of its own (the interrupted submitit controller prints its
    # KeyboardInterrupt, as on Ctrl-C)
    assert "launch/grid.py" not in err and "benchmark/execute/local.py" not in err, err
    alive = [pid for pid in seen if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert not alive, alive
    assert not (run_dir / "result.json").exists() and not (run_dir / "error.json").exists()
    from benchmark.run import run_dir as rd

    assert rd.lock_holder(run_dir) is None and rd.status(run_dir) == "pending"


def run_dir_holder_pid(run_dir):
    from benchmark.run import run_dir as rd

    holder = rd.lock_holder(run_dir)
    return holder.get("pid") if holder else None


def test_dry_run_cost_estimate_from_label_counts_and_earlier_records(data_env, tmp_path):
    from benchmark.plan.cost import estimate

    classifiers = expand(Grid("c", None, {"dataset": ["breastmnist"], "generator": ["none", "oversample"],
                                          "backbone": ["resnet18"], "rare_count": [10], "synthetic_ratio": [2]},
                              [], [], {"epochs": 2}, "test"))
    none, oversample = sorted(classifiers, key=lambda s: s.generator)
    # no records: the label counts (train [147, 399]: rare class 0 keeps 10; oversample ×2 adds 20), val 78, test 156
    (line, total) = estimate([none, oversample], tmp_path / "runs")
    assert line.startswith("resnet18 @28px: 2 jobs, 4 epochs, 1,676 training images (+624 evaluated)"), line
    hours = (1676 + 624 / 3) / 100.0 / 3600
    assert f"cpu ~{hours:,.1f} h at ~100 images/s (docs/benchmarks.md" in line
    assert total.startswith(f"total: cpu (docs) ~{hours:,.1f} device-hours of training")
    # an earlier record of the same cell and backbone: its training-set size and its measured throughput
    write_json_atomic(tmp_path / "runs" / none.key / "result.json", {
        "schema": 1, "key": none.key, "name": none.name, "stage": "classifier", "spec": none.to_dict(), "metrics": {},
        "counts": {"n_train_real": 500, "n_train_synthetic": 0}, "timings": {"train_images_per_s": 2.0},
        "compute": {"device": "cuda:0"}})
    (line, total) = estimate([none], tmp_path / "runs")
    hours = (2 * 500 + (2 * 78 + 156) / 3) / 2.0 / 3600
    assert line == (f"resnet18 @28px: 1 jobs, 2 epochs, 1,000 training images (+312 evaluated); cuda {hours:,.1f} h "
                    "at 2 images/s (median of 1 record(s))"), line
    assert total.startswith(f"total: cuda ~{hours:,.1f} device-hours")


def test_cost_estimate_counts_a_shared_device_k_times(data_env, tmp_path):
    """A record of a job that shared its GPU with 3 others (jobs_per_device 4) measured a quarter of the device:
    the estimate uses 4 × its rate."""
    from benchmark.plan.cost import estimate

    (none,) = expand(Grid("c", None, {"dataset": ["breastmnist"], "generator": ["none"], "backbone": ["resnet18"],
                                      "rare_count": [10]}, [], [], {"epochs": 2}, "test"))
    write_json_atomic(tmp_path / "runs" / none.key / "result.json", {
        "schema": 1, "key": none.key, "name": none.name, "stage": "classifier", "spec": none.to_dict(), "metrics": {},
        "counts": {"n_train_real": 500, "n_train_synthetic": 0}, "timings": {"train_images_per_s": 2.0},
        "compute": {"device": "cuda:0", "jobs_per_device": 4}})
    (line, _) = estimate([none], tmp_path / "runs")
    hours = (2 * 500 + (2 * 78 + 156) / 3) / 8.0 / 3600
    assert line.endswith(f"cuda {hours:,.1f} h at 8 images/s (median of 1 record(s))"), line
