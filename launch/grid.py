"""Expand a grid into jobs and run them: `python launch/grid.py --grid rare_sweep --profile smoke`."""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmark.errors import exits_on_user_error  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Expand a grid (registry/grids/NAME.yaml or a path) into classifier jobs, check the data, and "
                    "run the jobs that are not done yet. Finished jobs (result.json) are never re-run without "
                    "--force; failed ones are retried on the next run.",
        epilog="Example: python launch/grid.py --grid rare_sweep --profile smoke --dry-run")
    parser.add_argument("--grid", help="grid name (see --list) or path to a grid YAML")
    parser.add_argument("--profile", help="named profile of the grid, e.g. smoke")
    parser.add_argument("--list", action="store_true", help="print registered datasets, generators, backbones, grids")
    parser.add_argument("--dry-run", action="store_true", help="print the job table and counts; run nothing")
    parser.add_argument("--executor", default="auto", choices=["auto", "local", "debug", "slurm"],
                        help="auto: slurm when a cluster answers, else local worker processes; debug: in-process")
    parser.add_argument("--only", metavar="PATTERN", help="only jobs whose name or key matches (glob or substring)")
    parser.add_argument("--force", action="store_true", help="re-run jobs even if done (results are replaced "
                        "only by a successful run)")
    parser.add_argument("--results", help="results root (default: $GENMED_RESULTS_DIR or ./results)")
    parser.add_argument("--parallel", type=int, default=1, help="local worker processes (default 1)")
    parser.add_argument("--runs-per-task", type=int, help="jobs run one after another in one worker process "
                        "(default: all of a worker's share)")
    parser.add_argument("--table-rows", type=int, default=50, help="rows of the dry-run job table (default 50)")
    return parser.parse_args(argv)


@exits_on_user_error
def main(argv=None):
    args = parse_args(argv)
    from benchmark import grid as grids, plan, registry

    if args.list:
        for kind in registry.KINDS:
            print(f"{kind}s: {', '.join(registry.list_entries(kind))}")
        return 0
    if not args.grid:
        raise grids.UserError("--grid is required (a name from --list, or a path to a grid YAML).")
    grid = grids.load_grid(args.grid, args.profile)
    classifier_jobs = grids.filter_jobs(grids.expand(grid), args.only)
    generator_jobs = grids.generator_jobs(classifier_jobs)
    jobs = generator_jobs + classifier_jobs
    out_dir = plan.results_root(args.results) / grid.label
    runs_dir = out_dir / "runs"
    for line in plan.check_data(jobs):
        print(f"data  {line}")
    status = plan.statuses(jobs, runs_dir)
    if args.dry_run:
        print(plan.job_table(jobs, status, args.table_rows))
        print(plan.summary_line(jobs, status))
        return 0
    plan.check_data(jobs, download=True)
    todo = [j for j in jobs if args.force or status[j.key] != "done"]
    print(f"{plan.summary_line(jobs, status)}; running {len(todo)}")
    from benchmark import executors

    executor = executors.resolve_executor(args.executor)
    if executor == "slurm":
        raise grids.UserError("--executor slurm is not available yet in this version; use local or debug.")
    executors.run_stages([j for j in todo if j.stage == "generator"], [j for j in todo if j.stage == "classifier"],
                         runs_dir, executor, out_dir / "logs", force=args.force, parallel=args.parallel,
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
