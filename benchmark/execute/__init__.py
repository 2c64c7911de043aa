"""Executing planned jobs. Each backend is an `Executor` (execute/base.py) in its own module: `debug` (in this
process) and `local` (worker processes through submitit); SLURM (execute/slurm/) submits stage arrays with
dependencies and returns, and is followed with --status / --wait. The one list of executor names is here; a new backend adds itself to EXECUTORS."""

from __future__ import annotations

# Executors that run the jobs and return when they are done: name -> "module:attr" of the Executor class,
# imported only when chosen (nothing heavy on the dry-run path).
EXECUTORS = {
    "debug": "benchmark.execute.debug:DebugExecutor",
    "local": "benchmark.execute.local:LocalExecutor",
}
SLURM = "slurm"  # submits stage arrays and returns (execute/slurm/submit.py); followed with --status/--wait/--cancel
AUTO = "auto"    # SLURM when a cluster answers, else local
CHOICES = (AUTO, *EXECUTORS, SLURM)


def resolve_executor(name: str) -> str:
    """`name`, or for 'auto' the executor it means here; an unknown name is an error listing the choices."""
    from benchmark.core.errors import unknown_name_error

    if name not in CHOICES:
        raise unknown_name_error("executor", name, CHOICES)
    if name != AUTO:
        return name
    from benchmark.execute.slurm.reachable import slurm_available

    available, reason = slurm_available()
    if not available and reason:
        print(f"note: {reason}; running locally.")
    return SLURM if available else "local"


def create_executor(name: str, **options):
    """The Executor registered as `name` (one of EXECUTORS), built with `options`."""
    import importlib

    module, attr = EXECUTORS[name].split(":")
    return getattr(importlib.import_module(module), attr)(**options)
