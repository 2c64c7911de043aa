"""JobBatch: several jobs run one after another in one submitit task (packing), checkpointable for preemption and
requeue, with the torch.distributed environment of a multi-task SLURM job exported before Accelerate starts.

Kept out of benchmark.job because it imports submitit, which ``--dry-run`` and ``--status`` never need.
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import submitit

from benchmark.job import STATE_DIR, execute
from benchmark.specs import spec_from_dict

PORT_BASE, PORT_SPAN = 20000, 20000  # MASTER_PORT in [20000, 40000), derived from the SLURM job id


@dataclass
class JobBatch(submitit.helpers.Checkpointable):
    """A picklable submitit task: several jobs run one after another in one process, so imports, datasets and the
    CUDA context are shared. Each job writes its own record; one failing does not stop the others.

    ``resumable`` (set under SLURM): each classifier saves its training state every epoch and resumes from it, so a
    requeued task (``scontrol requeue``, preemption, the time limit) continues where it was. ``statuses`` travels
    with the checkpoint: jobs this task already finished are not run again after a requeue."""

    specs: list  # JobSpec.to_dict() / GeneratorSpec.to_dict() payloads
    runs_dir: str
    force: bool = False
    resumable: bool = False
    statuses: dict = field(default_factory=dict)

    def __call__(self) -> dict:
        rank, world_size = setup_process()
        for payload in self.specs:
            if payload["key"] in self.statuses:  # finished (or failed) before this task was requeued
                continue
            spec = spec_from_dict(payload)
            run_dir = Path(self.runs_dir) / spec.key
            if spec.stage == "generator" and rank != 0:
                continue  # a generator trains in one process: the other ranks of a multi-task job skip it
            if self.resumable and rank == 0:
                _say_if_resuming(spec, run_dir)
            self.statuses[spec.key] = execute(spec, run_dir, force=self.force, resumable=self.resumable)
        return self.statuses

    def checkpoint(self, *args, **kwargs):
        """Called by submitit on the pre-timeout or preemption signal (USR2), before it requeues the task: resubmit
        this batch as it is now. Finished jobs keep their records and are skipped; the interrupted one resumes from
        its last epoch state (at most one epoch of work is lost)."""
        print(f"checkpoint: requeueing; done so far: {self.statuses}", flush=True)
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def setup_process() -> tuple[int, int]:
    """Before any torch import in a submitit task: the thread count from the task's CPUs and, for a job with
    several tasks (``tasks_per_node`` > 1), the variables ``torch.distributed`` reads (MASTER_ADDR, MASTER_PORT,
    RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE) from ``submitit.JobEnvironment()``, so that ``Accelerator()``
    joins one process group: gloo on CPU, NCCL on GPUs with each process on ``cuda:LOCAL_RANK``. Returns
    (rank, world size); (0, 1) outside a submitit job or for a one-task job."""
    cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    if cpus:
        os.environ.setdefault("OMP_NUM_THREADS", cpus)  # without cgroups torch would use every core of the node
    try:
        env = submitit.JobEnvironment()
    except RuntimeError:  # not in a submitit job (debug executor, tests)
        return 0, 1
    if env.num_tasks <= 1:
        return 0, 1
    os.environ.update(distributed_env(env.job_id, env.global_rank, env.local_rank, env.num_tasks, env.num_nodes,
                                      lambda: env.hostnames[0]))
    import torch

    if not torch.cuda.is_available():
        os.environ["ACCELERATE_USE_CPU"] = "true"  # else Accelerate sees no GPU and stays single-process
    elif torch.cuda.device_count() == 1:
        os.environ["ACCELERATE_TORCH_DEVICE"] = "cuda:0"  # the cluster binds one GPU per task
    return env.global_rank, env.num_tasks


def distributed_env(job_id: str, rank: int, local_rank: int, world_size: int, num_nodes: int,
                    first_host) -> dict[str, str]:
    """The torch.distributed variables of one task. The port is derived from the job id (the same in every task,
    different for concurrent jobs, and changed by a requeue so that a dying predecessor cannot hold it)."""
    restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    port = PORT_BASE + zlib.crc32(f"{os.environ.get('SLURM_JOB_ID', job_id)}/{restarts}".encode()) % PORT_SPAN
    return {
        "MASTER_ADDR": "127.0.0.1" if num_nodes == 1 else first_host(),
        "MASTER_PORT": str(port),
        "RANK": str(rank),
        "WORLD_SIZE": str(world_size),
        "LOCAL_RANK": str(local_rank),
        "LOCAL_WORLD_SIZE": str(world_size // max(1, num_nodes)),
    }


def _say_if_resuming(spec, run_dir: Path) -> None:
    progress = run_dir / STATE_DIR / "progress.json"
    if progress.is_file() and not (run_dir / "result.json").is_file():
        try:
            epoch = json.loads(progress.read_text())["epoch"]
        except (OSError, ValueError, KeyError):
            return
        print(f"resuming {spec.name} ({spec.key}) from its state after epoch {epoch}", flush=True)
