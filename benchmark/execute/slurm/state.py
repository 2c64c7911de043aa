"""Each job's status on SLURM (done, running, pending, failed, blocked, corrupt, not submitted, unknown) and the
grid's state (GridState).

States come from the run folders first (benchmark.run.run_dir: a valid ``result.json`` = done, a corrupt one = corrupt,
a held lock = running, ``error.json`` = failed) and from SLURM second (``squeue``, then ``sacct`` for jobs the
controller has forgotten); a job queued or running in SLURM under its latest submission is pending or running
whatever old files say. A job whose SLURM job ended without a result (cancelled, killed at the time limit, out of
memory, node failure) is failed, and one that SLURM cancelled because the job it waited for (``afterok``) failed or
was cancelled is blocked, naming that job and its state: the launcher writes its ``error.json`` saying so.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from benchmark.core import status as job_status
from benchmark.execute.slurm.manifest import ACTIVE, COLLECTOR_KEY, RUNNING, Manifest, SlurmUnavailable, slurm_states
from benchmark.run import run_dir as rd
from benchmark.run.run_dir import ERROR_FILE, SPEC_FILE, now_iso, write_json_atomic

STATUS_ORDER = tuple(s for s in job_status.ORDER if s != job_status.STALE)  # SLURM statuses, in table order


def classify(jobs: list, files: dict[str, str], latest: dict[str, dict], states: dict[str, str],
             reachable: bool = True, started: set | None = None, blocked_by: dict | None = None) -> dict[str, str]:
    """Status of each job from its run folder (``files``: benchmark.run.run_dir.status per key), its latest submission
    and SLURM states: done; running; pending (queued in SLURM, or waiting for its turn in a running packed task: not
    in ``started``); corrupt (a result.json that is not a valid record: resubmitted); failed (error.json, or its
    SLURM job ended without a result); blocked (its generator job failed, or SLURM cancelled it because the job it
    waited for failed or was cancelled: then ``blocked_by[key]`` = (that job's id, its state)); not submitted;
    'unknown' when SLURM cannot be asked. A job queued or running in SLURM is never failed or blocked, whatever
    old error files say."""
    status = {}
    queued: set = set()
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
            queued.add(spec.key)
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
        if spec.generator_key:
            generator = status.get(spec.generator_key, files.get(spec.generator_key))
            status[spec.key] = job_status.with_generator(status[spec.key], generator, spec.key in queued)
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
