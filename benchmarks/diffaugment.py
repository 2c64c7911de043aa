"""Benchmark figures: DiffAugment's effect on the DCGAN's audit at rare count 20 (BreastMNIST, RetinaMNIST).

    nice python benchmarks/diffaugment.py --write-docs          # full size: dcgan vs dcgan_diffaug, 3 seeds
    nice python benchmarks/diffaugment.py --steps 4000 --seeds 2 --write-docs   # both arms trained twice as long
    nice python benchmarks/diffaugment.py --steps 4 --extractor-steps 3 --seeds 1 --results /tmp/da   # check only

Runs the harness's own generator stage (benchmark.run.job.execute → generators.stage.run_generator: fit on the
cell's training images, sample the bank, audit it) for the `dcgan` entry and `dcgan_diffaug` (the same entry with
DiffAugment "color,translation,cutout") in each cell (dataset, minority class cut to --rare-count, seed); finished
jobs under --results are reused. It reads each job's audit: in-domain KID (± jackknife SE), precision, recall,
coverage and copy rate, and copies each job's closest-pair sheet (closest_pairs_sheet.png) beside its table.
Both arms of a seed share the cell (the same 20 real rare images); their generator seeds differ (the seed
derivation includes the entry name), so a pair shares the data, not the initial weights.
`--steps N` fits copies of the two entries at N steps (temporary registry entries `<entry>_steps<N>`, other keys):
a check at a few steps, or a longer fit (`--steps 4000 --write-docs` writes its own section, "…, at 4000 steps").
`--write-docs` refuses `--extractor-steps` (a shortened audit).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import shutil
import statistics
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from _docs import write_section  # noqa: E402 - benchmarks/_docs.py, beside this script
from benchmark.core.errors import exits_on_user_error  # noqa: E402 - a bad entry name: message, exit 2

HEADING = "## DiffAugment: the DCGAN's audit with and without"
DOCS_SHEETS = ROOT / "docs" / "diffaugment"
COLUMNS = ("domain_kid", "domain_kid_se", "domain_precision", "domain_recall", "domain_coverage", "copy_rate", "ct",
           "ct_p")


def tiny_entries(names: list[str], steps: int, extractor_steps: int | None, folder: Path) -> list[str]:
    """Registry entries `<name>_steps<N>` (each entry at `steps` steps) in `folder`, put on GENMED_REGISTRY_PATH."""
    out = []
    generators = folder / "generators"
    generators.mkdir(parents=True, exist_ok=True)
    for name in names:
        tiny = f"{name}_steps{steps}"
        extractor = f", audit_extractor: {{max_steps: {extractor_steps}}}" if extractor_steps else ""
        (generators / f"{tiny}.yaml").write_text(
            f"include: {ROOT / 'registry' / 'generators' / f'{name}.yaml'}\n"
            f"description: {name} at {steps} steps, to check benchmarks/diffaugment.py\n"
            f"config: {{steps: {steps}, grid_every: {steps}, log_every: {steps}{extractor}}}\n")
        out.append(tiny)
    os.environ["GENMED_REGISTRY_PATH"] = os.pathsep.join(
        p for p in (str(folder), os.environ.get("GENMED_REGISTRY_PATH")) if p)
    return out


def generator_specs(datasets, generators, rare_count, seeds):
    from benchmark.plan.grid import Grid, expand, generator_jobs

    axes = {"dataset": datasets, "image_size": [28], "rare_class": ["minority"], "rare_count": [rare_count],
            "generator": generators, "synthetic_ratio": [1], "backbone": ["resnet18"], "seed": seeds}
    return generator_jobs(expand(Grid("diffaugment", None, axes, [], [], {"epochs": 1}, "benchmarks/diffaugment")))


def run_jobs(specs, runs: Path, sheets: Path) -> list[dict]:
    """Run (or reuse) every generator job; one row per finished job with its audit columns and sheet."""
    import json

    from benchmark.generators.sheets import CLOSEST_SHEET_PNG
    from benchmark.run.job import RESULT_FILE, execute

    rows = []
    sheets.mkdir(parents=True, exist_ok=True)
    for spec in specs:
        status = execute(spec, runs / spec.key)
        print(f"{spec.name}: {status}", flush=True)
        result_path = runs / spec.key / RESULT_FILE
        if not result_path.is_file():
            print(f"  no record; see {runs / spec.key / 'error.json'}", flush=True)
            continue
        record = json.loads(result_path.read_text())
        audit, fit = record["audit"], record["fit_log"]
        sheet = sheets / f"{spec.dataset}_{spec.generator}_rare{spec.rare_count}_seed{spec.seed}_closest.png"
        if (runs / spec.key / CLOSEST_SHEET_PNG).is_file():
            shutil.copyfile(runs / spec.key / CLOSEST_SHEET_PNG, sheet)
        rows.append({"dataset": spec.dataset, "generator": spec.generator, "seed": spec.seed,
                     "rare_count": spec.rare_count, "key": spec.key, "diffaugment": fit.get("diffaugment", "off"),
                     "steps": fit["steps"], "fit_s": record["timings"]["fit_s"], "device": fit.get("device"),
                     "bank_n": audit["n_synthetic"], "reference_n": audit["reference_n"],
                     **{c: audit.get(c, float("nan")) for c in COLUMNS}, "closest_sheet": sheet.name})
    return rows


def fmt(values, spec=".3f") -> str:
    """Mean ± sd (one value: itself) in the format ``spec``; NaNs dropped."""
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:{spec}}"
    return f"{statistics.mean(values):{spec}} ± {statistics.stdev(values):{spec}}"


def table(rows: list[dict], without: str, with_: str) -> str:
    """Per dataset and arm: mean ± sd over seeds; then the paired difference (with − without) of in-domain KID."""
    lines = [("| dataset | generator | DiffAugment | seeds | KID (in-domain) | precision | recall | coverage | "
              "copy rate | C_T | fit s |"), "|" + "---|" * 11]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        for name in (without, with_):
            arm = [r for r in rows if r["dataset"] == dataset and r["generator"] == name]
            if not arm:
                continue
            cells = [fmt([r[column] for r in arm], spec) for column, spec in (
                ("domain_kid", ".3g"), ("domain_precision", ".2f"), ("domain_recall", ".2f"),
                ("domain_coverage", ".2f"), ("copy_rate", ".3f"), ("ct", ".2f"), ("fit_s", ".0f"))]
            lines.append(f"| {dataset} | {name} | {arm[0]['diffaugment']} | {len(arm)} | {' | '.join(cells)} |")
    diffs = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        by_seed = {(r["generator"], r["seed"]): r["domain_kid"] for r in rows if r["dataset"] == dataset}
        seeds = sorted({seed for _, seed in by_seed})
        pairs = [by_seed[(with_, s)] - by_seed[(without, s)] for s in seeds
                 if (with_, s) in by_seed and (without, s) in by_seed]
        if pairs:
            diffs.append(f"{dataset}: {paired_summary(pairs)} (per seed {', '.join(f'{d:+.3g}' for d in pairs)})")
    return "\n".join(lines) + "\n\nPaired in-domain KID difference, with − without (negative: closer to the real " \
        "rare class; mean [95 % t interval over seeds], paired t test): " + ("; ".join(diffs) or "no complete pair") \
        + "."


def paired_summary(diffs: list[float]) -> str:
    """Mean [95 % t interval], p of a one-sample t test against 0 (scipy), over the per-seed differences."""
    from scipy import stats

    if len(diffs) < 2:
        return f"{diffs[0]:+.3g} over 1 seed (no interval)"
    res = stats.ttest_1samp(diffs, 0.0)
    ci = res.confidence_interval(0.95)
    return (f"{statistics.mean(diffs):+.3g} [{ci.low:+.3g}, {ci.high:+.3g}], p = {res.pvalue:.2g} over {len(diffs)} "
            "seeds")


def write_outputs(rows: list[dict], text: str, results: Path) -> None:
    with open(results / "diffaugment.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (results / "diffaugment.md").write_text(text + "\n")
    print(f"wrote {results / 'diffaugment.csv'}, {results / 'diffaugment.md'} and the sheets in {results / 'sheets'}")


def docs_section(rows, text, args, generators) -> str:
    first = rows[0]
    banks = ", ".join(f"{r['bank_n']} on {r['dataset']}" for r in {r["dataset"]: r for r in rows}.values())
    options = "".join(f" --{k} {v}" for k, v in (("steps", args.steps), ("seeds", args.seeds)) if v and
                      not (k == "seeds" and v == 3))
    intro = f"""`nice python benchmarks/diffaugment.py --write-docs{options}` (seeds {args.seeds}, rare count
{args.rare_count}: the minority class of each dataset cut to {args.rare_count} training images). Each job is the
harness's generator stage: `{generators[0]}` (the `dcgan` entry with DiffAugment off, {first['steps']} steps) and
`{generators[1]}` (the same with DiffAugment "color,translation,cutout", Zhao et al. 2020) fitted on the cell's
training images, a bank of rare-class images ({banks}) sampled and audited against every rare-class training image of the dataset (before the cut),
in the dataset's in-domain classifier features. KID: unbiased MMD² (lower is closer); precision / recall /
coverage: k-NN manifolds (Naeem et al. 2020); copy rate: the share of the bank closer to a training image than 95 %
of training images are to theirs; C_T: Meehan et al.'s three-sample data-copying statistic against the held-back
real rare images (strongly negative: the bank sits closer to the generator's training images than fresh real images
do; positive: farther, a bank that underfits). Mean ± sd over seeds. Both arms of a seed use the same real images; their
generator seeds differ. Device: {first['device']}. Closest-pair sheets (seed {rows[0]['seed']}) are in
docs/diffaugment/."""
    wrap = lambda t: textwrap.fill(" ".join(t.split()), width=116, break_on_hyphens=False)  # noqa: E731
    return f"{HEADING}\n{wrap(intro)}\n\n{text}\n"


@exits_on_user_error
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="breastmnist,retinamnist")
    parser.add_argument("--rare-count", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1")
    parser.add_argument("--without", default="dcgan_no_diffaug", help="registry generator entry without DiffAugment")
    parser.add_argument("--with", dest="with_", default="dcgan_diffaug", help="the entry with DiffAugment")
    parser.add_argument("--steps", type=int, default=None,
                        help="fit copies of the entries at N steps (a quick check, or a longer fit)")
    parser.add_argument("--extractor-steps", type=int, default=None,
                        help="check run: train the audit's in-domain extractor for at most N steps")
    parser.add_argument("--results", default=str(ROOT / "results" / "bench-diffaugment"), help="results root")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--write-docs", action="store_true",
                        help=f"write '{HEADING}' in docs/benchmarks.md and the sheets in docs/diffaugment/")
    args = parser.parse_args(argv)
    if args.write_docs and args.extractor_steps:
        parser.error("--write-docs records the full audit only; drop --extractor-steps")
    if args.seeds < 1 or (args.steps is not None and args.steps < 1):
        parser.error("--seeds and --steps must be at least 1")

    generators = [args.without, args.with_]
    scratch = None
    if args.steps or args.extractor_steps:
        scratch = Path(tempfile.mkdtemp(prefix="diffaugment-registry-"))
        generators = tiny_entries(generators, args.steps or 2000, args.extractor_steps, scratch)
    import torch

    torch.set_num_threads(args.threads)
    results = Path(args.results)
    try:
        specs = generator_specs(args.datasets.split(","), generators, args.rare_count, list(range(args.seeds)))
        rows = run_jobs(specs, results / "runs", results / "sheets")
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    if not rows:
        raise SystemExit("no generator job finished; see the error.json files under " + str(results / "runs"))
    text = table(rows, *generators)
    print(text)
    write_outputs(rows, text, results)
    if args.write_docs:
        DOCS_SHEETS.mkdir(parents=True, exist_ok=True)
        for row in rows:
            if row["seed"] == rows[0]["seed"] and (results / "sheets" / row["closest_sheet"]).is_file():
                shutil.copyfile(results / "sheets" / row["closest_sheet"], DOCS_SHEETS / row["closest_sheet"])
        heading = HEADING + (f", at {args.steps} steps" if args.steps else "")
        write_section(heading, docs_section(rows, text, args, generators).replace(HEADING, heading, 1))
        print("wrote docs/benchmarks.md and docs/diffaugment/")


if __name__ == "__main__":
    main()
