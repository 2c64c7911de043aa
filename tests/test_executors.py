"""Executors without a cluster: cluster-profile choice, job states from files + SLURM states, what a submission
plans (dependencies, packing, retries), the manifest, JobBatch (checkpointable, picklable) and the CLI's errors."""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark import slurm_executor as se
from benchmark.batch import JobBatch, distributed_env
from benchmark.errors import UserError
from benchmark.grid import Grid, expand, generator_jobs
from tests.registry_helpers import register_entry

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def generative_registry(tmp_path, monkeypatch):
    register_entry(tmp_path, monkeypatch, "generator", "meangen",
                   "target: tests.test_slurm_executor:MeanGenerator\nversion: 1\nconfig: {kind: generative}\n")


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
    assert se.parse_profile_overrides(["gpu-small"]) == ("gpu-small", {})
    assert se.parse_profile_overrides(["gpu-small,collector=none", "generator=gpu-multi"]) == (
        "gpu-small", {"collector": "none", "generator": "gpu-multi"})
    with pytest.raises(UserError, match="Did you mean 'classifier'"):
        se.parse_profile_overrides(["clasifier=gpu-small"])
    with pytest.raises(UserError, match="two profiles for every stage"):
        se.parse_profile_overrides(["gpu-small", "local-cpu"])


def test_stage_profiles_precedence(real_cluster_conf, tmp_path, monkeypatch):
    # rare_sweep's stages: gpu-small for generator and classifier, cpu-collector for the collector
    chosen = se.stage_profiles("rare_sweep", None)
    assert {s: p.name for s, p in chosen.items()} == {"generator": "gpu-small", "classifier": "gpu-small",
                                                      "collector": "cpu-collector"}
    chosen = se.stage_profiles("rare_sweep", ["local-cpu", "classifier=local-cpu-ddp", "collector=none"])
    assert chosen["generator"].name == "local-cpu" and chosen["classifier"].tasks_per_node == 2
    assert chosen["collector"] is None
    # on the local test cluster every stage defaults to local-cpu (the grid's profiles name a real cluster's)
    local = tmp_path / "local.conf"
    local.write_text(f"# Single-node cluster {se.LOCAL_CLUSTER_MARK} (do not edit)\nClusterName=genmed\n")
    monkeypatch.setenv("SLURM_CONF", str(local))
    assert {p.name for p in se.stage_profiles("rare_sweep", None).values()} == {"local-cpu"}


def test_stage_without_profile_and_unknown_profile_are_clear_errors(real_cluster_conf, tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text("name: g\naxes: {dataset: [breastmnist], generator: [none], backbone: [resnet18]}\n")
    with pytest.raises(UserError, match=r"No cluster profile for the classifier stage.*--cluster-profile classifier"):
        se.stage_profiles(str(grid), None, ("classifier",))
    assert se.stage_profiles(str(grid), ["classifier=local-cpu"], ("classifier", "collector"))["collector"] is None
    with pytest.raises(UserError, match=r"--cluster-profile classifier=gpu-smal: Unknown cluster profile "
                                        r"'gpu-smal'. Did you mean 'gpu-small'"):
        se.stage_profiles(str(grid), ["classifier=gpu-smal"], ("classifier",))
    grid.write_text("name: g\naxes: {dataset: [breastmnist], generator: [none], backbone: [resnet18]}\n"
                    "stages: {classifer: gpu-small}\n")
    with pytest.raises(UserError, match="stages: Unknown stage 'classifer'. Did you mean 'classifier'"):
        se.stage_profiles(str(grid), None)


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
    status = se.classify(jobs, files, latest, states)
    assert status[gens[1].key] == "running" and status[gen_cls[1].key] == "pending"
    assert status[base[1].key] == "failed"        # cancelled without a result
    assert status[gens[0].key] == "failed" and status[gen_cls[0].key] == "blocked"
    assert status[base[0].key] == "done"
    # in a running packed task, a job that has not begun (no spec.json since its submission) waits its turn
    assert se.classify(jobs, files, latest, states, started=set())[gens[1].key] == "pending"
    # SLURM unreachable: submitted jobs without files are unknown, not failed
    assert se.classify(jobs, files, latest, {}, reachable=False)[base[1].key] == "unknown"
    # a job never submitted
    assert se.classify(jobs, files, {}, {})[gens[1].key] == "not submitted"


def test_grid_state_records_slurm_failures_as_error_json(generative_registry, tmp_path, monkeypatch):
    jobs = grid_jobs(generator=["none"], synthetic_ratio=[1], seed=[0])
    se.Manifest(tmp_path).append([{"key": jobs[0].key, "stage": "classifier", "job_id": "42_3",
                                   "submitted_at": "t"}])
    monkeypatch.setattr(se, "slurm_states", lambda ids: {"42_3": "TIMEOUT"})
    state = se.grid_state(jobs, tmp_path)
    assert state.status[jobs[0].key] == "failed"
    error = json.loads((tmp_path / "runs" / jobs[0].key / "error.json").read_text())
    assert "SLURM job 42_3 ended TIMEOUT without writing a result" in error["error"]
    assert error["source"] == "launcher" and str(tmp_path / "logs" / "42_3") in error["error"]
    assert "failed" in se.status_report(state) and "--retry-failed" in se.status_report(state)


# ------------------------------------------------------------------------------------------------ planning
def test_plan_waits_for_exactly_the_needed_generator_and_packs_within_groups(generative_registry):
    jobs = grid_jobs()  # 2 generator jobs (seeds), 4 generative classifier jobs, 2 baseline jobs
    gens = {j.seed: j for j in jobs if j.stage == "generator"}
    status = {j.key: "not submitted" for j in jobs}
    status[gens[1].key] = "done"
    plan = se.plan_submission(jobs, status, runs_per_task=2)
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
    plan = se.plan_submission(jobs, status)
    assert plan.generator_batches == [] and plan.classifier_groups == [(gen.key, [[cls]])]
    assert plan.skipped == {"running": 1, "pending": 1}
    # failed generator: plain submissions leave it (and the blocked classifier) alone; --retry-failed takes both
    status = {gen.key: "failed", cls.key: "blocked", base.key: "not submitted"}
    assert se.plan_submission(jobs, status).n_jobs == 1
    retry = se.plan_submission(jobs, status, retry_failed=True)
    assert retry.generator_batches == [[gen]] and retry.classifier_groups == [(gen.key, [[cls]])]
    assert retry.skipped == {"not submitted": 1}
    # --force resubmits done jobs, never queued ones
    status = {gen.key: "done", cls.key: "done", base.key: "running"}
    forced = se.plan_submission(jobs, status, force=True)
    assert forced.n_jobs == 2 and forced.skipped == {"running": 1}


def test_manifest_keeps_the_latest_line_per_key_and_survives_a_torn_line(tmp_path, capsys):
    manifest = se.Manifest(tmp_path)
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
    assert "24 jobs: 0 done, 0 running, 0 pending, 0 failed, 24 not submitted" in out.stdout
    assert "heavy: []" in out.stdout
