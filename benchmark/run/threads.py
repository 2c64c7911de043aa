"""CPU threads per job: each worker process uses its share of the cores, never more (OpenMP oversubscription on a
busy CPU made the same training step 5-20x slower in our measurements, see docs/benchmarks.md)."""

import os

THREADS_ENV = "GENMED_TORCH_THREADS"
JOBS_PER_DEVICE_ENV = "GENMED_JOBS_PER_DEVICE"  # set in each jobs_per_device worker (benchmark.run.batch): K


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def threads_per_worker(workers: int) -> int:
    return max(1, cpu_count() // max(1, workers))


def threads_per_share(workers: int) -> int:
    """Torch threads of each of `workers` processes sharing one SLURM task (``jobs_per_device``): the task's CPUs
    ($SLURM_CPUS_PER_TASK, else the cores this process may use) divided among them, at least 1."""
    total = int(os.environ.get("SLURM_CPUS_PER_TASK") or cpu_count())
    return max(1, total // max(1, workers))


def apply_thread_limit() -> int:
    """Set torch's intra-op threads from $GENMED_TORCH_THREADS, else SLURM's CPUs per task; returns the count."""
    import torch

    configured = os.environ.get(THREADS_ENV) or os.environ.get("SLURM_CPUS_PER_TASK")
    if configured:
        torch.set_num_threads(max(1, int(configured)))
    return torch.get_num_threads()
