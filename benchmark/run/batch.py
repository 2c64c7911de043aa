"""JobBatch: several jobs run one after another in one submitit task (packing), or K at a time in worker
processes sharing its device (``jobs_per_device``), checkpointable for preemption and requeue, with the
torch.distributed environment of a multi-task SLURM job exported before Accelerate starts.

Kept out of benchmark.run.job because it imports submitit, which ``--dry-run`` and ``--status`` never need.
"""

from __future__ import annotations

import json
import os
import signal
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import submitit

from benchmark.core.specs import spec_from_dict
from benchmark.run.job import execute, record_failure
from benchmark.run.run_dir import PROGRESS_FILE, RESULT_FILE, STATE_DIR

PORT_BASE, PORT_SPAN = 20000, 20000  # MASTER_PORT in [20000, 40000), derived from the SLURM job id


@dataclass
class JobBatch(submitit.helpers.Checkpointable):
    """A picklable submitit task: several jobs run one after another in one process, so imports, datasets and the
    CUDA context are shared. Each job writes its own record; one failing (a full disk included) does not stop the
    others.

    ``resumable`` (set under SLURM): each classifier saves its training state after an epoch at most every
    ``checkpoint_every_s`` seconds (the cluster profile's; 0 = every epoch) and at the end of the epoch during which
    the pre-timeout / preemption signal arrives, and resumes from it, so a requeued task (``scontrol requeue``,
    preemption, the time limit) continues where it was. ``statuses`` travels with the checkpoint: jobs this task
    already finished are not run again after a requeue.

    ``jobs_per_device`` K > 1 (the cluster profile's, one-task jobs only): the jobs run K at a time on the task's
    one device, in K worker processes (spawned: each its own CUDA context) that take the pack round-robin, each
    with ``cpus // K`` torch threads (``run_workers``)."""

    specs: list  # JobSpec.to_dict() / GeneratorSpec.to_dict() payloads
    runs_dir: str
    force: bool = False
    resumable: bool = False
    statuses: dict = field(default_factory=dict)
    checkpoint_every_s: float = 0.0
    jobs_per_device: int = 1

    def __call__(self) -> dict:
        rank, world_size = setup_process()
        todo = [p for p in self.specs if p["key"] not in self.statuses]  # others finished before a requeue
        if self.jobs_per_device > 1 and world_size == 1 and len(todo) > 1:
            return run_workers(self, todo)
        if self.resumable:
            defer_checkpoint_signal()
        return self.run_here(todo, rank)

    def run_here(self, todo: list, rank: int = 0, report=None) -> dict:
        """Run the payloads `todo` one after another in this process; `report(key, status)` after each."""
        for payload in todo:
            spec = spec_from_dict(payload)
            run_dir = Path(self.runs_dir) / spec.key
            if spec.stage == "generator" and rank != 0:
                continue  # a generator trains in one process: the other ranks of a multi-task job skip it
            if self.resumable and rank == 0:
                _say_if_resuming(spec, run_dir)
            try:
                self.statuses[spec.key] = _execute_one(spec, run_dir, self, rank)
            finally:
                deferred = _release_checkpointing() if self.resumable else None
            if report is not None:
                report(spec.key, self.statuses[spec.key])
            if deferred is not None:  # the signal came after the job's last epoch: requeue now (it is recorded)
                deferred()
        return self.statuses

    def checkpoint(self, *args, **kwargs):
        """Called by submitit on the pre-timeout or preemption signal (USR2), before it requeues the task — here
        at the end of the epoch running when the signal came, after its state was saved (defer_checkpoint_signal):
        resubmit this batch as it is now. Finished jobs keep their records and are skipped; the interrupted one
        resumes from that epoch's state."""
        print(f"checkpoint: requeueing; done so far: {self.statuses}", flush=True)
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def _execute_one(spec, run_dir: Path, batch: JobBatch, rank: int) -> str:
    """One job of the pack. ``execute`` records a job's own failures; anything it lets through (an OSError taking
    the run folder's lock on a full disk, say) is recorded here as that job's error.json when possible, and the
    pack goes on with its other jobs. An interruption (KeyboardInterrupt, SystemExit) still stops the pack."""
    try:
        return execute(spec, run_dir, force=batch.force, resumable=batch.resumable, rank=rank,
                       checkpoint_every_s=batch.checkpoint_every_s)
    except Exception as exc:  # noqa: BLE001 - one job's failure never stops the pack
        print(f"failed: {spec.name} ({spec.key}): {type(exc).__name__}: {exc}; going on with the pack", flush=True)
        if rank == 0:
            record_failure(spec, run_dir, exc)
        return "failed"


def defer_checkpoint_signal() -> None:
    """submitit's handler of the pre-timeout / preemption signal (USR2) calls ``checkpoint()`` and requeues at once,
    wherever the training loop is. Wrap it so that, while a classifier trains, it runs at the end of the current
    epoch, right after that epoch's state was saved (benchmark.run.train.Checkpointing): the saved state is a whole
    epoch's, whatever ``checkpoint_every_s`` is, and the resumed record equals an uninterrupted run's. The epoch
    must end within the profile's ``signal_delay_s`` (90 s by default; a 28-px epoch takes well under a second on
    a GPU). Outside training the signal is handled at once."""
    try:
        sig = submitit.JobEnvironment._usr_sig()
    except RuntimeError:
        return
    original = signal.getsignal(sig)
    if not callable(original) or getattr(original, "_genmed_deferred", False):
        return

    def handler(signum, frame):
        import sys

        train = sys.modules.get("benchmark.run.train")
        Checkpointing = train.Checkpointing if train is not None else None
        if Checkpointing is None or Checkpointing.current is None:
            original(signum, frame)
        else:
            print(f"signal {signal.Signals(signum).name}: saving the training state at the end of this epoch, "
                  "then requeueing", flush=True)
            Checkpointing.current.defer(lambda: original(signum, frame))

    handler._genmed_deferred = True
    signal.signal(sig, handler)


def _release_checkpointing():
    import sys

    train = sys.modules.get("benchmark.run.train")  # not imported: no classifier trained in this process
    return train.Checkpointing.release() if train is not None else None


WORKER_INTERRUPTED = 75  # exit code of a worker stopped by the preemption signal (its state saved, rest not run)


def run_workers(batch: JobBatch, todo: list) -> dict:
    """Run `todo` (payloads of one one-task job) ``batch.jobs_per_device`` = K at a time: K worker processes
    (``spawn``: a fresh interpreter each, so each has its own CUDA context on the shared device) take the pack
    round-robin and run their share one job after another (``JobBatch.run_here``), each with
    ``threads_per_share(K)`` torch threads. Each job writes its own record; a job that fails writes its error.json
    and its worker goes on; a worker that dies (out of memory, a crash) stops only its own share, whose unfinished
    jobs are left out of ``statuses`` (so they run again when the batch does) and reported from their folders.
    Under SLURM (``resumable``) the pre-timeout / preemption signal is passed to the workers, which save their
    training state at the end of the running epoch and exit; then submitit's handler checkpoints this batch (the
    statuses the workers reported) and requeues it."""
    import multiprocessing
    import queue

    from benchmark.run import run_dir as rd
    from benchmark.run.threads import threads_per_share

    k = min(batch.jobs_per_device, len(todo))
    shares = [todo[i::k] for i in range(k)]
    threads = threads_per_share(k)
    context = multiprocessing.get_context("spawn")
    reports = context.Queue()
    workers = [context.Process(target=_worker, name=f"genmed-worker-{i}", daemon=False,
                               args=(i, k, threads, share, batch.runs_dir, batch.force, batch.resumable,
                                     batch.checkpoint_every_s, reports))
               for i, share in enumerate(shares)]
    signalled: list = []
    sig = _checkpoint_signal() if batch.resumable else None
    print(f"jobs_per_device {batch.jobs_per_device}: {len(todo)} job(s) in {k} worker processes, {threads} torch "
          "thread(s) each", flush=True)
    restore = None
    if sig is not None:  # the workers start with the signal blocked and unblock it once their handler is set
        signal.pthread_sigmask(signal.SIG_BLOCK, {sig})
    try:
        for worker in workers:
            worker.start()
    finally:
        if sig is not None:
            restore = _forward_checkpoint_signal(sig, workers, signalled)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})

    def drain(timeout: float) -> bool:
        try:
            key, status = reports.get(timeout=timeout)
        except queue.Empty:
            return False
        batch.statuses[key] = status
        return True

    try:
        while any(worker.is_alive() for worker in workers):
            drain(0.5)
        for worker in workers:
            worker.join()
        while drain(0.2):
            pass
    finally:
        for worker in workers:  # only after an exception here (KeyboardInterrupt): never leave a worker behind
            if worker.is_alive():
                worker.terminate()
                worker.join(10)
        if restore is not None:
            restore()
    lost = {}
    for i, worker in enumerate(workers):
        if worker.exitcode not in (0, WORKER_INTERRUPTED):
            missing = [p["key"] for p in shares[i] if p["key"] not in batch.statuses]
            print(f"warning: worker {i} (pid {worker.pid}) ended with exit code {worker.exitcode}; "
                  f"{len(missing)} of its job(s) did not finish: {', '.join(missing) or '-'}", flush=True)
            lost.update({key: rd.status(Path(batch.runs_dir) / key) for key in missing})
    if signalled:
        signalled[0]()  # submitit's handler: checkpoint() (resubmits this batch as it is), requeue, exit
    return {**batch.statuses, **lost}


def _checkpoint_signal():
    try:
        return submitit.JobEnvironment._usr_sig()
    except RuntimeError:
        return None


def _forward_checkpoint_signal(sig, workers, signalled):
    """In the parent of the workers: on the pre-timeout / preemption signal, pass it to the workers (SLURM may
    already have signalled them: they act once) and keep submitit's handler for when they have ended. Returns a
    function restoring the previous handler, or None when there is none to defer."""
    original = signal.getsignal(sig)
    if not callable(original):
        return None

    def handler(signum, frame):
        if not signalled:
            print(f"signal {signal.Signals(signum).name}: the workers save their training state at the end of "
                  "their epoch, then this task requeues", flush=True)
            signalled.append(lambda: original(signum, frame))
            for worker in workers:
                if worker.is_alive() and worker.pid:
                    os.kill(worker.pid, signum)

    signal.signal(sig, handler)
    return lambda: signal.signal(sig, original)


_worker_stopping = False


def _worker(index: int, k: int, threads: int, share: list, runs_dir: str, force: bool, resumable: bool,
            checkpoint_every_s: float, reports) -> None:
    """One worker process of ``run_workers`` (before any torch import: the thread count)."""
    from benchmark.run.threads import JOBS_PER_DEVICE_ENV, THREADS_ENV

    os.environ.update({THREADS_ENV: str(threads), "OMP_NUM_THREADS": str(threads), JOBS_PER_DEVICE_ENV: str(k)})
    sig = _checkpoint_signal() if resumable else None
    if sig is not None:
        def stop():
            raise SystemExit(WORKER_INTERRUPTED)

        def handler(signum, frame):
            global _worker_stopping
            if _worker_stopping:
                return
            _worker_stopping = True
            import sys

            train = sys.modules.get("benchmark.run.train")
            current = train.Checkpointing.current if train is not None else None
            name = signal.Signals(signum).name
            if current is None:
                print(f"worker {index} (pid {os.getpid()}): signal {name}: no training running, stopping now",
                      flush=True)
                stop()
            print(f"worker {index} (pid {os.getpid()}): signal {name}: saving the training state at the end of "
                  "this epoch, then stopping", flush=True)
            current.defer(stop)

        signal.signal(sig, handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
    print(f"worker {index} of {k} (pid {os.getpid()}, {threads} torch thread(s)): {len(share)} job(s)", flush=True)
    JobBatch(share, runs_dir, force, resumable, checkpoint_every_s=checkpoint_every_s).run_here(
        share, report=lambda key, status: reports.put((key, status)))


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
    progress = run_dir / STATE_DIR / PROGRESS_FILE
    if progress.is_file() and not (run_dir / RESULT_FILE).is_file():
        try:
            saved = json.loads(progress.read_text())
            where = f"epoch {saved['epoch']}" if spec.training_config.budget_spec.form == "epochs" \
                else f"step {saved['step']}"
        except (OSError, ValueError, KeyError):
            return
        print(f"resuming {spec.name} ({spec.key}) from its state after {where}", flush=True)
