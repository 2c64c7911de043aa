"""The debug executor: every job in this process, one after another (breakpoints work)."""

from __future__ import annotations

from benchmark.execute.base import Executor, _progress_bar
from benchmark.run.job import execute


class DebugExecutor(Executor):
    name = "debug"

    def run(self, jobs: list) -> dict[str, str]:
        """Every job in this process, one after another."""
        statuses = {}
        with _progress_bar(len(jobs), "jobs") as bar:
            for spec in jobs:
                bar.set_postfix_str(spec.name, refresh=True)
                statuses[spec.key] = execute(spec, self.runs_dir / spec.key, force=self.force)
                bar.update(1)
        return statuses
