"""Expand a grid into jobs and run them: `python launch/grid.py --grid rare_sweep --profile smoke`."""

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmark.errors import exits_on_user_error  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Expand a grid (registry/grids/NAME.yaml or a path) into jobs, check the data, and run (or "
                    "submit to SLURM) the jobs that are not done yet. Finished jobs (result.json) are never re-run "
                    "without --force; failed ones are retried on the next local run, on SLURM with --retry-failed.",
        epilog="Example: python launch/grid.py --grid rare_sweep --profile smoke --dry-run")
    add = parser.add_argument
    add("--grid", help="grid name (see --list) or path to a grid YAML")
    add("--profile", help="named profile of the grid, e.g. smoke")
    add("--list", action="store_true", help="print registered datasets, generators, backbones, grids")
    add("--dry-run", action="store_true", help="print the job table and counts; run nothing")
    add("--executor", default="auto", choices=["auto", "local", "debug", "slurm"],
        help="auto: slurm when a cluster answers, else local worker processes; debug: in-process")
    add("--only", metavar="PATTERN", help="only jobs whose name or key matches (glob or substring)")
    add("--force", action="store_true", help="re-run jobs even if done (results are replaced only by a success)")
    add("--results", help="results root (default: $GENMED_RESULTS_DIR or ./results)")
    add("--parallel", type=int, help="local worker processes (default: one per CPU core, each with one torch "
        "thread per core it owns)")
    add("--runs-per-task", type=int, help="jobs run one after another in one process: a local worker or a SLURM "
        "array task (default: local, all of a worker's share; SLURM, 1)")
    add("--table-rows", type=int, default=50, help="rows of the dry-run job table (default 50)")
    add("--retry-failed", action="store_true", help="run only failed jobs and those their failed generator blocked")
    slurm = parser.add_argument_group("SLURM (see README: Running on a SLURM cluster)")
    slurm.add_argument("--cluster-profile", action="append", metavar="[STAGE=]NAME",
                       help="cluster profile (slurm/*.yaml) for every stage, or STAGE=NAME for one of generator, "
                            "classifier, collector (collector=none: no collector job); default: local-cpu on the "
                            "local test cluster, else the grid's stages:")
    slurm.add_argument("--status", action="store_true", help="per-stage counts from SLURM and the result files")
    slurm.add_argument("--wait", action="store_true", help="block with a progress bar until the grid's SLURM jobs "
                       "end (after submitting what is not submitted yet, unless with --status)")
    slurm.add_argument("--cancel", action="store_true", help="scancel the grid's queued and running SLURM jobs")
    return parser.parse_args(argv)


@exits_on_user_error
def main(argv=None):
    args = parse_args(argv)
    from benchmark import grid as grids, plan, registry, slurm_executor as slurm

    if args.list:
        for kind in registry.KINDS:
            print(f"{kind}s: {', '.join(registry.list_entries(kind))}")
        return 0
    if not args.grid:
        raise grids.UserError("--grid is required (a name from --list, or a path to a grid YAML).")
    grid = grids.load_grid(args.grid, args.profile)
    classifier_jobs = grids.filter_jobs(grids.expand(grid), args.only)
    jobs = grids.generator_jobs(classifier_jobs) + classifier_jobs
    results_root = plan.results_root(args.results)
    out_dir = results_root / grid.label
    runs_dir = out_dir / "runs"
    if args.status or args.cancel:
        return slurm.follow_up(jobs, out_dir, status=args.status, wait_for=args.wait, cancel_jobs=args.cancel)
    for line in plan.check_data(jobs):
        print(f"data  {line}")
    status = plan.statuses(jobs, runs_dir)
    if args.dry_run:
        print(plan.job_table(jobs, status, args.table_rows))
        print(plan.summary_line(jobs, status))
        return 0
    plan.check_data(jobs, download=True)
    from benchmark import executors

    executor = executors.resolve_executor(args.executor)
    if executor == "slurm":
        return slurm.run(grid, args.grid, jobs, out_dir, results_root, args.cluster_profile, args.runs_per_task,
                         args.force, args.retry_failed, args.wait)
    if args.cluster_profile or args.wait:
        raise grids.UserError(f"--cluster-profile and --wait need SLURM, but the executor is {executor}.")
    wanted = ("failed", "blocked") if args.retry_failed else ("pending", "failed", "blocked")
    todo = [j for j in jobs if args.force or status[j.key] in wanted]
    print(f"{plan.summary_line(jobs, status)}; running {len(todo)}")
    from benchmark.threads import THREADS_ENV, cpu_count, threads_per_worker

    parallel = args.parallel or (1 if executor == "debug" else cpu_count())
    os.environ.setdefault(THREADS_ENV, str(threads_per_worker(parallel)))
    executors.run_stages([j for j in todo if j.stage == "generator"], [j for j in todo if j.stage == "classifier"],
                         runs_dir, executor, out_dir / "logs", force=args.force, parallel=parallel,
                         runs_per_task=args.runs_per_task)
    final = plan.statuses(jobs, runs_dir)
    print(plan.summary_line(jobs, final))
    failed = [j for j in jobs if final[j.key] in ("failed", "blocked")]
    for spec in failed:
        print(f"{final[spec.key]}  {spec.name}  see {runs_dir / (getattr(spec, 'generator_key', None) or spec.key)}"
              "/error.json")
    profile = f" --profile {grid.profile}" if grid.profile else ""
    print(f"results: {runs_dir}\nnext: python launch/collect.py --grid {args.grid}{profile}"
          f" → {out_dir / 'leaderboard.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
