"""Benchmark: peak memory of one classifier job on a synthetic image-folder dataset (issue 21, bounded memory).

Builds ``--images`` RGB PNGs of ``--size`` px in two class folders (10 % rare) in a temporary folder, registers it
with a tiny timm network, and runs one job (oversample × 1 at rare count 100, ``--steps`` optimiser steps of batch
32) through ``launch/grid.py --executor debug`` in a child process, three ways: ``cold`` (empty image cache: the job
decodes every image into the memory-mapped cache), ``warm`` (the cache exists; ``--force`` re-runs the job) and
``off`` (``GENMED_ARRAY_CACHE_DIR=off``: every image held in the process, as before the cache). For each: the
child's peak RSS (``os.wait4`` ru_maxrss, which counts the memory-mapped pages it touched) and the peak of its
anonymous (private) and file-backed resident memory, sampled from /proc every 20 ms, and its CPU time (wall time
depends on what else runs on the machine).

    python benchmarks/memory.py --images 2000            # a quick check (about a minute on 2 cores)
    python benchmarks/memory.py --images 20000 --size 128 --write-docs   # the issue's figure → docs/benchmarks.md
"""

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEADING = "## Peak memory of one job (image folders)"


def make_dataset(root: Path, n_images: int, size: int) -> None:
    """class0 (90 %) and class1 (10 %) folders of smooth RGB PNGs (low-frequency noise: PNG-compressible)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    n_rare = max(n_images // 10, 150)
    for i in range(n_images):
        cls = 1 if i < n_rare else 0
        coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((size, size), Image.Resampling.BILINEAR)
        folder = root / f"class{cls}"
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{i:06d}.png", compress_level=1)


def write_registry(folder: Path, data: Path, size: int, steps: int) -> Path:
    (folder / "datasets").mkdir(parents=True)
    (folder / "backbones").mkdir()
    (folder / "datasets" / "synthetic_folder.yaml").write_text(
        f"version: 1\ntarget: benchmark.data.folders:FolderDataset\nconfig: {{root: {data}, image_size: {size}, "
        "channels: 3}\n")
    (folder / "backbones" / "tinynet.yaml").write_text(
        "version: 1\ntarget: benchmark.run.backbones:TimmBackbone\nconfig: {model_name: test_resnet}\n")
    grid = folder / "memory.yaml"
    grid.write_text(f"name: memory\naxes:\n  dataset: [synthetic_folder]\n  image_size: [{size}]\n"
                    "  rare_count: [100]\n  generator: [oversample]\n  synthetic_ratio: [1]\n  backbone: [tinynet]\n"
                    f"training: {{budget: {{steps: {steps}}}, batch_size: 32, eval_batch_size: 256, track: false, "
                    "save_checkpoint: false}\n")
    return grid


def _status_kb(pid: int) -> dict:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in text.splitlines())
            if k in ("VmRSS", "RssAnon", "RssFile", "RssShmem")}


def run_job(grid: Path, env: dict, force: bool) -> dict:
    """Run the grid in a child process; its peak RSS and sampled peak anonymous / file-backed resident memory."""
    command = [sys.executable, str(ROOT / "launch" / "grid.py"), "--grid", str(grid), "--executor", "debug",
               "--results", env["BENCH_RESULTS"]] + (["--force"] if force else [])
    started = time.perf_counter()
    child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peaks = {"RssAnon": 0, "RssFile": 0}
    done = threading.Event()

    def sample():
        while not done.is_set():
            for key, value in _status_kb(child.pid).items():
                if key in peaks:
                    peaks[key] = max(peaks[key], value)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = child.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(child.pid, 0)
    done.set()
    sampler.join()
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"the job failed (exit {child.returncode}):\n{output[-3000:]}")
    return {"max_rss_mb": usage.ru_maxrss / 1024, "anon_mb": peaks["RssAnon"] / 1024,
            "file_mb": peaks["RssFile"] / 1024, "seconds": time.perf_counter() - started,
            "cpu_s": usage.ru_utime + usage.ru_stime}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="build in this folder and keep it (default: a temporary one)")
    parser.add_argument("--write-docs", action="store_true", help="write the table to docs/benchmarks.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="genmed-memory-") as tmp:
        work = args.keep or Path(tmp)
        started = time.perf_counter()
        make_dataset(work / "data", args.images, args.size)
        made_s = time.perf_counter() - started
        grid = write_registry(work / "reg", work / "data", args.size, args.steps)
        env = {**os.environ, "GENMED_REGISTRY_PATH": str(work / "reg"), "XDG_CACHE_HOME": str(work / "cache"),
               "GENMED_CACHE_DIR": str(work / "cache" / "genmed-rare"), "PYTHONPATH": str(ROOT)}
        env.pop("GENMED_ARRAY_CACHE_DIR", None)
        rows = {}
        for mode, force, extra in (("cold", False, {}), ("warm", True, {}),
                                   ("off", True, {"GENMED_ARRAY_CACHE_DIR": "off"})):
            rows[mode] = run_job(grid, {**env, **extra, "BENCH_RESULTS": str(work / f"results-{mode}")}, force)
    dataset_mb = args.images * 3 * args.size ** 2 / 2**20
    lines = [f"{args.images:,} RGB images at {args.size} px ({dataset_mb:,.0f} MB as uint8; PNGs made in "
             f"{made_s:.0f} s), one job: oversample × 1, rare count 100, {args.steps} steps of batch 32, timm "
             "test_resnet; `python benchmarks/memory.py --images "
             f"{args.images} --size {args.size} --steps {args.steps}`, {time.strftime('%Y-%m-%d')}, "
             f"{os.cpu_count()} CPUs.", "",
             "| image cache | peak RSS (MB) | peak anonymous RSS (MB) | peak file-backed RSS (MB) | CPU (s) "
             "| wall (s) |",
             "|---|---:|---:|---:|---:|---:|"]
    names = {"cold": "cold (decodes into the cache)", "warm": "warm (cache present)", "off": "off (in memory)"}
    for mode, row in rows.items():
        lines.append(f"| {names[mode]} | {row['max_rss_mb']:,.0f} | {row['anon_mb']:,.0f} | {row['file_mb']:,.0f} | "
                     f"{row['cpu_s']:.0f} | {row['seconds']:.0f} |")
    body = "\n".join(lines)
    print(body)
    if args.write_docs:
        sys.path.insert(0, str(ROOT))
        from benchmarks._docs import write_section

        print(f"written to {write_section(HEADING, body)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
