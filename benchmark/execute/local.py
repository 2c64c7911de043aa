"""The local executor: packs of jobs in worker processes through submitit's LocalExecutor, each worker with the
torch threads of the machine's core slots it could claim (benchmark.run.threads); Ctrl-C (or SIGTERM / SIGHUP to
the launcher) stops the workers, and finished results stay."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmark.execute.base import Executor, _progress_bar
from benchmark.execute.packing import pack
from benchmark.run import run_dir as rd

POLL_SECONDS = 1.0


class LocalExecutor(Executor):
    name = "local"

    def run(self, jobs: list) -> dict[str, str]:
        return run_local(jobs, self.runs_dir, self.logs_dir, force=self.force, parallel=self.parallel,
                         runs_per_task=self.runs_per_task)


def run_local(jobs: list, runs_dir: Path, logs_dir: Path, force: bool = False, parallel: int = 1,
              runs_per_task: int | None = None, timeout_min: int = 24 * 60) -> dict:
    """Jobs in `parallel` worker processes via submitit's LocalExecutor. Each worker runs a pack of jobs, so torch
    and the dataset are loaded once per pack; progress is read from the run folders as jobs finish."""
    import submitit

    if not jobs:
        return {}
    batches = pack(jobs, runs_per_task, parallel)
    wanted = check_cores(parallel)
    executor = submitit.LocalExecutor(folder=str(logs_dir))
    executor.update_parameters(timeout_min=timeout_min)
    pending = list(batches)
    running: list[tuple] = []
    statuses: dict[str, str] = {}
    finished_keys: set[str] = set()
    with _progress_bar(len(jobs), "jobs") as bar:
        try:
            _drive(executor, pending, running, statuses, finished_keys, bar, runs_dir, logs_dir, force, parallel,
                   wanted)
        except KeyboardInterrupt:
            stop_workers([job for job, _, _ in running])
            print("interrupted: running workers were stopped; finished results are kept")
            raise
    return statuses


def check_cores(parallel: int) -> int:
    """The torch threads each of `parallel` workers asks for ($GENMED_TORCH_THREADS, else its share of the cores),
    after a loud warning on the launcher's terminal when the machine's free core slots cannot give them all that
    (other launchers' workers hold them). Raises UserError for a registry folder that is not safe to use."""
    from benchmark.run import threads

    wanted = threads.requested_threads(parallel)
    state = threads.free_slots()
    if state.folder is not None and len(state.slots) < wanted * parallel:
        print(f"WARNING: only {len(state.slots)} of this machine's {state.total} core slots are free (held by "
              f"{', '.join(sorted(set(state.busy))[:6])}; registry {state.folder}): these {parallel} worker(s) "
              f"wanted {wanted} torch thread(s) each and will get what is free, at least 1 each, so training may "
              f"be slow and its images/s lower. Run fewer workers at once (--parallel N in each launcher), or set "
              f"{threads.THREADS_ENV}=N with {threads.SLOTS_ENV}=0 to choose the threads yourself.", file=sys.stderr)
    return wanted


@dataclass
class ClaimingTask:
    """A local worker's task: claims up to `wanted` of the machine's core slots for the worker's lifetime
    (benchmark.run.threads.claim_cores), runs `task` with that many torch threads (1, with a warning in the
    worker's log, when none is free) and notes them and `workers` (--parallel) for the records (cpu_usage)."""

    task: object
    wanted: int
    workers: int = 1

    def __call__(self):
        from benchmark.run import threads

        with threads.claim_cores(self.wanted) as claim:
            count = str(claim.threads)
            os.environ.update({threads.THREADS_ENV: count, "OMP_NUM_THREADS": count,
                               threads.WORKERS_ENV: str(self.workers),
                               threads.CLAIMED_ENV: str(len(claim.slots)) if claim.folder is not None else ""})
            message = claim.warning()
            if message:
                print(message, file=sys.stderr, flush=True)
            print(f"worker pid {os.getpid()}: {count} torch thread(s), core slots {claim.slots}", flush=True)
            return self.task()

    def checkpoint(self, *args, **kwargs):
        """submitit's pre-timeout requeue: the task's own resubmission (JobBatch.checkpoint), claiming again."""
        delayed = self.task.checkpoint(*args, **kwargs)
        delayed.function = ClaimingTask(delayed.function, self.wanted, self.workers)
        return delayed


def stop_workers(jobs, grace_s: float = 20.0) -> None:
    """End submitit local workers as Ctrl-C does and wait until they are gone: SIGINT to each worker's controller,
    which interrupts its task (KeyboardInterrupt in the job: no error.json, the run folder's lock released) and
    then kills it; a controller still alive after `grace_s` is killed. Only the workers' own processes are
    signalled. (A launcher started in the background by a non-interactive shell passes SIGINT on as ignored: then
    the workers' processes are killed after `grace_s`, the controller's task processes included.)"""
    import psutil

    tree = []  # every process of the workers, found before they start to exit
    for job in jobs:
        process = getattr(job, "_process", None)  # submitit.local.LocalJob's controller (a subprocess.Popen)
        if process is not None and process.poll() is None:
            try:
                controller = psutil.Process(process.pid)
                tree += [controller, *controller.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        job.cancel(check=False)
    _, alive = psutil.wait_procs(tree, timeout=grace_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    for job in jobs:  # reap the controllers (no zombies left behind)
        process = getattr(job, "_process", None)
        if process is not None:
            try:
                process.wait(timeout=5)
            except Exception:  # noqa: BLE001 - subprocess.TimeoutExpired
                pass


def _drive(executor, pending, running, statuses, finished_keys, bar, runs_dir, logs_dir, force, parallel,
                   wanted):
    from benchmark.run.batch import JobBatch

    while pending or running:
        while pending and len(running) < parallel:
            batch = pending.pop(0)
            task = ClaimingTask(JobBatch([s.to_dict() for s in batch], str(runs_dir), force), wanted, parallel)
            running.append((executor.submit(task), batch, time.time() - 1))
        time.sleep(POLL_SECONDS)
        still_running = []
        for job, batch, submitted_at in running:
            for spec in batch:
                if spec.key not in finished_keys and _written_since(runs_dir / spec.key, submitted_at):
                    finished_keys.add(spec.key)
                    bar.update(1)
            if job.done():
                try:
                    statuses.update(job.result())
                except Exception as exc:  # a worker that died (killed, out of memory): its jobs stay pending
                    for spec in batch:
                        statuses.setdefault(spec.key, rd.status(runs_dir / spec.key))
                    print(f"warning: worker {job.job_id} ended abnormally ({type(exc).__name__}); "
                          f"see {logs_dir / str(job.job_id)}")
                for spec in batch:
                    if spec.key not in finished_keys:
                        finished_keys.add(spec.key)
                        bar.update(1)
            else:
                still_running.append((job, batch, submitted_at))
        running[:] = still_running


def _written_since(run_dir: Path, since: float) -> bool:
    """A result or error file written after `since` (older files are from earlier runs)."""
    for name in (rd.RESULT_FILE, rd.ERROR_FILE):
        path = run_dir / name
        if path.is_file() and path.stat().st_mtime >= since:
            return True
    return False
