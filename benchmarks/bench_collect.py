"""Benchmark the collector: synthesize a large records table and time `launch/collect.py` on it, end to end.

    nice -n 10 .venv/bin/python benchmarks/bench_collect.py                 # 104,000 records, prints the timings
    nice -n 10 .venv/bin/python benchmarks/bench_collect.py --update-docs   # also rewrites its docs/benchmarks.md section

The table: 5 datasets × 2 image sizes × 5 rare counts × 5 backbones (250 cells) × 26 variants (none, class_weight
and 6 methods — oversample, mixup, real_extra, dcgan, ddpm, stylegan — × 4 ratio forms 1, 2, 4, balance) × 16 seeds
= 104,000 records, ~0.5 % NaN metrics, ~0.5 % runs removed
(unpaired seeds), audit columns. The figure is the wall time of the CLI in a fresh process (imports, CSV read,
every statistic, leaderboards, stats CSVs, 6 plots, report.md/html), best of --repeat runs.
"""

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
from _docs import write_section  # noqa: E402 - benchmarks/_docs.py, beside this script

HEADING = "## Collector on 100,000 records"


def synthesize(seeds: int = 16, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    datasets = ["breastmnist", "pneumoniamnist", "dermamnist", "bloodmnist", "organamnist"]
    sizes, rare_counts = [28, 64], [10, 20, 50, 100, "all"]
    backbones = ["resnet18", "resnet50", "efficientnet_b0", "convnext_tiny", "vit_tiny"]
    variants = [("none", 0.0), ("class_weight", 0.0)] + [
        (g, r) for g in ("oversample", "mixup", "real_extra", "dcgan", "ddpm", "stylegan") for r in (1, 2, 4, "balance")]
    idx = pd.MultiIndex.from_product([datasets, sizes, rare_counts, backbones, range(len(variants)), range(seeds)],
                                     names=["dataset", "image_size", "rare_count", "backbone", "v", "seed"])
    df = idx.to_frame(index=False)
    df["generator"] = [variants[i][0] for i in df["v"]]
    df["synthetic_ratio"] = [variants[i][1] for i in df["v"]]
    n = len(df)
    cell = pd.factorize(df[["dataset", "image_size", "rare_count", "backbone"]].astype(str).agg("|".join, axis=1))[0]
    cell_eff = rng.normal(0.8, 0.05, cell.max() + 1)[cell]
    seed_eff = rng.normal(0, 0.01, (cell.max() + 1, seeds))[cell, df["seed"]]
    gen_eff = df["generator"].map({"dcgan": 0.01, "ddpm": 0.015, "oversample": 0.003, "real_extra": 0.03}).fillna(
        0.0).to_numpy()
    df["n_rare_train"] = [100 if rc == "all" else rc for rc in df["rare_count"]]
    added = [(1000 - n) if r == "balance" else (r * n) for r, n in zip(df["synthetic_ratio"], df["n_rare_train"])]
    df["effective_ratio"] = np.asarray(added, float) / df["n_rare_train"].to_numpy(float)
    slope = np.where(df["generator"] == "ddpm", 0.004, 0.0) * np.log2(df["effective_ratio"].where(
        df["effective_ratio"] > 0, 1.0))
    base = cell_eff + seed_eff + gen_eff + slope
    df.insert(0, "key", [f"{i:012x}" for i in range(n)])
    df.insert(1, "name", df["dataset"] + "-" + df["generator"] + "-s" + df["seed"].astype(str))
    df.insert(2, "grid", "bench")
    df["rare_class"] = "minority"
    for split in ("val", "test"):
        for m, off, sd in (("accuracy", 0.1, 0.01), ("balanced_accuracy", -0.1, 0.015), ("auroc", 0.0, 0.01),
                           ("auprc", -0.2, 0.02), ("macro_f1", -0.15, 0.015), ("rare_sensitivity", -0.25, 0.04),
                           ("rare_specificity", 0.1, 0.01), ("rare_precision", -0.3, 0.04),
                           ("rare_auprc", -0.3, 0.03), ("rare_sensitivity_at_90spec", -0.3, 0.04),
                           ("thr_balanced_accuracy", -0.05, 0.015), ("thr_rare_sensitivity", -0.1, 0.04),
                           ("thr_rare_specificity", 0.0, 0.02)):
            df[f"{split}_{m}"] = np.clip(base + off + rng.normal(0, sd, n), 0, 1).round(4)
        df[f"{split}_ece"] = np.abs(rng.normal(0.05, 0.02, n)).round(4)
    nan_rows = rng.choice(n, n // 200, replace=False)
    df.loc[nan_rows, ["test_auroc", "test_rare_sensitivity"]] = np.nan
    df["wall_s"] = rng.uniform(60, 600, n).round(1)
    df["compute_hours"] = (df["wall_s"] / 3600).round(5)
    df["n_train_real"] = 1000
    real_extra = (df["generator"] == "real_extra").to_numpy()
    added = np.rint(df["effective_ratio"].to_numpy() * df["n_rare_train"].to_numpy()).astype(int)
    df["n_train_synthetic"] = np.where(real_extra, 0, added)
    df["n_real_extra"] = np.where(real_extra, added, 0)
    df["dataset_sha256"] = "sha-" + df["dataset"]
    df["results_version"] = 1
    gen = df["generator"].isin(["dcgan", "ddpm", "stylegan"])
    df["audit_fid"] = np.where(gen, rng.normal(40, 5, n), np.nan).round(2)
    df["audit_copy_rate"] = np.where(gen, rng.uniform(0, 0.02, n), np.nan).round(4)
    df = df.drop(columns="v").drop(index=rng.choice(n, n // 200, replace=False))
    return df.reset_index(drop=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=16, help="seeds per variant (16 → 104,000 records)")
    p.add_argument("--repeat", type=int, default=2, help="timed runs; the best is reported")
    p.add_argument("--update-docs", action="store_true", help=f"rewrite the '{HEADING}' section of docs/benchmarks.md")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        df = synthesize(args.seeds)
        path = Path(tmp) / "records.csv"
        df.to_csv(path, index=False)
        print(f"synthesized {len(df):,} records × {df.shape[1]} columns in {time.perf_counter() - t0:.1f} s")
        cmd = [sys.executable, str(ROOT / "launch" / "collect.py"), "--records", str(path),
               "--out", str(Path(tmp) / "out")]
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            res = subprocess.run(cmd, capture_output=True, text=True)
            times.append(time.perf_counter() - t0)
            if res.returncode:
                print(res.stdout, res.stderr, file=sys.stderr)
                return res.returncode
        tests = pd.read_csv(Path(tmp) / "out" / "stats" / "paired_tests.csv")
        best = min(times)
        print(res.stdout.strip())
        print(f"collector: {', '.join(f'{t:.1f}' for t in times)} s (best {best:.1f} s) for {len(df):,} records, "
              f"{len(tests):,} paired comparisons")
    if args.update_docs:
        write_section(HEADING, f"""
`nice -n 10 .venv/bin/python benchmarks/bench_collect.py --update-docs` (the script synthesizes the table and runs
`python launch/collect.py --records records.csv --out out/` in a fresh process, best of {args.repeat}).

| records | cells | variants | seeds | paired tests (comparisons × 4 default metrics) | wall time | target |
|---:|---:|---:|---:|---:|---:|---:|
| {len(df):,} | 250 | 26 | {args.seeds} | {len(tests):,} | **{best:.1f} s** | < 30 s |

Everything the CLI does is inside the figure: interpreter start and imports, reading the CSV, validation, pairing,
t / Wilcoxon (exact) / bootstrap (2,000 resamples) / power for every comparison, Holm correction, leaderboards,
Friedman / Iman–Davenport / Nemenyi / Holm-vs-control over datasets and a CD diagram per metric, the
hierarchical mixed model per method variant and metric, gap closed vs real_extra, the dose-response mixed model
on the effective ratio per metric, the PNG plots, report.md and report.html. Machine: {platform.machine()}, {os.cpu_count()} CPU cores
shared with other work, so the time varies with its load, Python {platform.python_version()}, pandas
{pd.__version__}; run under `nice -n 10`. All runs: {', '.join(f'{t:.1f}' for t in times)} s.
""")
        print(f"updated {ROOT / 'docs' / 'benchmarks.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
