"""Submitting a grid to SLURM: what to submit (plan_submission) and the sbatch calls (Submission, submit): one job
array per stage, classifier arrays that wait (afterok) for exactly the generator jobs they need, and a collector job
after everything, each recorded in the manifest as soon as sbatch returns. submitit is imported only to submit."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from benchmark import REPO_ROOT
from benchmark.core.errors import UserError
from benchmark.execute.packing import pack
from benchmark.execute.slurm.manifest import COLLECTOR_KEY, Manifest, slurm_command
from benchmark.execute.slurm.state import grid_state
from benchmark.run.run_dir import now_iso, results_umask

REPO = REPO_ROOT


# ------------------------------------------------------------------------------------------------ planning
@dataclass
class SubmissionPlan:
    generator_batches: list[list] = field(default_factory=list)
    classifier_groups: list[tuple[str | None, list[list]]] = field(default_factory=list)  # (generator key, batches)
    skipped: Counter = field(default_factory=Counter)

    @property
    def n_jobs(self) -> int:
        return sum(map(len, self.generator_batches)) + sum(len(b) for _, bs in self.classifier_groups for b in bs)


def plan_submission(jobs: list, status: dict[str, str], runs_per_task: int = 1, force: bool = False,
                    retry_failed: bool = False) -> SubmissionPlan:
    """What to submit: jobs not submitted yet and corrupt ones (with ``retry_failed``: failed, blocked and corrupt
    ones only; with ``force`` also done ones), never one that is queued or running. A classifier job needs its
    generator job done, queued or submitted with it; classifier jobs are grouped by the generator job they wait
    for, then packed ``runs_per_task`` to an array task. Generator jobs are never packed (one per array task of one
    array): each classifier array waits (afterok) for exactly its own generator's task, so a generator task that is
    cancelled or times out blocks only the classifiers of its own generator. A classifier blocked by a failed
    dependency whose generator did finish is resubmitted without a dependency."""
    plan = SubmissionPlan()
    wanted = {"failed", "blocked", "corrupt"} if retry_failed else {"not submitted", "corrupt"}
    if force:
        wanted = wanted | {"done"}
    todo = {}
    for spec in jobs:
        st = status[spec.key]
        if st in wanted:
            todo[spec.key] = spec
        else:
            plan.skipped[st] += 1
    by_key = {spec.key: spec for spec in jobs}
    for spec in list(todo.values()):  # a generator the chosen classifier jobs need, neither done nor queued
        generator_key = spec.generator_key
        if generator_key and generator_key not in todo and status.get(generator_key) not in (
                "done", "running", "pending") and generator_key in by_key:
            todo[generator_key] = by_key[generator_key]
            plan.skipped[status[generator_key]] -= 1
    plan.skipped = +plan.skipped
    generators = [s for s in todo.values() if s.stage == "generator"]
    plan.generator_batches = pack(generators, 1)
    groups: dict[str | None, list] = {}
    for spec in todo.values():
        if spec.stage == "classifier":
            generator_key = spec.generator_key
            waits = generator_key if generator_key and (generator_key in todo or status.get(generator_key) in (
                "running", "pending")) else None
            groups.setdefault(waits, []).append(spec)
    plan.classifier_groups = [(key, pack(specs, max(1, runs_per_task))) for key, specs in groups.items()]
    return plan


# ------------------------------------------------------------------------------------------------ submitting
@dataclass
class Submission:
    out_dir: Path
    label: str
    profiles: dict  # stage → ClusterProfile (collector: None for no collector)
    force: bool = False
    arrays: list = field(default_factory=list)  # SLURM job ids submitted so far
    n_jobs: int = 0

    @property
    def logs_dir(self) -> Path:
        return self.out_dir / "logs"

    def array(self, stage: str, batches: list[list], dependency: str | None = None) -> list[str]:
        """One job array (one sbatch), its manifest lines written as soon as sbatch returns. Returns task ids."""
        from benchmark.run.batch import JobBatch

        every_s, per_device = self.profiles[stage].checkpoint_every_s, self.profiles[stage].jobs_per_device
        tasks = [JobBatch([s.to_dict() for s in batch], str(self.out_dir / "runs"), self.force, resumable=True,
                          checkpoint_every_s=every_s, jobs_per_device=per_device) for batch in batches]
        jobs = self._sbatch(stage, dependency, lambda ex: ex.submit_array(tasks), len(tasks))
        self.arrays.append(jobs[0].job_id.split("_")[0])
        self.n_jobs += sum(map(len, batches))
        now = now_iso()
        Manifest(self.out_dir).append([
            {"key": spec.key, "stage": stage, "name": spec.name, "job_id": job.job_id, "task_jobs": len(batch),
             "profile": self.profiles[stage].name, "dependency": dependency, "submitted_at": now}
            for job, batch in zip(jobs, batches) for spec in batch])
        return [job.job_id for job in jobs]

    def collector(self, command: list[str], dependency: str | None) -> str:
        job = self._sbatch("collector", dependency, lambda ex: ex.submit(run_collector, command, str(REPO)), 1)
        Manifest(self.out_dir).append([{"key": COLLECTOR_KEY, "stage": "collector", "name": " ".join(command[1:]),
                                        "job_id": job.job_id, "profile": self.profiles["collector"].name,
                                        "dependency": dependency, "submitted_at": now_iso()}])
        return job.job_id

    def _sbatch(self, stage, dependency, submit, n_tasks):
        import submitit

        profile = self.profiles[stage]
        executor = submitit.AutoExecutor(folder=str(self.logs_dir / "%j"), cluster="slurm")
        params = profile.submitit_parameters()
        # the job's files are created private (or group-readable) as the launcher's are: $GENMED_RESULTS_MODE
        params["slurm_setup"] = [f"umask {results_umask():04o}", *params.get("slurm_setup", [])]
        additional = dict(params.pop("slurm_additional_parameters", None) or {})
        if dependency:
            # kill_on_invalid_dep: a dependent job whose generator failed is cancelled, never left pending forever
            additional.update(dependency=dependency, kill_on_invalid_dep="yes")
        executor.update_parameters(**params, name=f"genmed-{self.label}-{stage}",
                                   **({"slurm_additional_parameters": additional} if additional else {}))
        try:
            return submit(executor)
        except Exception as exc:  # noqa: BLE001 - submitit raises FailedJobError (sbatch's stderr) or OSError
            said = [ln.strip() for ln in str(exc).splitlines() if "error" in ln.lower() and ln.strip()]
            message = "\n    ".join(dict.fromkeys(said)) or str(exc).strip()
            before = (f"\nSubmitted before this: {self.n_jobs} job(s) in SLURM job(s) {', '.join(self.arrays)}, "
                      f"recorded in {Manifest(self.out_dir).path}; they run." if self.arrays
                      else "\nNothing was submitted.")
            raise UserError(f"sbatch rejected the {stage} stage ({n_tasks} task(s)) with cluster profile "
                            f"{profile.summary()}:\n    {message}\nFix the profile (sinfo -s lists partitions and "
                            f"limits; see slurm/README.md) or choose another with --cluster-profile {stage}=NAME, "
                            f"then submit again: nothing recorded is submitted twice.{before}") from None


def run_collector(command: list[str], cwd: str) -> int:
    """The collector job: ``launch/collect.py`` for the grid, run after all its other jobs."""
    done = subprocess.run(command, cwd=cwd, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with code {done.returncode}")
    return done.returncode


def collector_command(grid_ref: str, profile: str | None, results_root: Path) -> list[str]:
    grid_arg = str(Path(grid_ref).resolve()) if str(grid_ref).endswith((".yaml", ".yml")) else grid_ref
    return [sys.executable, str(REPO / "launch" / "collect.py"), "--grid", grid_arg,
            *(["--profile", profile] if profile else []), "--results", str(Path(results_root).resolve())]


def submit(jobs: list, out_dir: Path, label: str, profiles: dict, collect: list[str] | None,
           runs_per_task: int = 1, force: bool = False, retry_failed: bool = False) -> tuple[SubmissionPlan, list]:
    """Submit what the plan says, stage by stage, under the manifest's lock. Returns (plan, summary lines)."""
    manifest = Manifest(out_dir)
    lines = []
    with manifest.lock():
        state = grid_state(jobs, out_dir)
        if not state.reachable:
            raise UserError(f"{state.note}. Nothing was submitted.")
        plan = plan_submission(jobs, state.status, runs_per_task, force, retry_failed)
        sub = Submission(Path(out_dir), label, profiles, force)
        new: dict[str, str] = {}  # generator key → the SLURM job (array task) it runs as
        if plan.generator_batches:
            ids = sub.array("generator", plan.generator_batches)
            new.update({s.key: i for i, batch in zip(ids, plan.generator_batches) for s in batch})
            lines.append(f"generator stage: {sub.n_jobs} job(s) in {len(ids)} array task(s), SLURM job "
                         f"{sub.arrays[-1]} (profile {profiles['generator'].name})")
        first, waiting = len(sub.arrays), 0
        for generator_key, batches in plan.classifier_groups:
            dependency = None
            if generator_key:
                dependency = f"afterok:{new.get(generator_key) or state.latest[generator_key]['job_id']}"
                waiting += sum(map(len, batches))
            sub.array("classifier", batches, dependency)
        if plan.classifier_groups:
            ids = sub.arrays[first:]
            n = sum(len(b) for _, bs in plan.classifier_groups for b in bs)
            shown = ", ".join(ids[:6]) + (", …" if len(ids) > 6 else "")
            lines.append(f"classifier stage: {n} job(s), {waiting} of them waiting for their generator job, in "
                         f"{len(ids)} array(s), SLURM job(s) {shown} (profile {profiles['classifier'].name})")
        if sub.arrays and collect and profiles.get("collector"):
            after = set(sub.arrays) | {j.split("_")[0] for j in state.active_job_ids()}
            old = state.collector()
            if old and old[1] == "PENDING":  # it would run before the new jobs end: the new collector covers them
                slurm_command(["scancel", old[0]])
                after.discard(old[0])
            job_id = sub.collector(collect, "afterany:" + ":".join(sorted(after, key=int)))
            lines.append(f"collector: SLURM job {job_id}, after all of them (profile {profiles['collector'].name})")
    return plan, lines

