"""What users run: the README's profiles (`make smoke` = rare_sweep's smoke profile, and generators_smoke) trained
at their own sizes on the real BreastMNIST and collected, end to end through the CLIs — not only their shapes
(tests/shared_run.py covers every record shape at a smaller size)."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
PROFILES = {  # profile: (generator jobs, classifier jobs, image sources compared with duplication)
    "smoke": (6, 30, {"dcgan_small@1", "dcgan_small@balance"}),
    "generators_smoke": (3, 17, {f"{g}@{r}" for g in ("dcgan_small", "ddpm_small", "pipeline_smoke") for r in (
        "1", "balance", "balance+pretrain_finetune", "balance+synthetic_rare_only")}),
}


def run_cli(script, *args, env):
    return subprocess.run([sys.executable, str(REPO / "launch" / script), *args], capture_output=True, text=True,
                          env=env, timeout=1800)


@pytest.mark.slow
@pytest.mark.parametrize("profile", list(PROFILES))
def test_the_readme_profile_runs_and_collects(profile, real_data_dir, tmp_path):
    n_gen, n_cls, sources = PROFILES[profile]
    env = {**os.environ, "GENMED_DATA_DIR": str(real_data_dir), "GENMED_RESULTS_DIR": str(tmp_path),
           "GENMED_CACHE_DIR": str(tmp_path / "cache")}
    ran = run_cli("grid.py", "--grid", "rare_sweep", "--profile", profile, env=env)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    assert (f"{n_gen} generator jobs: {n_gen} done, 0 pending, 0 failed; {n_cls} classifier jobs: {n_cls} done, "
            "0 pending, 0 failed") in ran.stdout
    collected = run_cli("collect.py", "--grid", "rare_sweep", "--profile", profile, env=env)
    assert collected.returncode == 0, collected.stdout + collected.stderr
    out = tmp_path / f"rare_sweep-{profile}"
    records = pd.read_csv(out / "records.csv")
    assert len(records) == n_cls and records["test_auroc"].between(0, 1).all()
    assert (records["optimizer_steps"] > 0).all() and records["budget"].str.startswith("epochs=").all()
    answer = pd.read_csv(out / "stats" / "answer.csv")
    vs_dup = answer[(answer["reference"] == "oversample") & (answer["scope"] == "all cells")]
    assert set(vs_dup["source"]) == sources and vs_dup["verdict"].notna().all()
    noise = pd.read_csv(out / "stats" / "test_noise.csv")  # every job kept its per-image predictions
    if records["seed"].nunique() >= 2:
        assert len(noise) and (noise["n_seeds"] == records["seed"].nunique()).all() and noise["test_ci_low"].notna().all()
    else:  # one seed: no interval over seeds, and the table says why
        assert noise["note"].str.contains("fewer than 2 paired seeds").all()
    md = (out / "report.md").read_text()
    assert md.split("\n## ", 2)[1].startswith("The answer: does each image source beat duplicating")
    assert (out / "report.html").stat().st_size > 10_000 and (out / "leaderboard.md").is_file()
    again = run_cli("grid.py", "--grid", "rare_sweep", "--profile", profile, env=env)  # finished jobs never re-run
    assert again.returncode == 0 and "running 0" in again.stdout, again.stdout
