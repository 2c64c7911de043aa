"""Expand a grid into jobs and run them: `python launch/grid.py --grid rare_sweep --profile smoke`."""

import argparse
import os
import signal
import sys
from pathlib import Path

from benchmark.core.errors import exits_on_user_error
from benchmark.execute import AUTO, CHOICES, EXECUTORS, SLURM
from benchmark.run import run_dir as rd


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (argparse turns the ValueError into 'error: argument …' and exit 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


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
    add("--executor", default=AUTO, choices=CHOICES,
        help="auto: slurm when a cluster answers, else local worker processes; debug: in-process")
    add("--only", metavar="PATTERN", help="only jobs whose name or key matches (glob or substring)")
    add("--force", action="store_true", help="re-run jobs even if done (results are replaced only by a success)")
    add("--results", help=rd.RESULTS_HELP)
    add("--parallel", type=positive_int, help="local worker processes (default: one per CPU core, each with one "
        "torch thread per core it owns)")
    add("--runs-per-task", type=positive_int, help="jobs run one after another in one process: a local worker or a "
        "SLURM array task (default: local, all of a worker's share; SLURM, 1)")
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
    from benchmark.core import registry
    from benchmark.plan import grid as grids
    from benchmark.plan import identity
    from benchmark.plan import table as plan_table
    if args.list:
        for kind in registry.KINDS:
            print(f"{kind}s: {', '.join(registry.list_entries(kind))}")
        return 0
    if not args.grid:
        raise grids.UserError("--grid is required (a name from --list, or a path to a grid YAML).")
    grid = grids.load_grid(args.grid, args.profile)
    left_out: list = []
    classifier_jobs = grids.filter_jobs(grids.expand(grid, left_out=left_out), args.only)
    jobs = grids.generator_jobs(classifier_jobs) + classifier_jobs
    results_root = rd.results_root(args.results)
    out_dir = results_root / grid.label
    prepare_results_folder(args, out_dir)
    runs_dir = out_dir / "runs"
    if args.status or args.cancel:
        return follow_slurm(jobs, out_dir, status=args.status, wait_for=args.wait, cancel_jobs=args.cancel)
    check_inputs(jobs, identity)
    for reason, count in left_out:
        print(f"note  left out: {count} {reason}")
    check_executor_options(args, jobs, grids.UserError)
    status = plan_table.statuses(jobs, runs_dir)
    if args.dry_run:
        stale = identity.stale_jobs(jobs, runs_dir, status)  # pending, with a result under an old key of the same name
        print(plan_table.job_table(jobs, status, args.table_rows, stale))
        print_corrupt(jobs, status, runs_dir)
        from benchmark.plan.cost import estimate

        for line in estimate([j for j in jobs if status[j.key] != "done"], runs_dir):
            print(f"cost  {line}")
        from benchmark.plan.power import power_lines

        for line in power_lines(jobs, runs_dir, grid.margins):
            print(f"power {line}")
        print_memory(args, jobs)
        print(plan_table.summary_line(jobs, status, stale))
        return 0
    jobs = identity.resolve_jobs(jobs, download=True)  # downloads missing data; then every job has its final key
    status = plan_table.statuses(jobs, runs_dir)
    from benchmark.execute import create_executor, resolve_executor

    executor = resolve_executor(args.executor)
    if executor == SLURM:
        return submit_to_slurm(args, grid, jobs, out_dir, results_root)
    if args.cluster_profile or args.wait:
        raise grids.UserError(f"--cluster-profile and --wait need SLURM, but the executor is {executor}.")
    wanted = ("failed", "blocked", "corrupt") if args.retry_failed else ("pending", "failed", "blocked", "corrupt")
    todo = [j for j in jobs if status[j.key] in wanted or (args.force and status[j.key] != "running")]
    print_corrupt(jobs, status, runs_dir)
    print(f"{plan_table.summary_line(jobs, status)}; running {len(todo)}")
    from benchmark.run.threads import THREADS_ENV, cpu_count, threads_per_worker

    parallel = args.parallel or (1 if executor == "debug" else cpu_count())
    os.environ.setdefault(THREADS_ENV, str(threads_per_worker(parallel)))
    try:
        with signals_as_keyboard_interrupt():
            create_executor(executor, runs_dir=runs_dir, logs_dir=out_dir / "logs", force=args.force,
                            parallel=parallel, runs_per_task=args.runs_per_task).run_stages(
                [j for j in todo if j.stage == "generator"], [j for j in todo if j.stage == "classifier"])
    except KeyboardInterrupt as exc:
        signum = exc.args[0] if exc.args and isinstance(exc.args[0], int) else signal.SIGINT
        print(f"stopped by {signal.Signals(signum).name}: {plan_table.summary_line(jobs, plan_table.statuses(jobs, runs_dir))}",
              file=sys.stderr)
        return 128 + int(signum)
    final = plan_table.statuses(jobs, runs_dir)
    print(plan_table.summary_line(jobs, final))
    failed = [j for j in jobs if final[j.key] in ("failed", "blocked")]
    for spec in failed:
        print(f"{final[spec.key]}  {spec.name}  see {runs_dir / (spec.generator_key or spec.key)}"
              "/error.json")
    profile = f" --profile {grid.profile}" if grid.profile else ""
    print(f"results: {runs_dir}\nnext: python launch/collect.py --grid {args.grid}{profile}"
          f" → {out_dir / 'leaderboard.md'}")
    return 1 if failed else 0


def submit_to_slurm(args, grid, jobs: list, out_dir: Path, results_root: Path) -> int:
    """--executor slurm: submit what is not done, queued or running, print what was submitted and how to follow it;
    with --wait block until the grid's SLURM jobs end. Returns the exit code."""
    from benchmark.execute.slurm.profiles import needed_stages, stage_profiles
    from benchmark.execute.slurm.reachable import require_slurm
    from benchmark.execute.slurm.state import STATUS_ORDER
    from benchmark.execute.slurm.submit import collector_command, submit

    # profile mistakes first, even without SLURM
    profiles = stage_profiles(args.grid, args.cluster_profile, needed_stages(jobs))
    require_slurm()
    collect = collector_command(args.grid, grid.profile, results_root)
    submitted, lines = submit(jobs, out_dir, grid.label, profiles, collect, args.runs_per_task or 1, args.force,
                              args.retry_failed)
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(
        submitted.skipped.items(), key=lambda kv: STATUS_ORDER.index(kv[0]) if kv[0] in STATUS_ORDER else 99))
    retry = " (resubmit failed and blocked jobs with --retry-failed)" if not args.retry_failed and (
        submitted.skipped.get("failed") or submitted.skipped.get("blocked")) else ""
    print(f"submitted {submitted.n_jobs} job(s)" + (f"; left alone: {skipped}{retry}" if skipped else ""))
    for line in lines:
        print(f"  {line}")
    if profiles.get("collector") is None and submitted.n_jobs:
        print("  no collector job (no collector profile): run launch/collect.py when the jobs are done")
    if not args.wait:
        follow = f"python launch/grid.py --grid {args.grid}" + (f" --profile {grid.profile}" if grid.profile else "")
        print(f"follow: {follow} --status | --wait | --cancel")
        return 0
    return follow_slurm(jobs, out_dir, wait_for=True)


def follow_slurm(jobs: list, out_dir: Path, status: bool = True, wait_for: bool = False,
                 cancel_jobs: bool = False) -> int:
    """--status / --wait / --cancel of a grid on SLURM (nothing is submitted). Returns the exit code: 1 when a job
    failed or is blocked after waiting, else 0."""
    from benchmark.execute.slurm.follow import cancel, status_report, wait
    from benchmark.execute.slurm.reachable import require_slurm
    from benchmark.execute.slurm.state import grid_state

    if cancel_jobs:
        require_slurm()
        ids = cancel(grid_state(jobs, out_dir, reconcile=False))
        print(f"cancelled SLURM job(s) {', '.join(ids)}" if ids else "nothing of this grid is queued or running")
    if wait_for:
        require_slurm()
        try:
            state = wait(jobs, out_dir)
        except KeyboardInterrupt:
            print("\nstopped waiting; the jobs keep running (--cancel stops them)")
            return 130
    else:
        state = grid_state(jobs, out_dir)
    if status or wait_for:
        print(status_report(state))
    return 1 if wait_for and any(s in ("failed", "blocked") for s in state.status.values()) else 0


def prepare_results_folder(args, out_dir: Path) -> None:
    """Before anything is read or written: the results mode (umask, inherited by every worker; $GENMED_RESULTS_MODE),
    a results path that is a folder, a warning for a grid folder readable beyond that mode, and — unless the
    executor is debug, which writes no job files — a refusal of a logs/ folder others could write to."""
    rd.apply_results_mode()
    check_results_folder(out_dir / "runs", "--results" if args.results else "the results root")
    warning = rd.wider_than_mode(out_dir)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    if args.executor != "debug":
        rd.check_job_files_folder(out_dir / "logs")


def check_inputs(jobs: list, identity) -> None:
    """The data check (one line per dataset and size) and external banks holding what each job needs."""
    from benchmark.plan.checks import check_external_banks

    for line in identity.check_data(jobs):
        print(f"data  {line}")
    check_external_banks(jobs)


def check_results_folder(folder: Path, what: str) -> None:
    """The results folder, or the first of its parents that exists, must be a folder (exit 2 before anything)."""
    from benchmark.core.errors import UserError

    for path in (folder, *folder.parents):
        if path.exists():
            if not path.is_dir():
                raise UserError(f"{what}: {path} is a file, not a folder, so {folder} cannot be created. Pass "
                                "--results with a folder (or set $GENMED_RESULTS_DIR to one).")
            return


def check_executor_options(args, jobs, UserError) -> None:
    """What a real run checks about the executor and its options, so --dry-run fails where the run would: the
    cluster profiles of every stage (unknown names, bad files) whenever --cluster-profile is given or the executor
    is slurm; SLURM-only options with a local executor."""
    if args.executor in EXECUTORS and (args.cluster_profile or args.wait):
        raise UserError(f"--cluster-profile and --wait need SLURM, but the executor is {args.executor}.")
    if args.cluster_profile or args.executor == SLURM:
        from benchmark.execute.slurm.profiles import needed_stages, stage_profiles
        from benchmark.execute.slurm.reachable import require_slurm

        stage_profiles(args.grid, args.cluster_profile, needed_stages(jobs))
        if args.executor == SLURM and args.dry_run:
            require_slurm()


def print_memory(args, jobs: list) -> None:
    """--dry-run's ``memory`` lines (benchmark/plan/memory.py) and, on stderr, a warning when a job would not fit
    the classifier stage's cluster profile (when one resolves) or this machine for the local workers."""
    from benchmark.core.errors import UserError
    from benchmark.plan.memory import machine_bytes, memory_lines
    from benchmark.run.threads import cpu_count

    profile = None
    try:
        from benchmark.execute.slurm.profiles import stage_profiles

        profile = stage_profiles(args.grid, args.cluster_profile, ("classifier",))["classifier"]
    except UserError:
        pass  # no profile for the classifier stage: only the local check
    local = None if args.executor == SLURM else (args.parallel or (1 if args.executor == "debug" else cpu_count()))
    lines, warnings = memory_lines(jobs, profile, local, machine_bytes())
    for line in lines:
        print(f"memory {line}")
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)


def print_corrupt(jobs, status, runs_dir: Path) -> None:
    for spec in jobs:
        if status[spec.key] == "corrupt":
            print(f"corrupt  {spec.name}  {rd.corrupt_reason(runs_dir / spec.key)} (the next run moves it aside "
                  "and runs the job again)")


class signals_as_keyboard_interrupt:
    """SIGTERM and SIGHUP (a closed terminal, kill, a batch system) end the run as Ctrl-C does: KeyboardInterrupt,
    whose handler stops the workers and keeps finished results. The signal number is the exception's argument."""

    SIGNALS = (signal.SIGTERM, signal.SIGHUP)

    def __enter__(self):
        def handler(signum, frame):
            for sig in self.SIGNALS:  # a second signal during the clean-up does not interrupt it
                signal.signal(sig, signal.SIG_IGN)
            raise KeyboardInterrupt(signum)

        self.saved = {sig: signal.signal(sig, handler) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for sig, old in self.saved.items():
            signal.signal(sig, old)
        return False


if __name__ == "__main__":
    sys.exit(main())
