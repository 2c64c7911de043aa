"""The executor interface: how a list of planned jobs runs. A backend subclasses `Executor` in its own module of
benchmark/execute/ and registers its name in benchmark/execute/__init__.py (EXECUTORS); docs/extending.md."""

from __future__ import annotations

from pathlib import Path

from benchmark.core import status as job_status
from benchmark.run import run_dir as rd


class Executor:
    """Runs jobs into their run folders (``runs_dir/<key>``). Subclasses implement :meth:`run`; :meth:`run_stages`
    runs the generator stage, then the classifier jobs whose generator job is done (the rest wait, or are blocked
    when it failed: core.status)."""

    name = ""

    def __init__(self, runs_dir: Path, logs_dir: Path, force: bool = False, parallel: int = 1,
                 runs_per_task: int | None = None):
        self.runs_dir, self.logs_dir = Path(runs_dir), Path(logs_dir)
        self.force, self.parallel, self.runs_per_task = force, max(1, int(parallel)), runs_per_task

    def run(self, jobs: list) -> dict[str, str]:
        """Run `jobs` and return {key: what the job returned (done, failed, running elsewhere …)}."""
        raise NotImplementedError

    def run_stages(self, generator_jobs: list, classifier_jobs: list) -> None:
        if generator_jobs:
            print(f"generator stage: {len(generator_jobs)} jobs")
            self.run(generator_jobs)
        generators = {j.generator_key: rd.status(self.runs_dir / j.generator_key)
                      for j in classifier_jobs if j.generator_key}
        ready = [j for j in classifier_jobs if job_status.ready(generators.get(j.generator_key))]
        for spec in classifier_jobs:
            if not job_status.ready(generators.get(spec.generator_key)):
                print(job_status.waiting_line(spec.name, spec.generator_key, generators[spec.generator_key]))
        if ready:
            print(f"classifier stage: {len(ready)} jobs")
            self.run(ready)


def _progress_bar(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="job", dynamic_ncols=True)
