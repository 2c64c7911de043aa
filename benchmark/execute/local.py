"""The local executor: packs of jobs in worker processes through submitit's LocalExecutor; Ctrl-C (or SIGTERM /
SIGHUP to the launcher) stops the workers, and finished results stay."""

from __future__ import annotations

import time
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
    executor = submitit.LocalExecutor(folder=str(logs_dir))
    executor.update_parameters(timeout_min=timeout_min)
    pending = list(batches)
    running: list[tuple] = []
    statuses: dict[str, str] = {}
    finished_keys: set[str] = set()
    with _progress_bar(len(jobs), "jobs") as bar:
        try:
            _drive(executor, pending, running, statuses, finished_keys, bar, runs_dir, logs_dir, force, parallel)
        except KeyboardInterrupt:
            stop_workers([job for job, _, _ in running])
            print("interrupted: running workers were stopped; finished results are kept")
            raise
    return statuses


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


def _drive(executor, pending, running, statuses, finished_keys, bar, runs_dir, logs_dir, force, parallel):
    from benchmark.run.batch import JobBatch

    while pending or running:
        while pending and len(running) < parallel:
            batch = pending.pop(0)
            task = JobBatch([s.to_dict() for s in batch], str(runs_dir), force)
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
