"""Following a grid's SLURM jobs: the ``--status`` report (returned as text), waiting until they end, cancelling
them."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path

from benchmark.core.errors import UserError
from benchmark.execute.slurm.manifest import Manifest, slurm_command
from benchmark.execute.slurm.state import STATUS_ORDER, GridState, grid_state
from benchmark.run import run_dir as rd
from benchmark.run.run_dir import ERROR_FILE

POLL_S = float(os.environ.get("GENMED_SLURM_POLL_S", "10"))


def status_report(state: GridState) -> str:
    """The ``--status`` text: what was submitted, per-stage counts, the collector, where to look for each problem."""
    entries = Manifest(state.out_dir).entries()
    times = sorted({e["submitted_at"] for e in entries})
    head = (f"SLURM: {len(entries)} submitted job(s) in {len(times)} submission(s), last {times[-1]} "
            f"({Manifest(state.out_dir).path})" if entries else
            f"SLURM: nothing submitted for this grid yet (no {Manifest(state.out_dir).path})")
    lines = [head] + ([f"note: {state.note}"] if state.note else [])
    for stage in ("generator", "classifier"):
        stage_jobs = [s for s in state.jobs if s.stage == stage]
        if not stage_jobs:
            continue
        counts = state.counts(stage)
        shown = [s for s in STATUS_ORDER if counts.get(s) or s in ("done", "running", "pending", "failed")]
        lines.append(f"  {stage:<11}{len(stage_jobs):>6} jobs: " + ", ".join(f"{counts.get(s, 0)} {s}" for s in shown))
    collector = state.collector()
    if collector:
        lines.append(f"  {'collector':<11} SLURM job {collector[0]}: {collector[1]}")
    problems = [s for s in state.jobs if state.status[s.key] in ("failed", "blocked", "corrupt")]
    for spec in problems[:10]:
        lines.append(f"  {state.status[spec.key]:<8} {spec.name}  {_problem(state, spec)}")
    if len(problems) > 10:
        lines.append(f"  ... and {len(problems) - 10} more")
    if problems:
        lines.append("  resubmit them with --retry-failed")
    return "\n".join(lines)


def _problem(state: GridState, spec) -> str:
    """Where to look for one failed, blocked or corrupt job."""
    run_dir = state.runs_dir / spec.key
    if state.status[spec.key] == "corrupt":
        return f"{rd.corrupt_reason(run_dir)} (resubmitted by the next submission)"
    blocked = state.blocked_by.get(spec.key)
    if blocked is None and state.status[spec.key] == "blocked" and rd.status(run_dir, probe_lock=False) == "blocked":
        try:
            found = json.loads((run_dir / ERROR_FILE).read_text())["blocked_by"]
            blocked = (found["slurm_job_id"], found["slurm_state"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    if blocked:
        return f"by its dependency, SLURM job {blocked[0]} ({blocked[1]}); see {run_dir / ERROR_FILE}"
    if state.status[spec.key] == "blocked":
        return f"by its generator job; see {state.runs_dir / spec.generator_key / ERROR_FILE}"
    return f"see {run_dir / ERROR_FILE}"


def wait(jobs: list, out_dir: Path, poll_s: float = POLL_S) -> GridState:
    """Block until none of the grid's SLURM jobs (collector included) is queued or running; a progress bar counts
    finished jobs. Ctrl-C stops waiting, never the jobs."""
    from tqdm.auto import tqdm

    state = grid_state(jobs, out_dir)
    with tqdm(total=len(jobs), desc="jobs done", unit="job", dynamic_ncols=True) as bar:
        while True:
            if not state.reachable:
                raise UserError(f"{state.note}; cannot wait.")
            counts = Counter(state.status.values())
            bar.n = counts.get("done", 0)
            bar.set_postfix_str(", ".join(f"{counts[s]} {s}" for s in ("running", "pending", "failed") if counts[s]))
            bar.refresh()
            if not state.active_job_ids():
                return state
            time.sleep(poll_s)
            state = grid_state(jobs, out_dir)


def cancel(state: GridState) -> list[str]:
    """scancel every queued or running SLURM job of the grid (whole arrays); returns the ids cancelled."""
    ids = sorted({j.split("_")[0] for j in state.active_job_ids()}, key=int)
    if ids:
        proc = slurm_command(["scancel", *ids])
        if proc.returncode != 0:
            raise UserError(f"scancel {' '.join(ids)} failed: {proc.stderr.strip()}")
    return ids
