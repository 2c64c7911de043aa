"""The submission manifest (``results/<grid label>/submissions.jsonl``: the SLURM job each job was submitted as) and
the calls that ask SLURM about those jobs (squeue, then sacct for jobs the controller has forgotten) or act on them."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

MANIFEST_FILE = "submissions.jsonl"
COLLECTOR_KEY = "collector"
# SLURM job states in which a job still holds (or will hold) resources; any other known state has ended.
ACTIVE = frozenset({"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING",
                    "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "STOPPED", "SPECIAL_EXIT"})
RUNNING = frozenset({"RUNNING", "CONFIGURING", "COMPLETING", "SIGNALING", "STAGE_OUT"})


class SlurmUnavailable(Exception):
    """squeue/sacct could not be run or did not answer."""


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


def slurm_command(command: list[str]) -> subprocess.CompletedProcess:
    """Run a SLURM client command (squeue, sacct, scancel); SlurmUnavailable when it cannot run or hangs."""
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
    proc = slurm_command(["squeue", "-h", "-r", "-t", "all", "-j", ",".join(bases), "-o", "%i|%T"])
    if proc.returncode != 0 and "Invalid job id" not in proc.stderr:  # all ids forgotten: not an error
        raise SlurmUnavailable(f"squeue: {proc.stderr.strip() or f'exit code {proc.returncode}'}")
    for line in proc.stdout.splitlines():
        job_id, _, state = line.strip().partition("|")
        if job_id and state:
            states[job_id] = state.split()[0]
    missing = sorted({j.split("_")[0] for j in job_ids if j not in states})
    if missing:
        proc = slurm_command(["sacct", "-X", "-n", "-P", "-j", ",".join(missing), "-o", "JobID,State"])
        for line in proc.stdout.splitlines() if proc.returncode == 0 else []:
            job_id, _, state = line.strip().partition("|")
            if job_id and "[" not in job_id and state:  # '123_[4-9]' lines are still pending (squeue has them)
                states.setdefault(job_id, state.split()[0])  # 'CANCELLED by 0' → 'CANCELLED'
    return {j: states[j] for j in job_ids if j in states}
