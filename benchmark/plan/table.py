"""The job table of a planned grid: each job's status from its run folder, the table and the summary line."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from benchmark.core import status as job_status
from benchmark.core.specs import JobSpec
from benchmark.run import run_dir as rd


def statuses(jobs: list, runs_dir: Path) -> dict[str, str]:
    """Per job, from its run folder (benchmark.run.run_dir.status): done, pending, failed, corrupt (a result.json that
    does not parse or lacks required fields; re-run), running (another process holds its lock) or blocked (SLURM
    cancelled it for a failed dependency). A classifier job whose generator job failed is 'blocked'; one whose
    generator is running or pending stays 'pending', whatever old error files say."""
    status = {spec.key: rd.status(runs_dir / spec.key) for spec in jobs}
    for spec in jobs:
        if spec.generator_key:
            generator = status.get(spec.generator_key) or rd.status(runs_dir / spec.generator_key)
            status[spec.key] = job_status.with_generator(status[spec.key], generator)
    return status


def job_table(jobs: list[JobSpec], status: dict[str, str], limit: int | None = None,
              stale: dict[str, str] | None = None) -> str:
    """The dry-run table. A job whose data is still to be downloaded shows no key ('after download'); a pending
    job with a finished result under an old key of its name (`stale`, from stale_jobs) shows 'stale (why)'."""
    stale = stale or {}

    def row(spec):
        if not spec.is_resolved:
            return spec.name, "after download", f"{status[spec.key]} (key after download)"
        state = status[spec.key]
        return spec.name, spec.key, f"stale ({stale[spec.key]})" if spec.key in stale and state == job_status.PENDING \
            else state

    rows = [row(spec) for spec in jobs]
    shown = rows if limit is None else rows[:limit]
    width = max((len(r[0]) for r in shown), default=4)
    lines = [f"{'name':<{width}}  {'key':<16}  status", f"{'-' * width}  {'-' * 16}  ------"]
    lines += [f"{name:<{width}}  {key:<16}  {st}" for name, key, st in shown]
    if limit is not None and len(rows) > limit:
        lines.append(f"... and {len(rows) - limit} more (use --only to filter)")
    return "\n".join(lines)


def summary_line(jobs: list, status: dict[str, str], stale: dict[str, str] | None = None) -> str:
    """e.g. '4 generator jobs: 4 done, …; 36 classifier jobs: 30 done, 6 pending, 0 failed'. With `stale`, pending
    jobs with an old result under another key are counted as 'stale' (they run again like pending ones)."""
    stale = stale or {}
    parts = []
    for stage in ("generator", "classifier"):
        stage_jobs = [spec for spec in jobs if spec.stage == stage]
        if not stage_jobs and stage == "generator":
            continue
        counts = Counter(job_status.STALE if spec.key in stale and status[spec.key] == job_status.PENDING
                         else status[spec.key] for spec in stage_jobs)
        shown = [s for s in job_status.ORDER if s in job_status.ALWAYS_SHOWN or counts.get(s)]
        parts.append(f"{len(stage_jobs)} {stage} jobs: " + ", ".join(f"{counts.get(s, 0)} {s}" for s in shown))
    return "; ".join(parts)
