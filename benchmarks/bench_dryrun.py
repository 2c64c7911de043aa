"""Benchmark: wall time of `launch/grid.py --dry-run` on a 10,200-job grid (target < 3 s), as a user runs it."""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GRID = """name: bench_10k
axes:
  dataset: [breastmnist, pneumoniamnist]
  rare_count: [all, 100, 50, 20, 10]
  generator: [none, class_weight, oversample]
  synthetic_ratio: [1, 2, 4, 8]
  backbone: [resnet18, resnet50, densenet121, efficientnet_b0, vit_tiny]
  seed: {range: [0, 34]}
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        grid = Path(tmp) / "bench_10k.yaml"
        grid.write_text(GRID)
        command = [sys.executable, str(REPO / "launch" / "grid.py"), "--grid", str(grid), "--dry-run",
                   "--results", tmp]
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            out = subprocess.run(command, capture_output=True, text=True, check=True)
            times.append(time.perf_counter() - started)
        print(out.stdout.strip().splitlines()[-1])
        print(f"dry-run wall time over {args.repeats} runs: median {statistics.median(times):.2f} s, "
              f"max {max(times):.2f} s (target < 3 s)")


if __name__ == "__main__":
    main()
