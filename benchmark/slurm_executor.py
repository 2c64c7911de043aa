"""SLURM execution of a grid through submitit: job arrays per stage, classifier arrays that wait (afterok) for exactly
the generator jobs they need, a collector job after everything, and the submission manifest
(``results/<grid label>/submissions.jsonl``) behind ``--status``, ``--wait``, ``--cancel`` and ``--retry-failed``.

States come from the run folders first (benchmark.run_dir: a valid ``result.json`` = done, a corrupt one = corrupt,
a held lock = running, ``error.json`` = failed) and from SLURM second (``squeue``, then ``sacct`` for jobs the
controller has forgotten); a job queued or running in SLURM under its latest submission is pending or running
whatever old files say. A job whose SLURM job ended without a result (cancelled, killed at the time limit, out of
memory, node failure) is failed, and one that SLURM cancelled because the job it waited for (``afterok``) failed or
was cancelled is blocked, naming that job and its state: the launcher writes its ``error.json`` saying so.
Importing this module is cheap (no submitit, no torch): ``--status`` and ``--wait`` only run ``squeue``/``sacct``.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from benchmark import run_dir as rd
from benchmark.errors import UserError, unknown_name_error
from benchmark.run_dir import ERROR_FILE, SPEC_FILE, now_iso, write_json_atomic

REPO = Path(__file__).resolve().parent.parent
STAGES = ("generator", "classifier", "collector")
MANIFEST_FILE = "submissions.jsonl"
COLLECTOR_KEY = "collector"
NO_COLLECTOR = "none"  # --cluster-profile collector=none (or stages: {collector: none}): no collector job
LOCAL_CLUSTER_PROFILE = "local-cpu"
LOCAL_CLUSTER_MARK = "written by slurm/start-local-slurm.sh"  # first line of the local test cluster's slurm.conf
POLL_S = float(os.environ.get("GENMED_SLURM_POLL_S", "10"))
# SLURM job states in which a job still holds (or will hold) resources; any other known state has ended.
ACTIVE = frozenset({"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING",
                    "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "STOPPED", "SPECIAL_EXIT"})
RUNNING = frozenset({"RUNNING", "CONFIGURING", "COMPLETING", "SIGNALING", "STAGE_OUT"})
STATUS_ORDER = ("done", "running", "pending", "failed", "blocked", "corrupt", "not submitted", "unknown")


class SlurmUnavailable(Exception):
    """squeue/sacct could not be run or did not answer."""


# ------------------------------------------------------------------------------------------------ cluster profiles
def parse_profile_overrides(values: list[str] | None) -> tuple[str | None, dict[str, str]]:
    """``--cluster-profile`` values → (profile for every stage, {stage: profile}). Each value is ``NAME`` or
    ``STAGE=NAME``, several separated by commas: ``--cluster-profile gpu-small,collector=cpu-collector``."""
    everyone, per_stage = None, {}
    for value in values or []:
        for item in filter(None, (part.strip() for part in value.split(","))):
            stage, sep, name = item.partition("=")
            if not sep:
                if everyone not in (None, item):
                    raise UserError(f"--cluster-profile names two profiles for every stage ({everyone!r}, "
                                    f"{item!r}); give one, and STAGE=NAME for the others.")
                everyone = item
                continue
            stage, name = stage.strip(), name.strip()
            if stage not in STAGES:
                raise UserError(f"--cluster-profile {item!r}: {unknown_name_error('stage', stage, STAGES)}")
            if not name:
                raise UserError(f"--cluster-profile {item!r}: give a profile name after '='.")
            per_stage[stage] = name
    return everyone, per_stage


def grid_stage_profiles(grid_ref: str) -> tuple[dict[str, str], str]:
    """The grid file's ``stages:`` mapping (stage → cluster profile) and the file it came from."""
    from benchmark import registry

    if str(grid_ref).endswith((".yaml", ".yml")) or Path(grid_ref).is_file():
        entry = registry.entry_from_file("grid", Path(grid_ref))
    else:
        entry = registry.get("grid", grid_ref)
    stages = entry.config.get("stages") or {}
    if not isinstance(stages, dict):
        raise UserError(f"{entry.source}: 'stages' must map stages ({', '.join(STAGES)}) to cluster profile "
                        f"names, got {stages!r}.")
    for stage, name in stages.items():
        if stage not in STAGES:
            raise UserError(f"{entry.source}: stages: {unknown_name_error('stage', stage, STAGES)}")
        if not isinstance(name, str) or not name.strip():
            raise UserError(f"{entry.source}: stages.{stage} must be a cluster profile name, got {name!r}.")
    return dict(stages), str(entry.source)


def is_local_test_cluster(conf: str | None = None) -> bool:
    """Whether SLURM_CONF is the single-node test cluster of slurm/start-local-slurm.sh."""
    path = Path(conf or os.environ.get("SLURM_CONF") or "/etc/slurm/slurm.conf")
    try:
        with open(path) as fh:
            return LOCAL_CLUSTER_MARK in fh.readline()
    except OSError:
        return False


def stage_profiles(grid_ref: str, overrides: list[str] | None, stages: tuple[str, ...] = STAGES) -> dict:
    """The cluster profile of each stage: ``--cluster-profile STAGE=NAME``, then ``--cluster-profile NAME``, then
    ``local-cpu`` on the local test cluster, then the grid's ``stages:``. A stage with none is an error, except
    the collector: without a profile (or with ``none``) no collector job is submitted (its value is None)."""
    from benchmark.cluster import list_profiles, load_profile

    everyone, per_stage = parse_profile_overrides(overrides)
    grid_stages, source = grid_stage_profiles(grid_ref)
    local = is_local_test_cluster()
    chosen = {}
    for stage in stages:
        if stage in per_stage:
            chosen[stage] = (per_stage[stage], f"--cluster-profile {stage}={per_stage[stage]}")
        elif everyone:
            chosen[stage] = (everyone, f"--cluster-profile {everyone}")
        elif local:
            chosen[stage] = (LOCAL_CLUSTER_PROFILE, "the default on the local test cluster")
        elif stage in grid_stages:
            chosen[stage] = (grid_stages[stage], f"{source}: stages.{stage}")
        elif stage == "collector":
            chosen[stage] = (NO_COLLECTOR, "")  # no collector job: run launch/collect.py when the jobs are done
        else:
            raise UserError(f"No cluster profile for the {stage} stage: grid {source} has no stages.{stage}. Pass "
                            f"--cluster-profile {stage}=NAME (or NAME for every stage), or add "
                            f"'stages: {{{stage}: NAME}}' to the grid. Profiles: {', '.join(list_profiles())}.")
    profiles = {}
    for stage, (name, why) in chosen.items():
        if stage == "collector" and name == NO_COLLECTOR:
            profiles[stage] = None
            continue
        try:
            profiles[stage] = load_profile(name)
        except UserError as exc:
            raise UserError(f"{why}: {exc}") from None
    return profiles


# ------------------------------------------------------------------------------------------------ the manifest
class Manifest:
    """``submissions.jsonl``: one line per submitted job (key, stage, name, SLURM job id, profile, time), appended
    right after each sbatch returns. The latest line of a key says where it runs now."""

    def __init__(self, out_dir: Path):
        self.path = Path(out_dir) / MANIFEST_FILE

    def entries(self) -> list[dict]:
        if not self.path.is_file():
            return []
        entries = []
        for number, line in enumerate(self.path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                entries.append(json.loads(line))
            except ValueError:  # a line cut short by a crash mid-write: the job it names is not known
                print(f"warning: {self.path}:{number} is not valid JSON; ignored", file=sys.stderr)
        return entries

    def latest(self) -> dict[str, dict]:
        return {entry["key"]: entry for entry in self.entries()}

    def append(self, entries: list[dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as fh:
            fh.write("".join(json.dumps(e, sort_keys=True) + "\n" for e in entries))
            fh.flush()
            os.fsync(fh.fileno())

    @contextmanager
    def lock(self):
        """Serialise submissions of one grid (two terminals submitting at once would both see nothing queued)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(".submissions.lock"), "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------------------------ SLURM queries
def _slurm(command: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SlurmUnavailable(f"{command[0]}: {exc}") from None


def slurm_states(job_ids) -> dict[str, str]:
    """State of each job id (``123`` or ``123_4``) from squeue (queued, running and recently ended jobs), then sacct
    for those the controller no longer lists. Ids that neither knows are left out."""
    job_ids = set(job_ids)
    if not job_ids:
        return {}
    bases = sorted({j.split("_")[0] for j in job_ids}, key=lambda b: int(b) if b.isdigit() else 0)
    states: dict[str, str] = {}
    proc = _slurm(["squeue", "-h", "-r", "-t", "all", "-j", ",".join(bases), "-o", "%i|%T"])
    if proc.returncode != 0 and "Invalid job id" not in proc.stderr:  # all ids forgotten: not an error
        raise SlurmUnavailable(f"squeue: {proc.stderr.strip() or f'exit code {proc.returncode}'}")
    for line in proc.stdout.splitlines():
        job_id, _, state = line.strip().partition("|")
        if job_id and state:
            states[job_id] = state.split()[0]
    missing = sorted({j.split("_")[0] for j in job_ids if j not in states})
    if missing:
        proc = _slurm(["sacct", "-X", "-n", "-P", "-j", ",".join(missing), "-o", "JobID,State"])
        for line in proc.stdout.splitlines() if proc.returncode == 0 else []:
            job_id, _, state = line.strip().partition("|")
            if job_id and "[" not in job_id and state:  # '123_[4-9]' lines are still pending (squeue has them)
                states.setdefault(job_id, state.split()[0])  # 'CANCELLED by 0' → 'CANCELLED'
    return {j: states[j] for j in job_ids if j in states}


# ------------------------------------------------------------------------------------------------ grid state
def classify(jobs: list, files: dict[str, str], latest: dict[str, dict], states: dict[str, str],
             reachable: bool = True, started: set | None = None, blocked_by: dict | None = None) -> dict[str, str]:
    """Status of each job from its run folder (``files``: benchmark.run_dir.status per key), its latest submission
    and SLURM states: done; running; pending (queued in SLURM, or waiting for its turn in a running packed task: not
    in ``started``); corrupt (a result.json that is not a valid record: resubmitted); failed (error.json, or its
    SLURM job ended without a result); blocked (its generator job failed, or SLURM cancelled it because the job it
    waited for failed or was cancelled: then ``blocked_by[key]`` = (that job's id, its state)); not submitted;
    'unknown' when SLURM cannot be asked. A job queued or running in SLURM is never failed or blocked, whatever
    old error files say."""
    status = {}
    for spec in jobs:
        entry = latest.get(spec.key, {})
        job_id = entry.get("job_id")
        state = states.get(job_id) if job_id else None
        found = files[spec.key]
        dependency = dependency_failure(entry, states, spec.key in started if started is not None else False) \
            if job_id and state not in ACTIVE else None
        if found == "done":
            status[spec.key] = "done"
        elif state in ACTIVE:
            running = state in RUNNING and (started is None or spec.key in started)
            status[spec.key] = "running" if running else "pending"
        elif found in ("running", "corrupt"):  # a live process holds its lock / a record to move aside and redo
            status[spec.key] = found
        elif dependency:
            status[spec.key] = "blocked"
            if blocked_by is not None:
                blocked_by[spec.key] = dependency
        elif found in ("failed", "blocked"):
            status[spec.key] = found
        elif job_id and (state is not None or reachable):
            status[spec.key] = "failed"  # its SLURM job ended (or was forgotten) without a result
        elif job_id:
            status[spec.key] = "unknown"
        else:
            status[spec.key] = "not submitted"
    for spec in jobs:
        generator_key = getattr(spec, "generator_key", None)
        if generator_key and status[spec.key] in ("failed", "not submitted", "unknown") and \
                status.get(generator_key, files.get(generator_key)) == "failed":
            status[spec.key] = "blocked"
    return status


def dependency_failure(entry: dict, states: dict[str, str], started: bool) -> tuple[str, str] | None:
    """(job id, state) of the job that ``entry``'s SLURM job waited for (``afterok``) when that job ended other than
    COMPLETED and this one never started (SLURM cancelled it: DependencyNeverSatisfied); else None."""
    dependency = entry.get("dependency") or ""
    state = states.get(entry.get("job_id"))
    if started or not dependency.startswith("afterok:") or (state is not None and not state.startswith("CANCELLED")):
        return None
    for job_id in dependency.partition(":")[2].split(":"):
        dep_state = states.get(job_id)
        if dep_state and dep_state not in ACTIVE and dep_state != "COMPLETED":
            return job_id, dep_state
    return None


def dependency_ids(latest: dict[str, dict]) -> set[str]:
    return {job_id for e in latest.values() if str(e.get("dependency") or "").startswith("afterok:")
            for job_id in e["dependency"].partition(":")[2].split(":") if job_id}


@dataclass
class GridState:
    jobs: list
    out_dir: Path
    status: dict[str, str]
    latest: dict[str, dict]
    states: dict[str, str]
    reachable: bool = True
    note: str = ""
    blocked_by: dict = field(default_factory=dict)  # key → (SLURM job id, state) of the failed dependency

    @property
    def runs_dir(self) -> Path:
        return self.out_dir / "runs"

    def active_job_ids(self) -> dict[str, str]:
        """SLURM job id → state of every queued or running job of the grid (collector included)."""
        ids = {e["job_id"] for e in self.latest.values()}
        return {j: self.states[j] for j in ids if self.states.get(j) in ACTIVE}

    def collector(self) -> tuple[str, str] | None:
        entry = self.latest.get(COLLECTOR_KEY)
        if not entry:
            return None
        return entry["job_id"], self.states.get(entry["job_id"], "unknown" if not self.reachable else "ENDED")

    def counts(self, stage: str) -> Counter:
        return Counter(self.status[s.key] for s in self.jobs if s.stage == stage)


def grid_state(jobs: list, out_dir: Path, reconcile: bool = True) -> GridState:
    """The grid's state now. With ``reconcile``, a job whose SLURM job ended without writing a result gets an
    error.json written here (so every other view — ``--dry-run``, the collector — sees it failed)."""
    out_dir = Path(out_dir)
    latest = Manifest(out_dir).latest()
    files = {spec.key: rd.status(out_dir / "runs" / spec.key) for spec in jobs}
    states, reachable, note = {}, True, ""
    if latest:
        try:
            states = slurm_states({e["job_id"] for e in latest.values()} | dependency_ids(latest))
        except SlurmUnavailable as exc:
            reachable, note = False, f"SLURM cannot be asked ({exc}); states of submitted jobs are unknown"
    blocked_by: dict = {}
    status = classify(jobs, files, latest, states, reachable, _started(jobs, out_dir / "runs", latest), blocked_by)
    state = GridState(jobs, out_dir, status, latest, states, reachable, note, blocked_by)
    if reconcile:
        for spec in jobs:
            entry = latest.get(spec.key)
            if spec.key in blocked_by and files[spec.key] != "blocked":
                _record_slurm_failure(spec, entry, states.get(entry["job_id"]), out_dir, blocked_by[spec.key])
            elif status[spec.key] == "failed" and files[spec.key] not in ("failed", "blocked"):
                _record_slurm_failure(spec, entry, states.get(entry["job_id"]), out_dir)
    return state


def _started(jobs: list, runs_dir: Path, latest: dict[str, dict]) -> set[str]:
    """Keys whose job began (its spec.json written) since its latest submission."""
    from datetime import datetime

    started = set()
    for spec in jobs:
        entry = latest.get(spec.key)
        if entry:
            try:
                if (runs_dir / spec.key / SPEC_FILE).stat().st_mtime >= datetime.fromisoformat(
                        entry["submitted_at"]).timestamp() - 1:
                    started.add(spec.key)
            except (OSError, ValueError, KeyError):
                pass
    return started


def _record_slurm_failure(spec, entry: dict, slurm_state: str | None, out_dir: Path,
                          dependency: tuple[str, str] | None = None) -> None:
    job_id = entry["job_id"]
    said = f"ended {slurm_state}" if slurm_state else "is no longer known to SLURM (squeue, sacct)"
    payload = {"key": spec.key, "name": spec.name, "source": "launcher", "slurm_job_id": job_id,
               "slurm_state": slurm_state, "failed_at": now_iso(), "traceback": "",
               "error": f"SLURM job {job_id} {said} without writing a result (cancelled, time limit, out of memory, "
                        f"node failure or a crash outside the job's code); its log is in "
                        f"{out_dir / 'logs' / job_id}/"}
    if dependency:
        payload["blocked_by"] = {"slurm_job_id": dependency[0], "slurm_state": dependency[1]}
        payload["error"] = (f"SLURM cancelled job {job_id} before it started because the job it waited for "
                            f"({entry.get('dependency')}), SLURM job {dependency[0]}, ended {dependency[1]} "
                            f"(DependencyNeverSatisfied); --retry-failed resubmits it (without that dependency when "
                            f"its generator job finished)")
    write_json_atomic(out_dir / "runs" / spec.key / ERROR_FILE, payload)


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
        generator_key = getattr(spec, "generator_key", None)
        if generator_key and generator_key not in todo and status.get(generator_key) not in (
                "done", "running", "pending") and generator_key in by_key:
            todo[generator_key] = by_key[generator_key]
            plan.skipped[status[generator_key]] -= 1
    plan.skipped = +plan.skipped
    generators = [s for s in todo.values() if s.stage == "generator"]
    plan.generator_batches = _pack(generators, 1)
    groups: dict[str | None, list] = {}
    for spec in todo.values():
        if spec.stage == "classifier":
            generator_key = spec.generator_key
            waits = generator_key if generator_key and (generator_key in todo or status.get(generator_key) in (
                "running", "pending")) else None
            groups.setdefault(waits, []).append(spec)
    plan.classifier_groups = [(key, _pack(specs, runs_per_task)) for key, specs in groups.items()]
    return plan


def _pack(specs: list, runs_per_task: int) -> list[list]:
    n = max(1, runs_per_task)
    return [specs[i:i + n] for i in range(0, len(specs), n)]


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
        from benchmark.batch import JobBatch

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
                _slurm(["scancel", old[0]])
                after.discard(old[0])
            job_id = sub.collector(collect, "afterany:" + ":".join(sorted(after, key=int)))
            lines.append(f"collector: SLURM job {job_id}, after all of them (profile {profiles['collector'].name})")
    return plan, lines


# ------------------------------------------------------------------------------------------------ following
def status_report(state: GridState) -> str:
    entries = Manifest(state.out_dir).entries()
    times = sorted({e["submitted_at"] for e in entries})
    head = (f"SLURM: {len(entries)} submitted job(s) in {len(times)} submission(s), last {times[-1]} "
            f"({Manifest(state.out_dir).path})" if entries else
            f"SLURM: nothing submitted for this grid yet (no {Manifest(state.out_dir).path})")
    lines = [head] + ([f"note: {state.note}"] if state.note else [])
    for stage in ("generator", "classifier"):
        stage_jobs = [s for s in state.jobs if s.stage == stage]
        if not stage_jobs:
            continue
        counts = state.counts(stage)
        shown = [s for s in STATUS_ORDER if counts.get(s) or s in ("done", "running", "pending", "failed")]
        lines.append(f"  {stage:<11}{len(stage_jobs):>6} jobs: " + ", ".join(f"{counts.get(s, 0)} {s}" for s in shown))
    collector = state.collector()
    if collector:
        lines.append(f"  {'collector':<11} SLURM job {collector[0]}: {collector[1]}")
    problems = [s for s in state.jobs if state.status[s.key] in ("failed", "blocked", "corrupt")]
    for spec in problems[:10]:
        lines.append(f"  {state.status[spec.key]:<8} {spec.name}  {_problem(state, spec)}")
    if len(problems) > 10:
        lines.append(f"  ... and {len(problems) - 10} more")
    if problems:
        lines.append("  resubmit them with --retry-failed")
    return "\n".join(lines)


def _problem(state: GridState, spec) -> str:
    """Where to look for one failed, blocked or corrupt job."""
    run_dir = state.runs_dir / spec.key
    if state.status[spec.key] == "corrupt":
        return f"{rd.corrupt_reason(run_dir)} (resubmitted by the next submission)"
    blocked = state.blocked_by.get(spec.key)
    if blocked is None and state.status[spec.key] == "blocked" and rd.status(run_dir, probe_lock=False) == "blocked":
        try:
            found = json.loads((run_dir / ERROR_FILE).read_text())["blocked_by"]
            blocked = (found["slurm_job_id"], found["slurm_state"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    if blocked:
        return f"by its dependency, SLURM job {blocked[0]} ({blocked[1]}); see {run_dir / ERROR_FILE}"
    if state.status[spec.key] == "blocked":
        return f"by its generator job; see {state.runs_dir / spec.generator_key / ERROR_FILE}"
    return f"see {run_dir / ERROR_FILE}"


def wait(jobs: list, out_dir: Path, poll_s: float = POLL_S) -> GridState:
    """Block until none of the grid's SLURM jobs (collector included) is queued or running; a progress bar counts
    finished jobs. Ctrl-C stops waiting, never the jobs."""
    from tqdm.auto import tqdm

    state = grid_state(jobs, out_dir)
    with tqdm(total=len(jobs), desc="jobs done", unit="job", dynamic_ncols=True) as bar:
        while True:
            if not state.reachable:
                raise UserError(f"{state.note}; cannot wait.")
            counts = Counter(state.status.values())
            bar.n = counts.get("done", 0)
            bar.set_postfix_str(", ".join(f"{counts[s]} {s}" for s in ("running", "pending", "failed") if counts[s]))
            bar.refresh()
            if not state.active_job_ids():
                return state
            time.sleep(poll_s)
            state = grid_state(jobs, out_dir)


def cancel(state: GridState) -> list[str]:
    """scancel every queued or running SLURM job of the grid (whole arrays); returns the ids cancelled."""
    ids = sorted({j.split("_")[0] for j in state.active_job_ids()}, key=int)
    if ids:
        proc = _slurm(["scancel", *ids])
        if proc.returncode != 0:
            raise UserError(f"scancel {' '.join(ids)} failed: {proc.stderr.strip()}")
    return ids


def require_slurm() -> None:
    from benchmark.cluster import slurm_available

    ok, reason = slurm_available()
    if not ok:
        raise UserError(f"--executor slurm: {reason}. Run this where sbatch reaches your cluster (a login node), "
                        "start the local test cluster (see slurm/README.md), or use --executor local.")


# ------------------------------------------------------------------------------------------------ CLI entry points
def run(grid, grid_ref: str, jobs: list, out_dir: Path, results_root: Path, cluster_profiles: list[str] | None,
        runs_per_task: int | None = None, force: bool = False, retry_failed: bool = False,
        wait_after: bool = False) -> int:
    """``launch/grid.py --executor slurm``: submit what is not done, queued or running, print what was submitted and
    how to follow it; with ``wait_after`` block until the grid's SLURM jobs end. Returns the exit code."""
    stages = (("generator",) if any(j.stage == "generator" for j in jobs) else ()) + ("classifier", "collector")
    profiles = stage_profiles(grid_ref, cluster_profiles, stages)  # profile mistakes first, even without SLURM
    require_slurm()
    collect = collector_command(grid_ref, grid.profile, results_root)
    plan, lines = submit(jobs, out_dir, grid.label, profiles, collect, runs_per_task or 1, force, retry_failed)
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(plan.skipped.items(), key=lambda kv: STATUS_ORDER.index(
        kv[0]) if kv[0] in STATUS_ORDER else 99))
    retry = " (resubmit failed and blocked jobs with --retry-failed)" if not retry_failed and (
        plan.skipped.get("failed") or plan.skipped.get("blocked")) else ""
    print(f"submitted {plan.n_jobs} job(s)" + (f"; left alone: {skipped}{retry}" if skipped else ""))
    for line in lines:
        print(f"  {line}")
    if profiles.get("collector") is None and plan.n_jobs:
        print("  no collector job (no collector profile): run launch/collect.py when the jobs are done")
    if not wait_after:
        follow = f"python launch/grid.py --grid {grid_ref}" + (f" --profile {grid.profile}" if grid.profile else "")
        print(f"follow: {follow} --status | --wait | --cancel")
        return 0
    return follow_up(jobs, out_dir, wait_for=True)


def follow_up(jobs: list, out_dir: Path, status: bool = True, wait_for: bool = False, cancel_jobs: bool = False) -> int:
    """``--status`` / ``--wait`` / ``--cancel`` of a grid (nothing is submitted). Returns the exit code: 1 when a
    job failed or is blocked after waiting, else 0."""
    if cancel_jobs:
        require_slurm()
        ids = cancel(grid_state(jobs, out_dir, reconcile=False))
        print(f"cancelled SLURM job(s) {', '.join(ids)}" if ids else "nothing of this grid is queued or running")
    if wait_for:
        require_slurm()
        try:
            state = wait(jobs, out_dir)
        except KeyboardInterrupt:
            print("\nstopped waiting; the jobs keep running (--cancel stops them)")
            return 130
    else:
        state = grid_state(jobs, out_dir)
    if status or wait_for:
        print(status_report(state))
    return 1 if wait_for and any(s in ("failed", "blocked") for s in state.status.values()) else 0
