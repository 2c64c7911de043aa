"""Planning a grid run before anything starts: data presence, rarity feasibility, job statuses and the job table."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from benchmark.data import dataset_source
from benchmark.errors import UserError
from benchmark import run_dir as rd
from benchmark.specs import JobSpec


def check_data(jobs: list[JobSpec], download: bool = False) -> list[str]:
    """One line per (dataset, size): present (path, content hash, train class counts) or will download (its jobs
    get their keys after the download). Where the data is on disk (or after downloading, with `download`), every
    job's rarity is checked (inside the fold's training part for cross-validated jobs) and every generative job's
    synthetic ratio against its generator's bank; problems raise one UserError (benchmark.identity)."""
    from benchmark.identity import data_lines

    lines = data_lines(jobs, download)
    if download:
        check_generator_configs(jobs)
    return lines


def resolve_jobs(jobs: list, download: bool = False) -> list:
    """`jobs` keyed from their data (content hash, resolved rarity): benchmark.identity.resolve_jobs. With
    `download`, missing data is downloaded first, so every returned job has its final key."""
    from benchmark.identity import resolve_jobs as resolve

    return resolve(jobs, download)


def stale_jobs(jobs: list, runs_dir: Path, status: dict | None = None) -> dict[str, str]:
    """{key: reason} of jobs not done whose name has a finished result under another key (benchmark.identity)."""
    from benchmark.identity import stale_jobs as find

    return find(jobs, runs_dir, status)


def check_generator_configs(jobs: list) -> None:
    """Build every generative method once with its registry config (no training) so that a bad config — an
    unknown sampler, a negative guidance scale, a typo in a key — stops the run before any job starts."""
    from benchmark import registry
    from benchmark.generators._common import check_audit_extractor

    seen = set()
    for spec in jobs:
        if getattr(spec, "stage", "") != "classifier" or not spec.is_generative:
            continue
        marker = (spec.generator, spec.dataset, spec.image_size)
        if marker in seen:
            continue
        seen.add(marker)
        entry = registry.get("generator", spec.generator)
        source = dataset_source(spec.dataset)
        channels = getattr(source, "info", {}).get("n_channels", 1)
        try:
            registry.create("generator", entry, num_classes=source.num_classes or 2,
                            image_shape=(channels, spec.image_size, spec.image_size))
            check_audit_extractor(entry.config.get("audit_extractor"))
        except UserError as exc:
            raise UserError(f"generator {spec.generator!r} ({entry.source}): {exc} Nothing was started.") from None


def statuses(jobs: list, runs_dir: Path) -> dict[str, str]:
    """Per job, from its run folder (benchmark.run_dir.status): done, pending, failed, corrupt (a result.json that
    does not parse or lacks required fields; re-run), running (another process holds its lock) or blocked (SLURM
    cancelled it for a failed dependency). A classifier job whose generator job failed is 'blocked'; one whose
    generator is running or pending stays 'pending', whatever old error files say."""
    status = {spec.key: rd.status(runs_dir / spec.key) for spec in jobs}
    for spec in jobs:
        generator_key = getattr(spec, "generator_key", None)
        if generator_key and status[spec.key] in (rd.PENDING, rd.FAILED, rd.BLOCKED):
            generator = status.get(generator_key) or rd.status(runs_dir / generator_key)
            if generator == rd.FAILED:
                status[spec.key] = rd.BLOCKED
    return status


def job_table(jobs: list[JobSpec], status: dict[str, str], limit: int | None = None,
              stale: dict[str, str] | None = None) -> str:
    """The dry-run table. A job whose data is still to be downloaded shows no key ('after download'); a pending
    job with a finished result under an old key of its name (`stale`, from stale_jobs) shows 'stale (why)'."""
    stale = stale or {}

    def row(spec):
        if not spec.is_resolved:
            return spec.name, "after download", f"{status[spec.key]} (key after download)"
        state = status[spec.key]
        return spec.name, spec.key, f"stale ({stale[spec.key]})" if spec.key in stale and state == "pending" \
            else state

    rows = [row(spec) for spec in jobs]
    shown = rows if limit is None else rows[:limit]
    width = max((len(r[0]) for r in shown), default=4)
    lines = [f"{'name':<{width}}  {'key':<16}  status", f"{'-' * width}  {'-' * 16}  ------"]
    lines += [f"{name:<{width}}  {key:<16}  {st}" for name, key, st in shown]
    if limit is not None and len(rows) > limit:
        lines.append(f"... and {len(rows) - limit} more (use --only to filter)")
    return "\n".join(lines)


STATES = ("done", "running", "pending", "stale", "failed", "blocked", "corrupt")


def summary_line(jobs: list, status: dict[str, str], stale: dict[str, str] | None = None) -> str:
    """e.g. '4 generator jobs: 4 done, …; 36 classifier jobs: 30 done, 6 pending, 0 failed'. With `stale`, pending
    jobs with an old result under another key are counted as 'stale' (they run again like pending ones)."""
    stale = stale or {}
    parts = []
    for stage in ("generator", "classifier"):
        stage_jobs = [spec for spec in jobs if spec.stage == stage]
        if not stage_jobs and stage == "generator":
            continue
        counts = Counter("stale" if spec.key in stale and status[spec.key] == "pending" else status[spec.key]
                         for spec in stage_jobs)
        shown = [s for s in STATES if s in ("done", "pending", "failed") or counts.get(s)]
        parts.append(f"{len(stage_jobs)} {stage} jobs: " + ", ".join(f"{counts.get(s, 0)} {s}" for s in shown))
    return "; ".join(parts)
