"""benchmarks/bench_gpu.py: runs end to end on CPU (--cpu-smoke: every part for a few steps, the markdown rows printed)
and, without a CUDA device, says so and exits 0 having measured nothing."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_gpu.py"


def run(*args, env_data=None, timeout=600):
    import os

    env = {**os.environ, **({"GENMED_DATA_DIR": str(env_data)} if env_data is not None else {})}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present: the script would measure it")
def test_without_cuda_it_says_so_and_measures_nothing():
    done = run(timeout=120)
    assert done.returncode == 0, done.stderr
    assert "no CUDA device" in done.stderr and "## GPU throughput" not in done.stdout


def test_cpu_smoke_and_write_docs_do_not_mix():
    done = run("--cpu-smoke", "--write-docs", timeout=120)
    assert done.returncode == 2 and "--write-docs writes measured GPU rows" in done.stderr


@pytest.mark.slow
def test_cpu_smoke_runs_every_part_on_random_images(tmp_path):
    """No breastmnist.npz in GENMED_DATA_DIR: random images of the right shape, said in the output."""
    done = run("--cpu-smoke", env_data=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert f"random uint8 images (32×1×28×28): no breastmnist.npz in {tmp_path}" in out
    assert "random uint8 images (8×1×128×128)" in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    assert any(r.startswith("| 28 px | 32 × 2 | 16 | no |") for r in rows)  # bf16 asked: fp32 on CPU
    assert any(r.startswith("| 128 px | 8 × 2 | 8 | no |") for r in rows)
    assert any(r.startswith("| 1 | 1 |") for r in rows) and any(r.startswith("| 2 | 1 |") for r in rows)
    assert any(r.startswith("| ddim | 2 |") for r in rows) and any(r.startswith("| ddpm | 3 |") for r in rows)
    assert "CPU smoke" in out and "not a measurement" in out
