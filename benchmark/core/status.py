"""Job statuses, in one place: their names, the order tables show them in, and the one rule that makes a
classifier job 'blocked' (its generator job failed) rather than waiting (its generator job is not done yet)."""

from __future__ import annotations

DONE = "done"              # a valid result.json: never re-run (unless --force)
RUNNING = "running"        # another process holds the job's lock (or SLURM runs it)
PENDING = "pending"        # to run (locally), or queued in SLURM; a classifier job waiting for its generator too
STALE = "stale"            # pending, with a finished result under an old key of the same name (the table's word)
FAILED = "failed"          # error.json: the last attempt failed; the next run retries it
BLOCKED = "blocked"        # cannot run: its generator job failed, or SLURM cancelled it for a failed dependency
CORRUPT = "corrupt"        # a result.json that does not parse or lacks a required field; moved aside and re-run
NOT_SUBMITTED = "not submitted"  # SLURM: never submitted from this results folder
UNKNOWN = "unknown"              # SLURM: submitted, but SLURM cannot be asked now

ORDER = (DONE, RUNNING, PENDING, STALE, FAILED, BLOCKED, CORRUPT, NOT_SUBMITTED, UNKNOWN)  # every table's order
ALWAYS_SHOWN = (DONE, PENDING, FAILED)  # summary lines show these counts even at 0
PROBLEMS = (FAILED, BLOCKED, CORRUPT)   # what a status report explains, job by job
UNFINISHED = (PENDING, FAILED, BLOCKED, NOT_SUBMITTED, UNKNOWN)  # not done and nothing is working on it


def with_generator(own: str, generator: str | None, queued: bool = False) -> str:
    """The one 'blocked' rule: a classifier job that is unfinished while its generator job has failed is blocked;
    while the generator job is pending or running, the classifier job keeps its own status (it waits). A job
    `queued` in SLURM keeps the status SLURM gives it (SLURM cancels it when its dependency fails)."""
    if generator == FAILED and own in UNFINISHED and not queued:
        return BLOCKED
    return own


def ready(generator: str | None) -> bool:
    """A classifier job may start when it has no generator job or its generator job is done."""
    return generator is None or generator == DONE


def waiting_line(name: str, generator_key: str, generator: str) -> str:
    """What a launcher prints for a classifier job it does not start this time."""
    if generator == FAILED:
        return f"{BLOCKED}  {name}  by failed generator job {generator_key}"
    return f"waiting  {name}  for generator job {generator_key} ({generator})"
