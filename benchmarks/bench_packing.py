"""Benchmark: the fixed cost per job that packing (--runs-per-task) amortises, measured on SLURM.

K tiny real jobs (BreastMNIST, resnet18, 28 px, rare_count 10, 1 epoch, batch 64) run through submitit exactly as
`launch/grid.py --executor slurm` runs them (JobBatch, resumable), once packed (all K in one array task, one
process) and once unpacked (one array task per job). Inside each task the script times, from the process's own
start: training (each record's train_s), evaluation (val each epoch + test), saving the resumable state, and
everything else. Reported per job:

  fixed overhead = (Σ task wall − Σ training − Σ evaluation − Σ state saving) / K
                   (interpreter start, imports, dataset loading, building data/model/Accelerator, writing records)
  wall − training = (Σ task wall − Σ training) / K     (the brief's measure: includes evaluation and state saving)

Target: fixed overhead packed ≤ 0.5 s. `--checkpoint-every-s 0,600` instead runs the packed mode once per value
(0 = the training state saved after every epoch; else at most every that many seconds, the cluster profiles'
default 600) and reports the state saves, bytes written and seconds spent saving per job, read from each record's
``checkpoints``. `--scale GRID` instead prints the jobs per stage of a grid and a compute
estimate from recorded timings (docs/benchmarks.md, "Scale of rare_sweep"). Examples:
    nice -n 10 .venv/bin/python benchmarks/bench_packing.py --jobs 12
    .venv/bin/python benchmarks/bench_packing.py --jobs 6 --epochs 3 --checkpoint-every-s 0,600
    .venv/bin/python benchmarks/bench_packing.py --scale rare_sweep --startup-s 8.4 --harness-s 0.25
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed_task(payloads, runs_dir, checkpoint_every_s=0.0):
    """Runs in the SLURM task: JobBatch(payloads) with evaluation and state saving timed."""
    import psutil

    from benchmark.run import batch as batch_module
    from benchmark.run import train
    from benchmark.run.batch import JobBatch

    process_start = psutil.Process().create_time()
    spent = {"eval_s": 0.0, "save_s": 0.0}

    def timed(function, key):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[key] += time.perf_counter() - started
        return wrapper

    train.predict = timed(train.predict, "eval_s")
    train.save_progress = timed(train.save_progress, "save_s")
    spans = []  # (start, end) of each job's execute()
    real_execute = batch_module.execute

    def execute(*args, **kwargs):
        spans.append([time.time(), None])
        try:
            return real_execute(*args, **kwargs)
        finally:
            spans[-1][1] = time.time()

    batch_module.execute = execute
    statuses = JobBatch(payloads, runs_dir, resumable=True, checkpoint_every_s=checkpoint_every_s)()
    return {"process_start": process_start, "end": time.time(), "statuses": statuses, "spans": spans, **spent}


def run_mode(name, specs, per_task, folder, profile, checkpoint_every_s=0.0):
    import submitit

    from benchmark.execute.slurm.cluster import load_profile

    runs_dir = folder / name / "runs"
    executor = submitit.AutoExecutor(folder=str(folder / name / "logs" / "%j"), cluster="slurm")
    executor.update_parameters(**load_profile(profile).submitit_parameters(), name=f"bench-packing-{name}")
    batches = [specs[i:i + per_task] for i in range(0, len(specs), per_task)]
    started = time.time()
    jobs = executor.submit_array([_bound(timed_task, [s.to_dict() for s in b], str(runs_dir), checkpoint_every_s)
                                  for b in batches])
    outs = [job.result() for job in jobs]
    end_to_end = time.time() - started
    assert all(s == "done" for out in outs for s in out["statuses"].values()), outs
    records = [json.loads(p.read_text()) for p in runs_dir.glob("*/result.json")]
    wall = sum(o["end"] - o["process_start"] for o in outs)
    train_s = sum(r["timings"]["train_s"] for r in records)
    eval_s, save_s = sum(o["eval_s"] for o in outs), sum(o["save_s"] for o in outs)
    elapsed = sum(_sacct_elapsed(job.job_id) for job in jobs)
    k = len(specs)
    by_key = {r["key"]: r for r in records}
    # Per task: start-up = process start → end of its first job minus that job's training, evaluation and state
    # saving (interpreter, imports, dataset loading); per later job: its execute() wall minus the same three, plus
    # the gap before it (the harness's own work per job, what packing cannot amortise).
    startup, per_job = [], []
    for out, batch in zip(outs, batches):
        work = [by_key[s.key]["timings"]["train_s"] for s in batch]
        first_end = out["spans"][0][1]
        share = out["eval_s"] / len(batch) + out["save_s"] / len(batch)  # evaluation + saving, split evenly
        startup.append(first_end - out["process_start"] - work[0] - share)
        for i in range(1, len(batch)):
            per_job.append(out["spans"][i][1] - out["spans"][i - 1][1] - work[i] - share)
    saves = [r.get("checkpoints") or {} for r in records]
    return {"mode": name, "tasks": len(batches), "jobs": k, "task_wall_s": wall, "train_s": train_s,
            "checkpoint_every_s": checkpoint_every_s, "epochs": specs[0].training["epochs"],
            "saves_per_job": sum(c.get("saves", 0) for c in saves) / k,
            "state_bytes_per_job": sum(c.get("bytes_written", 0) for c in saves) / k,
            "state_save_s_per_job": sum(c.get("save_s", 0.0) for c in saves) / k,
            "startup_s": sum(startup) / len(startup), "harness_per_job_s": sum(per_job) / len(per_job) if per_job
            else float("nan"),
            "eval_s": eval_s, "save_s": save_s, "fixed_per_job_s": (wall - train_s - eval_s - save_s) / k,
            "wall_minus_train_per_job_s": (wall - train_s) / k, "sacct_elapsed_s": elapsed,
            "end_to_end_s": end_to_end}


def _bound(function, *args):
    import functools

    return functools.partial(function, *args)


def _sacct_elapsed(job_id: str) -> float:
    for _ in range(30):
        out = subprocess.run(["sacct", "-X", "-n", "-P", "-j", job_id, "-o", "JobID,ElapsedRaw,State"],
                             capture_output=True, text=True).stdout
        for line in out.splitlines():
            jid, elapsed, state = line.split("|")
            if jid == job_id and state == "COMPLETED":
                return float(elapsed)
        time.sleep(1)
    return float("nan")


# Train-split class counts of datasets whose file is not on this machine (MedMNIST v2 PneumoniaMNIST: 4,708 train
# images = 1,214 normal + 3,494 pneumonia; val 524, test 624). Files that are present are read instead.
KNOWN_SPLITS = {"pneumoniamnist": {"train": [1214, 3494], "val": 524, "test": 624}}


def scale(grid_name: str, timings: Path, startup_s: float, harness_s: float, runs_per_task: int,
          save_s: float) -> None:
    """Jobs per stage of a grid, the images they train on, and compute from recorded timings."""
    import statistics
    from collections import Counter

    import numpy as np

    from benchmark.core.training_set import synthetic_count
    from benchmark.data import dataset_source
    from benchmark.plan.grid import expand, generator_jobs, load_grid

    classifiers = expand(load_grid(grid_name))
    generators = generator_jobs(classifiers)
    splits = {}
    for name in sorted({j.dataset for j in classifiers}):
        source = dataset_source(name)
        if source.is_present(28):
            labels = source.load_labels(28)
            splits[name] = {"train": np.bincount(labels["train"]).tolist(), "val": len(labels["val"]),
                            "test": len(labels["test"])}
        else:
            splits[name] = KNOWN_SPLITS[name]
    images, evals = Counter(), Counter()
    for job in classifiers:
        counts = np.array(splits[job.dataset]["train"])
        rare = int(counts.argmin())
        n_rare = int(counts[rare]) if job.rare_count == "all" else int(job.rare_count)
        real = counts.copy()
        real[rare] = n_rare
        ratio = job.synthetic_ratio if job.synthetic_ratio == "balance" else float(job.synthetic_ratio)
        n_train = int(real.sum()) + synthetic_count(ratio, n_rare, real)
        images[job.backbone] += job.training["epochs"] * n_train
        evals[job.backbone] += job.training["epochs"] * splits[job.dataset]["val"] + splits[job.dataset]["test"]
    rates = [json.loads(p.read_text())["timings"]["train_images_per_s"] for p in timings.glob("*/result.json")]
    cpu_rate = statistics.median(rates)
    relative = step_cost(sorted({j.backbone for j in classifiers}))
    print(f"grid {grid_name}: {len(generators)} generator jobs "
          f"({dict(Counter(g.generator for g in generators))}), {len(classifiers)} classifier jobs, 1 collector")
    print(f"measured: median resnet18 training throughput {cpu_rate:.0f} images/s over {len(rates)} records in "
          f"{timings} (CPU); start-up {startup_s:.1f} s per task, harness {harness_s:.2f} s per job (bench above)")
    print("| backbone | classifier jobs | training images (epochs × train set) | evaluation images "
          "| CPU step time vs resnet18 | CPU-hours (this machine) |")
    print("|---|---:|---:|---:|---:|---:|")
    per_backbone = Counter(j.backbone for j in classifiers)
    cpu_hours = 0.0
    for backbone in sorted(per_backbone):
        hours = (images[backbone] + evals[backbone] / 3) * relative[backbone] / cpu_rate / 3600
        cpu_hours += hours
        print(f"| {backbone} | {per_backbone[backbone]:,} | {images[backbone]:,} | {evals[backbone]:,} | "
              f"{relative[backbone]:.2f}× | {hours:,.0f} |")
    fixed_h = len(classifiers) * (startup_s / runs_per_task + harness_s) / 3600
    print(f"| all | {len(classifiers):,} | {sum(images.values()):,} | {sum(evals.values()):,} | | {cpu_hours:,.0f} |")
    print(f"fixed cost: {fixed_h:.1f} h at --runs-per-task {runs_per_task} "
          f"({len(classifiers) * (startup_s + harness_s) / 3600:.1f} h unpacked)")
    epochs = sum(j.training["epochs"] for j in classifiers)
    print(f"state saving (resumable under SLURM, every epoch): {epochs:,} epochs × {save_s:.2f} s = "
          f"{epochs * save_s / 3600:.1f} h (resnet18, measured here; larger backbones save more)")
    for rate in (5000, 20000, 50000):
        total = (sum(images.values()) + sum(evals.values()) / 3) / rate / 3600 + fixed_h
        print(f"GPU-hours for the classifier stage at an assumed {rate:,} training images/s: {total:,.1f}")


def step_cost(backbones: list[str], batch: int = 128, steps: int = 3) -> dict[str, float]:
    """Seconds per training step (forward, backward, AdamW) at 28 px on this CPU, relative to resnet18."""
    import torch

    from benchmark.core import registry

    torch.set_num_threads(1)
    seconds = {}
    for name in sorted(set(backbones) | {"resnet18"}):
        model = registry.create("backbone", name).build(1, 2, 28)
        optimizer = torch.optim.AdamW(model.parameters())
        x, y = torch.randn(batch, 1, 28, 28), torch.randint(0, 2, (batch,))
        times = []
        for _ in range(steps + 1):
            started = time.perf_counter()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            optimizer.zero_grad()
            times.append(time.perf_counter() - started)
        seconds[name] = min(times[1:])
    return {name: seconds[name] / seconds["resnet18"] for name in backbones}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=12, help="K tiny jobs (default 12)")
    parser.add_argument("--profile", default="local-cpu", help="cluster profile (default local-cpu)")
    parser.add_argument("--modes", default="packed,unpacked")
    parser.add_argument("--scale", metavar="GRID", help="instead: jobs per stage of GRID and a compute estimate from "
                        "recorded timings (--timings) and the packing figures (--startup-s, --harness-s)")
    parser.add_argument("--timings", default="results/literature_check/runs", help="records with measured throughput")
    parser.add_argument("--startup-s", type=float, default=7.0)
    parser.add_argument("--harness-s", type=float, default=0.33)
    parser.add_argument("--runs-per-task", type=int, default=20)
    parser.add_argument("--save-s", type=float, default=0.39, help="seconds to save the training state per epoch")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per job (default 1)")
    parser.add_argument("--checkpoint-every-s", metavar="S[,S…]", help="instead of --modes: the packed mode once "
                        "per value (0 = state saved every epoch), with state bytes and seconds per job")
    args = parser.parse_args()
    if args.scale:
        return scale(args.scale, Path(args.timings), args.startup_s, args.harness_s, args.runs_per_task, args.save_s)
    from benchmark.execute.slurm.reachable import slurm_available
    from benchmark.plan.grid import Grid, expand

    ok, reason = slurm_available()
    if not ok:
        sys.exit(f"bench_packing needs SLURM ({reason}); start the local cluster: see slurm/README.md")
    if not os.environ.get("GENMED_DATA_DIR"):
        shared = Path(__file__).resolve().parents[2] / "shared" / "data"
        os.environ["GENMED_DATA_DIR"] = str(shared)
    axes = {"dataset": ["breastmnist"], "generator": ["none"], "backbone": ["resnet18"], "rare_count": [10],
            "seed": list(range(args.jobs))}
    specs = expand(Grid("bench_packing", None, axes, [], [], {"epochs": args.epochs, "batch_size": 64,
                                                             "save_checkpoint": False}, "bench"))
    if args.checkpoint_every_s:
        return checkpoint_rows(specs, [float(s) for s in args.checkpoint_every_s.split(",")], args.profile)
    with tempfile.TemporaryDirectory(prefix="bench-packing-") as tmp:
        rows = []
        for mode in args.modes.split(","):
            rows.append(run_mode(mode, specs, len(specs) if mode == "packed" else 1, Path(tmp), args.profile))
            print(json.dumps(rows[-1]), flush=True)
    print("\n| mode | tasks | jobs | Σ task wall | Σ training | Σ evaluation | Σ state saving | start-up / task "
          "| harness / later job | fixed overhead / job | (wall − training) / job | Σ sacct Elapsed "
          "| submit → last result |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['mode']} | {r['tasks']} | {r['jobs']} | {r['task_wall_s']:.1f} s | {r['train_s']:.1f} s | "
              f"{r['eval_s']:.1f} s | {r['save_s']:.1f} s | {r['startup_s']:.2f} s | {r['harness_per_job_s']:.2f} s | "
              f"**{r['fixed_per_job_s']:.2f} s** | {r['wall_minus_train_per_job_s']:.2f} s | "
              f"{r['sacct_elapsed_s']:.0f} s | {r['end_to_end_s']:.0f} s |")


def checkpoint_rows(specs, every: list[float], profile: str) -> None:
    """The packed mode once per checkpoint_every_s value: training-state saves, bytes and seconds per job."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-packing-") as tmp:
        for seconds in every:
            rows.append(run_mode(f"every-{seconds:g}s", specs, len(specs), Path(tmp), profile, seconds))
            print(json.dumps(rows[-1]), flush=True)
    print("\n| checkpoint_every_s | jobs × epochs | state saves / job | state written / job | seconds saving / job "
          "| Σ training | Σ task wall |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        label = "0 (every epoch)" if r["checkpoint_every_s"] == 0 else f"{r['checkpoint_every_s']:g} s"
        print(f"| {label} | {r['jobs']} × {r['epochs']} | {r['saves_per_job']:.2f} | "
              f"{r['state_bytes_per_job'] / 1e6:.0f} MB | {r['state_save_s_per_job']:.2f} s | {r['train_s']:.1f} s | "
              f"{r['task_wall_s']:.1f} s |")


if __name__ == "__main__":
    main()
