"""The collector end to end on real runs: every ratio form (numbers, balance, real_percentage=P) through grid.py and
collect.py on the real BreastMNIST, and the README's generators_smoke profile."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.registry_helpers import register_entry
from tests.test_collect_cli import FAST_BACKBONE

REPO = Path(__file__).resolve().parent.parent
N_OTHER, N_RARE = 399, 20   # BreastMNIST train: 399 benign; malignant (the minority) cut from 147 to 20

# dcgan_small at a few steps, with a bank large enough for real_percentage=50 (419 images at rare_count 20; the
# default bank, max(8 × 20, 399 - 20) = 379, cannot hold it and the grid refuses such a cell before it starts)
TINY_DCGAN = (f"include: {REPO / 'registry' / 'generators' / 'dcgan_small.yaml'}\n"
              "description: dcgan_small at 30 steps with a bank of 25 x the rare count, for collector tests\n"
              "config: {steps: 30, grid_every: 1000, bank_multiple: 25}\n")
RATIO_GRID = """name: ratio_forms
axes:
  dataset: [breastmnist]
  rare_count: [20]
  generator: [none, oversample, dcgan_tiny]
  synthetic_ratio: [1, 2, balance, real_percentage=50]
  backbone: [resnet18_fast]
  seed: [0, 1]
training: {epochs: 1, batch_size: 128, save_checkpoint: false, track: false}
"""
EXPECTED_ADDED = {"1.0": N_RARE, "2.0": 2 * N_RARE, "balance": N_OTHER - N_RARE,  # rare class as large as benign
                  "real_percentage=50": N_OTHER + N_RARE}                          # as many synthetic as real


def run_cli(script, *args, env):
    return subprocess.run([sys.executable, str(REPO / "launch" / script), *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=1800)


@pytest.fixture(scope="module")
def ratio_run(real_data_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ratio_forms")
    with pytest.MonkeyPatch.context() as mp:
        register_entry(tmp, mp, "generator", "dcgan_tiny", TINY_DCGAN)
        register_entry(tmp, mp, "backbone", "resnet18_fast", FAST_BACKBONE)
        grid = tmp / "ratio_forms.yaml"
        grid.write_text(RATIO_GRID)
        env = {**os.environ, "GENMED_DATA_DIR": str(real_data_dir), "GENMED_RESULTS_DIR": str(tmp / "results")}
        ran = run_cli("grid.py", "--grid", str(grid), "--executor", "local", env=env)
        collected = run_cli("collect.py", "--grid", str(grid), env=env)
        yield tmp / "results" / "ratio_forms", ran, collected


@pytest.mark.slow
def test_every_ratio_form_collects_with_its_label_and_effective_ratio(ratio_run):
    out, ran, collected = ratio_run
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "2 generator jobs: 2 done" in ran.stdout and "18 classifier jobs: 18 done" in ran.stdout, ran.stdout
    assert collected.returncode == 0, collected.stdout + collected.stderr
    assert "(18 finished, 0 failed, 0 missing, 0 blocked)" in collected.stdout

    with open(out / "records.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 18
    for row in rows:
        n_rare, added = int(row["n_rare_train"]), int(row["n_train_synthetic"])
        assert n_rare == N_RARE and int(row["n_real_extra"]) == 0
        assert float(row["effective_ratio"]) == pytest.approx(added / n_rare)
        if row["generator"] == "none":
            assert row["synthetic_ratio"] == "0.0" and added == 0
        else:
            assert added == EXPECTED_ADDED[row["synthetic_ratio"]], row

    board = (out / "leaderboard.md").read_text()
    variants = set(pd.read_csv(out / "leaderboard.csv")["variant"])
    for method in ("oversample", "dcgan_tiny"):
        for label in ("1", "2", "balance", "real_percentage=50"):
            assert f"| {method}@{label} |" in board and f"{method}@{label}" in variants, (method, label)

    # the dose-response places every variant at the ratio its jobs trained with, balance included
    curves = pd.read_csv(out / "stats" / "dose_curves.csv", keep_default_na=False)
    curves = curves[curves["metric"] == curves["metric"].iloc[0]]
    placed = {(r.generator, str(r.synthetic_ratio)): float(r.effective_ratio) for r in curves.itertuples()}
    for method in ("oversample", "dcgan_tiny"):
        for ratio, added in EXPECTED_ADDED.items():
            label = ratio.removesuffix(".0")
            position = placed.get((method, ratio), placed.get((method, label)))
            assert position == pytest.approx(added / N_RARE), (method, ratio, placed)
    dose = pd.read_csv(out / "stats" / "dose_response.csv", keep_default_na=False)
    assert {"oversample", "dcgan_tiny"} <= set(dose["generator"])
    assert list((out / "plots").glob("dose_*.png"))


@pytest.fixture(scope="module")
def generators_smoke_run(real_data_dir, tmp_path_factory):
    import time

    results = tmp_path_factory.mktemp("generators_smoke")
    env = {**os.environ, "GENMED_DATA_DIR": str(real_data_dir), "GENMED_RESULTS_DIR": str(results)}
    started = time.perf_counter()
    ran = run_cli("grid.py", "--grid", "rare_sweep", "--profile", "generators_smoke", "--executor", "local",
                  env=env)
    grid_seconds = time.perf_counter() - started
    collected = run_cli("collect.py", "--grid", "rare_sweep", "--profile", "generators_smoke", env=env)
    return results / "rare_sweep-generators_smoke", ran, collected, grid_seconds


@pytest.mark.slow
def test_readme_generators_smoke_profile_collects(generators_smoke_run):
    out, ran, collected, grid_seconds = generators_smoke_run
    print(f"generators_smoke grid: {grid_seconds:.0f} s")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert collected.returncode == 0, collected.stdout + collected.stderr
    board = (out / "leaderboard.md").read_text()
    variants = set(pd.read_csv(out / "leaderboard.csv")["variant"])
    for method in ("oversample", "dcgan_small", "ddpm_small"):
        for label in ("1", "balance"):
            assert f"| {method}@{label} |" in board and f"{method}@{label}" in variants, (method, label)
    records = pd.read_csv(out / "records.csv", keep_default_na=False)
    balance = records[records["synthetic_ratio"] == "balance"]
    assert len(balance) == 3
    assert (balance["n_train_synthetic"] == N_OTHER - N_RARE).all()
    assert balance["effective_ratio"].astype(float).round(6).eq(round((N_OTHER - N_RARE) / N_RARE, 6)).all()
    # the report a person reads: its sections, every picture loads, each generator's sheets from its run folder
    html_text = (out / "report.html").read_text()
    for section in ("Summary", "Design of the sweep", "Per-dataset results", "Generator audit"):
        assert f"<h2>{section}</h2>" in html_text, section
    assert_images_load(html_text, out)
    index = json.loads((out / "samples" / "samples.json").read_text())
    assert set(index) == {f"{g} · breastmnist · rare 20" for g in ("dcgan_small", "ddpm_small")}, index
    for entry in index.values():
        for kind in ("sheet", "closest"):
            assert (out / entry[kind]).is_file(), entry
    assert html_text.count("real rare-class training images beside synthetic ones") == 2 * 2  # alt + caption


def assert_images_load(html_text: str, folder: Path) -> None:
    """Every <img> of a report resolves: an embedded data: URI decodes to a PNG that Pillow opens, a relative
    source names a file next to the report that opens."""
    import base64
    import io
    import re

    from PIL import Image

    sources = re.findall(r"<img[^>]*\ssrc='([^']*)'", html_text)
    assert sources, "the report has no images"
    for src in sources:
        if src.startswith("data:image/png;base64,"):
            data = base64.b64decode(src.split(",", 1)[1], validate=True)
        else:
            data = (folder / src).read_bytes()
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
