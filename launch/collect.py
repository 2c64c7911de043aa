"""Collect a grid's results, or any records table, into statistics, leaderboards, a report and plots.

    python launch/collect.py --grid rare_sweep [--profile smoke]
    python launch/collect.py --records results/rare_sweep/records.csv --baseline oversample --correction fdr_bh
Methods and output columns: docs/statistics.md.
"""

import argparse
import sys
from pathlib import Path

from benchmark.core.errors import UserError, exits_on_user_error
from benchmark.run.run_dir import RESULTS_HELP, results_root


def default_metrics() -> str:
    """The collector's default metrics: benchmark.stats.DEFAULT_METRICS (the one place they are set)."""
    from benchmark.stats import DEFAULT_METRICS

    return ",".join(DEFAULT_METRICS)


def check_metric_columns(records, metrics: list[str], source: str) -> None:
    """A requested split metric (test_x / val_x) that the records lack, or hold no value of, is a UserError that
    says why (records written before the harness computed it) and what to do, not a KeyError later."""
    from benchmark.stats import KNOWN_METRIC_COLUMNS as known
    for metric in metrics:
        column = metric if metric in known else f"test_{metric}" if f"test_{metric}" in known else None
        if column is None:
            continue  # not a harness metric: benchmark.stats checks it (did-you-mean, other tables' columns)
        if column not in records.columns or records[column].isna().all():
            what = "has no column" if column not in records.columns else "has no value in column"
            raise UserError(f"{source} {what} {column!r}: its records were written by a harness version that did "
                            f"not compute it (see results_version). Re-run those jobs (launch/grid.py … --force), "
                            f"or choose metrics the records have with --metrics (e.g. --metrics "
                            f"test_auroc,test_balanced_accuracy).")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--grid", help="grid name in registry/grids or path to a grid YAML file")
    src.add_argument("--records", help="records table (.csv or .parquet), e.g. from another benchmark")
    p.add_argument("--profile", help="grid profile (with --grid)")
    p.add_argument("--out", help="output folder (default: results/<grid label>, or the records file's folder)")
    p.add_argument("--baseline", default="none", help="method every other method is compared with (default: none)")
    metrics = default_metrics()
    p.add_argument("--metrics", default=metrics,
                   help=f"comma-separated metric columns (default: {metrics.replace(',', ', ')}; "
                        "benchmark.stats.DEFAULT_METRICS)")
    p.add_argument("--correction", default="holm", choices=["holm", "fdr_bh"], help="multiple-comparison correction")
    p.add_argument("--family", default="metric", choices=["metric", "cell", "all"],
                   help="correction family: all comparisons of a metric (default), of a metric in a cell, or all")
    p.add_argument("--results", type=results_root, default=results_root(), help=f"for --grid: {RESULTS_HELP}")
    return p.parse_args(argv)


@exits_on_user_error
def main(argv=None) -> int:
    args = parse_args(argv)
    if args.profile and not args.grid:
        raise UserError("--profile only applies to --grid. Drop --profile, or collect with --grid NAME --profile P.")
    from benchmark.run.run_dir import apply_results_mode

    apply_results_mode()  # the report, sheets and records hold patient images and per-image results: private
    from benchmark import stats
    from benchmark.collect import report, report_figures

    design = failed = missing = blocked = None
    if args.grid:
        from benchmark.collect.records import collect_grid, write_records

        grid = collect_grid(args.grid, args.profile, Path(args.results))
        out = Path(args.out) if args.out else Path(grid.out_dir)
        records, design = grid.records, grid.design
        failed, missing, blocked = grid.failed, grid.missing, grid.blocked
        write_records(records, out / "records.csv")
        report_figures.copy_sheets(grid.sheets, out)
        sheets = report_figures.load_sheets(out)
        source, title = f"grid {args.grid!r}", Path(grid.out_dir).name
        runs = Path(grid.out_dir) / "runs"
        print(f"records: {out / 'records.csv'} ({len(records)} finished, {len(failed)} failed, {len(missing)} "
              f"missing, {len(blocked)} blocked)")
    else:
        records = report.read_records(args.records)
        out = Path(args.out) if args.out else Path(args.records).resolve().parent
        source, title = f"records file {args.records}", Path(args.records).resolve().parent.name
        here = Path(args.records).resolve().parent  # sheets collected with the records travel with them
        if not (out / report_figures.SAMPLES_DIR / report_figures.SAMPLES_INDEX).is_file():
            report_figures.copy_sheets(report_figures.sheets_in(here), out)
        sheets = report_figures.load_sheets(out)
        runs = here / "runs"  # a results folder's records.csv sits beside its runs/
    if records is None or len(records) == 0:
        jobs = f" ({len(failed)} failed, {len(missing)} missing)" if failed is not None else ""
        raise UserError(f"No finished jobs in {source}{jobs}: nothing to analyse. Run the grid first "
                        f"(python launch/grid.py --grid …), then collect again.")
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    check_metric_columns(records, metrics, source)
    analysis = stats.analyse(records, metrics=metrics, baseline=args.baseline, correction=args.correction,
                             family=args.family, source=source, margins=(design or {}).get("margins") or None)
    from benchmark.collect.noise import noise_table

    noise = noise_table(analysis, runs) if runs.is_dir() else None
    written = report.write_all(analysis, out, title=title, design=design, failed=failed, missing=missing,
                               blocked=blocked, sheets=sheets, noise=noise)
    for note in analysis.warnings:
        print(f"warning: {note}", file=sys.stderr)
    print(f"report: {written['report.html']}\n        {written['report.md']}")
    print(f"leaderboard: {out / 'leaderboard.md'} (.tex, .csv)")
    print(f"statistics: {out / 'stats'}/ ({', '.join(p.name for k, p in written.items() if k.startswith('stats/'))})")
    print(f"plots: {out / 'plots'}/ ({sum(k.startswith('plots/') for k in written)} PNG files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
