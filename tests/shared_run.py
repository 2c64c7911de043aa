"""The session fixture ``shared_run``: one real grid, run once through launch/grid.py and launch/collect.py on the
real BreastMNIST, read by every test that checks what a finished grid writes (tests/test_end_to_end.py,
tests/test_collect_end_to_end.py).

It is the smallest grid that still writes every record shape a finished grid has: rare counts ``all`` and 20; the
no-method baseline, a method without a ratio (class_weight), a duplicating baseline (oversample) at every ratio
form (numbers 1 and 2, ``balance``, ``real_percentage=50``), a generator stage (DCGAN) at every ratio form and a
second one (diffusion) at 1 and ``balance``; two paired seeds (the diffusion model at one). Its sizes are the
least the assertions need: resnet18 with its standard stem (no small-input adaptation, ≈ 4× cheaper at 28 px),
three epochs of batch 32 at lr 0.003 without warm-up (every test AUROC ≥ 0.5 is asserted; one epoch left 4–5 jobs
below, two epochs beside a 30-step DCGAN one; lowest at this size 0.52, the diffusion model's ratio-1 job), a
100-step DCGAN with a bank large enough for ``real_percentage=50`` (419 images at rare count 20), a 20-step
diffusion model, generators at rare count 20 only (at ``all`` the DCGAN's bank of 25 × 147 images alone took 27 s
to audit). Failed, blocked and missing jobs are tests/test_collect_cli.py's own small grid (a re-run of this
one must be a no-op).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
N_OTHER, N_RARE = 399, 20   # BreastMNIST train: 399 benign; malignant (the minority, 147) cut to 20

FAST_BACKBONE = (f"include: {REPO / 'registry' / 'backbones' / 'resnet18.yaml'}\n"
                 "description: resnet18 with its standard stem at 28 px (no small-input adaptation), for fast "
                 "end-to-end tests\nconfig: {small_input: {below: 0}}\n")
# dcgan_small / ddpm_small at a few steps; the DCGAN's bank holds 25 x the rare count, enough for
# real_percentage=50 (419 images at rare count 20; the default bank, max(8 x 20, 399 - 20) = 379, cannot hold it)
TINY_DCGAN = (f"include: {REPO / 'registry' / 'generators' / 'dcgan_small.yaml'}\n"
              "description: dcgan_small at 100 steps with a bank of 25 x the rare count, for end-to-end tests\n"
              "config: {steps: 100, grid_every: 1000, bank_multiple: 25}\n")
TINY_DDPM = (f"include: {REPO / 'registry' / 'generators' / 'ddpm_small.yaml'}\n"
             "description: ddpm_small at 20 steps and 4 sampling steps, for end-to-end tests\n"
             "config: {steps: 20, lr_warmup_steps: 2, sampling_steps: 4}\n")
ENTRIES = {("backbone", "resnet18_fast"): FAST_BACKBONE, ("generator", "dcgan_tiny"): TINY_DCGAN,
           ("generator", "ddpm_tiny"): TINY_DDPM}

GRID = """name: shared
axes:
  dataset: [breastmnist]
  rare_count: [all, 20]
  generator: [none, class_weight, oversample, dcgan_tiny, ddpm_tiny]
  synthetic_ratio: [1, 2, balance, real_percentage=50]
  backbone: [resnet18_fast]
  seed: [0, 1]
exclude:
  - {rare_count: all, synthetic_ratio: 2}
  - {rare_count: all, synthetic_ratio: balance}
  - {rare_count: all, synthetic_ratio: real_percentage=50}
  - {rare_count: all, generator: dcgan_tiny}
  - {rare_count: all, generator: ddpm_tiny}
  - {generator: ddpm_tiny, synthetic_ratio: 2}
  - {generator: ddpm_tiny, synthetic_ratio: real_percentage=50}
  - {generator: ddpm_tiny, seed: 1}
training: {epochs: 3, warmup_epochs: 0, lr: 0.003, batch_size: 32, save_checkpoint: false, track: false}
"""
# What the grid holds (the tests count against these)
GENERATOR_JOBS = 3      # at rare count 20: dcgan_tiny at both seeds, ddpm_tiny at seed 0
CLASSIFIER_JOBS = 28    # per seed: all → none, class_weight, oversample@1; 20 → none, class_weight, oversample and
#                         dcgan_tiny at 1, 2, balance, real_percentage=50; and ddpm_tiny at 1, balance at seed 0
RARE_20_JOBS = 22
CELLS = 4               # (rare count, seed)
# synthetic images added at rare count 20, by ratio label as records.csv spells it
EXPECTED_ADDED = {"1.0": N_RARE, "2.0": 2 * N_RARE, "balance": N_OTHER - N_RARE,  # rare class as large as benign
                  "real_percentage=50": N_OTHER + N_RARE}                          # as many synthetic as real


@dataclass(frozen=True)
class SharedRun:
    out: Path                              # results/<grid>: runs/, records.csv, leaderboard, report, stats/, plots/
    grid: Path                             # the grid YAML
    registry: Path                         # GENMED_REGISTRY_PATH of the test entries
    env: dict                              # environment the CLIs ran with
    ran: subprocess.CompletedProcess       # launch/grid.py --executor local
    collected: subprocess.CompletedProcess  # launch/collect.py
    grid_seconds: float


def run_cli(script, *args, env, timeout=1800):
    return subprocess.run([sys.executable, str(REPO / "launch" / script), *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=timeout, check=False)


@pytest.fixture(scope="session")
def shared_run(real_data_dir, tmp_path_factory) -> SharedRun:
    tmp = tmp_path_factory.mktemp("shared_run")
    for (kind, name), text in ENTRIES.items():
        folder = tmp / "reg" / f"{kind}s"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.yaml").write_text(text)
    grid = tmp / "shared.yaml"
    grid.write_text(GRID)
    env = {**os.environ, "GENMED_DATA_DIR": str(real_data_dir), "GENMED_RESULTS_DIR": str(tmp / "results"),
           "GENMED_REGISTRY_PATH": str(tmp / "reg")}
    started = time.perf_counter()
    ran = run_cli("grid.py", "--grid", str(grid), "--executor", "local", env=env)
    grid_seconds = time.perf_counter() - started
    collected = run_cli("collect.py", "--grid", str(grid), env=env)
    return SharedRun(tmp / "results" / "shared", grid, tmp / "reg", env, ran, collected, grid_seconds)
