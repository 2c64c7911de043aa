"""The collector end to end on real runs (the session's shared run, tests/shared_run.py): every ratio form (numbers,
balance, real_percentage=P) through grid.py and collect.py on the real BreastMNIST, and the report a person reads
with both generator stages (DCGAN, diffusion) in it, as the README's generators_smoke profile writes it."""

import csv
import json
from pathlib import Path

import pandas as pd
import pytest

from tests.shared_run import (
    CLASSIFIER_JOBS,
    EXPECTED_ADDED,
    N_OTHER,
    N_RARE,
    RARE_20_JOBS,
)


@pytest.mark.slow
def test_every_ratio_form_collects_with_its_label_and_effective_ratio(shared_run):
    out, ran, collected = shared_run.out, shared_run.ran, shared_run.collected
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert collected.returncode == 0, collected.stdout + collected.stderr
    assert f"({CLASSIFIER_JOBS} finished, 0 failed, 0 missing, 0 blocked)" in collected.stdout, collected.stdout

    with open(out / "records.csv") as fh:
        rows = [row for row in csv.DictReader(fh) if row["rare_count"] == str(N_RARE)]
    assert len(rows) == RARE_20_JOBS
    for row in rows:
        n_rare, added = int(row["n_rare_train"]), int(row["n_train_synthetic"])
        assert n_rare == N_RARE and int(row["n_real_extra"]) == 0
        assert float(row["effective_ratio"]) == pytest.approx(added / n_rare)
        if row["generator"] in ("none", "class_weight"):
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
    placed = {}
    for r in curves.itertuples():
        placed.setdefault((r.generator, str(r.synthetic_ratio)), set()).add(round(float(r.effective_ratio), 9))
    for method in ("oversample", "dcgan_tiny"):
        for ratio, added in EXPECTED_ADDED.items():
            label = ratio.removesuffix(".0")
            position = placed.get((method, ratio), placed.get((method, label)))
            assert position == {round(added / N_RARE, 9)}, (method, ratio, placed)  # also at rare count all (1)
    dose = pd.read_csv(out / "stats" / "dose_response.csv", keep_default_na=False)
    assert {"oversample", "dcgan_tiny"} <= set(dose["generator"])
    assert list((out / "plots").glob("dose_*.png"))


@pytest.mark.slow
def test_report_with_both_generator_stages_collects(shared_run):
    """What the README's generators_smoke profile shows (oversample, a DCGAN and a diffusion model at 1 and
    balance beside none): the leaderboard, the balance rows, the report's sections, pictures and sample sheets."""
    out, ran, collected = shared_run.out, shared_run.ran, shared_run.collected
    print(f"shared grid: {shared_run.grid_seconds:.0f} s")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert collected.returncode == 0, collected.stdout + collected.stderr
    board = (out / "leaderboard.md").read_text()
    variants = set(pd.read_csv(out / "leaderboard.csv")["variant"])
    for method in ("oversample", "dcgan_tiny", "ddpm_tiny"):
        for label in ("1", "balance"):
            assert f"| {method}@{label} |" in board and f"{method}@{label}" in variants, (method, label)
    records = pd.read_csv(out / "records.csv", keep_default_na=False)
    balance = records[records["synthetic_ratio"] == "balance"]
    assert len(balance) == 2 + 2 + 1  # oversample and dcgan_tiny at 2 seeds, ddpm_tiny at 1
    assert (balance["n_train_synthetic"] == N_OTHER - N_RARE).all()
    assert balance["effective_ratio"].astype(float).round(6).eq(round((N_OTHER - N_RARE) / N_RARE, 6)).all()
    # the report a person reads: its sections, every picture loads, each generator's sheets from its run folder
    html_text = (out / "report.html").read_text()
    for section in ("Summary", "Design of the sweep", "Per-dataset results", "Generator audit"):
        assert f"<h2>{section}</h2>" in html_text, section
    assert_images_load(html_text, out)
    index = json.loads((out / "samples" / "samples.json").read_text())
    expected = {f"{g} · breastmnist · rare 20" for g in ("dcgan_tiny", "ddpm_tiny")}
    assert set(index) == expected, index
    for entry in index.values():
        for kind in ("sheet", "closest"):
            assert (out / entry[kind]).is_file(), entry
    assert html_text.count("real rare-class training images beside synthetic ones") == 2 * len(expected)  # alt, caption


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
