"""Jobs in packs, each run by one process (a local worker or a SLURM array task)."""

from __future__ import annotations


def pack(jobs: list, runs_per_task: int | None, parallel: int = 1) -> list[list]:
    """The jobs in packs, each run by one process: a local worker or a SLURM array task. Without `runs_per_task`
    (the local default): one pack per worker, dealt round-robin, so that each worker gets its share of every kind of
    job (a grid lists its jobs by method: contiguous shares would give one worker all the long generator fits). With
    it (always on SLURM: 1 unless --runs-per-task): packs of that many consecutive jobs, taken as workers or array
    tasks become free."""
    if not runs_per_task:
        parallel = max(1, min(parallel, len(jobs)))
        return [jobs[i::parallel] for i in range(parallel)]
    return [jobs[i:i + runs_per_task] for i in range(0, len(jobs), runs_per_task)]
