"""Executors: run a list of jobs in-process (debug) or in worker processes through submitit (local)."""

from __future__ import annotations

import time
from pathlib import Path

from benchmark.core import status as job_status
from benchmark.core.errors import UserError
from benchmark.core.specs import JobSpec
from benchmark.run import run_dir as rd
from benchmark.run.job import execute

EXECUTORS = ("auto", "local", "debug", "slurm")
POLL_SECONDS = 1.0


def pack(jobs: list[JobSpec], runs_per_task: int | None, parallel: int = 1) -> list[list[JobSpec]]:
    """The jobs in packs, each run by one process: a local worker or a SLURM array task. Without `runs_per_task`
    (the local default): one pack per worker, dealt round-robin, so that each worker gets its share of every kind of
    job (a grid lists its jobs by method: contiguous shares would give one worker all the long generator fits). With
    it (always on SLURM: 1 unless --runs-per-task): packs of that many consecutive jobs, taken as workers or array
    tasks become free."""
    if not runs_per_task:
        parallel = max(1, min(parallel, len(jobs)))
        return [jobs[i::parallel] for i in range(parallel)]
    return [jobs[i:i + runs_per_task] for i in range(0, len(jobs), runs_per_task)]


def resolve_executor(name: str) -> str:
    if name not in EXECUTORS:
        raise UserError(f"Unknown executor {name!r}. Available: {', '.join(EXECUTORS)}.")
    if name == "auto":
        try:
            from benchmark.execute.slurm.reachable import slurm_available
        except ImportError:
            return "local"
        available, reason = slurm_available()
        if not available and reason:
            print(f"note: {reason}; running locally.")
        return "slurm" if available else "local"
    return name


def run_stages(generator_jobs: list, classifier_jobs: list, runs_dir: Path, executor: str, logs_dir: Path,
               force: bool = False, parallel: int = 1, runs_per_task: int | None = None) -> None:
    """Generator jobs first; then the classifier jobs whose generator job is done (the rest wait, or are blocked
    when it failed: core.status)."""
    def run(jobs, desc):
        if not jobs:
            return
        print(f"{desc}: {len(jobs)} jobs")
        if executor == "debug":
            run_debug(jobs, runs_dir, force=force)
        else:
            run_local(jobs, runs_dir, logs_dir, force=force, parallel=parallel, runs_per_task=runs_per_task)

    run(generator_jobs, "generator stage")
    generators = {j.generator_key: rd.status(runs_dir / j.generator_key) for j in classifier_jobs if j.generator_key}
    ready = [j for j in classifier_jobs if job_status.ready(generators.get(j.generator_key))]
    for spec in classifier_jobs:
        if not job_status.ready(generators.get(spec.generator_key)):
            print(job_status.waiting_line(spec.name, spec.generator_key, generators[spec.generator_key]))
    run(ready, "classifier stage")


def _progress_bar(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="job", dynamic_ncols=True)


def run_debug(jobs: list[JobSpec], runs_dir: Path, force: bool = False) -> dict:
    """Every job in this process, one after another (breakpoints work)."""
    statuses = {}
    with _progress_bar(len(jobs), "jobs") as bar:
        for spec in jobs:
            bar.set_postfix_str(spec.name, refresh=True)
            statuses[spec.key] = execute(spec, runs_dir / spec.key, force=force)
            bar.update(1)
    return statuses


def run_local(jobs: list[JobSpec], runs_dir: Path, logs_dir: Path, force: bool = False, parallel: int = 1,
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
