"""launch/collect.py: records and grid modes end to end, defaults, and exit code 2 with a clear message on bad input.

No project module is replaced: records mode reads a records table from disk (as from another benchmark), grid mode
reads what launch/grid.py really wrote for a small grid on the real BreastMNIST (finished, failed, blocked and
missing jobs alike).
"""

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark.generators.base import Generator, Method
from tests.registry_helpers import register_entry
from tests.test_stats import make_records

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "launch" / "collect.py"
THRESHOLD_COLUMNS = ("thr_balanced_accuracy", "thr_rare_sensitivity", "thr_rare_specificity",
                     "rare_sensitivity_at_90spec")


@pytest.fixture(scope="module")
def collect():
    spec = importlib.util.spec_from_file_location("collect_cli", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def with_threshold_metrics(df: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """The records table with every validation-threshold column a current harness writes (those it lacks)."""
    rng = np.random.default_rng(seed)
    df = df.copy()
    for split in ("val", "test"):
        for name in THRESHOLD_COLUMNS:
            if f"{split}_{name}" not in df.columns:
                df[f"{split}_{name}"] = df[f"{split}_balanced_accuracy"] + rng.normal(0, 0.01, len(df))
        df[f"{split}_threshold"] = 0.5
    return df


def without_threshold_metrics(df: pd.DataFrame) -> pd.DataFrame:
    """The records table as a harness before the validation-threshold metrics wrote it."""
    return df.drop(columns=[c for c in df.columns if "thr_" in c or c.endswith(("_threshold", "_90spec"))])


@pytest.fixture
def records_csv(tmp_path):
    path = tmp_path / "mygrid" / "records.csv"
    path.parent.mkdir()
    with_threshold_metrics(make_records(datasets=("ds0",), rare_counts=(10, "all"), seeds=4)).to_csv(path, index=False)
    return path


def test_records_mode_writes_everything_next_to_the_records(collect, records_csv, capsys):
    from benchmark.stats import DEFAULT_METRICS

    assert collect.main(["--records", str(records_csv)]) == 0
    out = records_csv.parent
    for rel in ("leaderboard.md", "leaderboard.tex", "leaderboard.csv", "report.md", "report.html",
                "stats/paired_tests.csv"):
        assert (out / rel).is_file(), rel
    assert list((out / "plots").glob("*.png"))
    printed = capsys.readouterr()
    assert f"report: {out / 'report.html'}" in printed.out and "leaderboard:" in printed.out
    assert "warning: " in printed.err and "Wilcoxon" in printed.err      # 4 seeds
    paired = pd.read_csv(out / "stats" / "paired_tests.csv")
    assert set(paired["metric"]) == set(DEFAULT_METRICS)                  # the one default: benchmark.stats
    assert set(paired["baseline"]) == {"none"} and (paired["family"] == paired["metric"]).all()


def test_default_metrics_come_from_stats_and_the_help_says_them(collect, capsys):
    from benchmark.stats import DEFAULT_METRICS

    assert collect.parse_args(["--records", "x.csv"]).metrics == ",".join(DEFAULT_METRICS)
    with pytest.raises(SystemExit) as exc:
        collect.main(["--help"])
    assert exc.value.code == 0
    assert f"(default: {', '.join(DEFAULT_METRICS)};" in " ".join(capsys.readouterr().out.split())


def test_options_reach_the_statistics(collect, records_csv, tmp_path, capsys):
    out = tmp_path / "elsewhere"
    argv = ["--records", str(records_csv), "--out", str(out), "--baseline", "class_weight", "--metrics",
            "auroc,test_ece", "--correction", "fdr_bh", "--family", "cell"]
    assert collect.main(argv) == 0
    paired = pd.read_csv(out / "stats" / "paired_tests.csv")
    assert set(paired["baseline"]) == {"class_weight"} and set(paired["metric"]) == {"test_auroc", "test_ece"}
    assert paired["family"].nunique() == 4 and "none" in set(paired["generator"])
    assert "fdr_bh correction over each cell family" in (out / "report.md").read_text()
    assert not (records_csv.parent / "report.md").exists()


@pytest.mark.parametrize("argv, message", [
    (["--records", "{dir}/nope.csv"], "Records file {dir}/nope.csv does not exist"),
    (["--records", "{csv}", "--metrics", "test_aucroc"], "Unknown metric 'test_aucroc'. Did you mean 'test_auroc'"),
    (["--records", "{csv}", "--baseline", "resnet"],
     "Unknown baseline method 'resnet'. Available: class_weight, dcgan, none."),
    (["--records", "{csv}", "--profile", "smoke"], "--profile only applies to --grid"),
    (["--records", "{dropped}"], "missing required column(s): backbone"),
    # records written before the threshold metrics existed: the column is absent, or present and empty
    (["--records", "{old}", "--metrics", "test_auroc,thr_balanced_accuracy"],
     "records file {old} has no column 'test_thr_balanced_accuracy': its records were written by a harness "
     "version that did not compute it"),
    (["--records", "{empty}", "--metrics", "test_thr_rare_sensitivity"],
     "has no value in column 'test_thr_rare_sensitivity'"),
])
def test_bad_input_exits_2_with_one_clear_paragraph(collect, records_csv, argv, message, capsys):
    dropped = records_csv.with_name("dropped.csv")
    pd.read_csv(records_csv).drop(columns="backbone").to_csv(dropped, index=False)
    old = records_csv.with_name("old.csv")
    without_threshold_metrics(pd.read_csv(records_csv)).to_csv(old, index=False)
    empty = records_csv.with_name("empty.csv")
    pd.read_csv(records_csv).assign(test_thr_rare_sensitivity=np.nan).to_csv(empty, index=False)
    fill = {"dir": records_csv.parent, "csv": records_csv, "dropped": dropped, "old": old, "empty": empty}
    with pytest.raises(SystemExit) as exc:
        collect.main([a.format(**fill) for a in argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message.format(**fill) in err
    assert "Traceback" not in err and err.strip().count("\n") == 0


def test_argparse_rejects_unknown_choices_with_code_2(collect, capsys):
    with pytest.raises(SystemExit) as exc:
        collect.main(["--records", "x.csv", "--correction", "bonferroni"])
    assert exc.value.code == 2 and "invalid choice: 'bonferroni' (choose from holm, fdr_bh)" in \
        capsys.readouterr().err.replace("'holm', 'fdr_bh'", "holm, fdr_bh")
    with pytest.raises(SystemExit) as exc:
        collect.main([])
    assert exc.value.code == 2 and "one of the arguments --grid --records is required" in capsys.readouterr().err


def test_grid_mode_with_no_finished_jobs_is_a_user_error(collect, tmp_path, capsys):
    """The real benchmark.collect.records on an empty results folder: every job of the smoke profile is missing."""
    with pytest.raises(SystemExit) as exc:
        collect.main(["--grid", "rare_sweep", "--profile", "smoke", "--results", str(tmp_path)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "No finished jobs in grid 'rare_sweep' (0 failed, " in err and " missing)" in err


def test_script_runs_as_a_command(tmp_path):
    res = subprocess.run([sys.executable, str(SCRIPT), "--records", str(tmp_path / "none.csv")],
                         capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 2 and res.stderr.startswith("error: Records file") and not res.stdout


# ------------------------------------------------------------------ grid mode on what a real grid run wrote
class FailingGenerator(Generator):
    """A generator whose fit fails: its classifier jobs are blocked."""

    def fit(self, images, labels, seed, out_dir=None):
        raise RuntimeError("generator diverged")


class ExplodingMethod(Method):
    """A method whose classifier job fails: error.json, listed as failed."""

    def build_training_set(self, real, rare_class, synthetic_ratio, num_classes, seed, held_back=None):
        raise RuntimeError("planted failure")


FAST_BACKBONE = (f"include: {ROOT / 'registry' / 'backbones' / 'resnet18.yaml'}\n"
                 "description: resnet18 with its standard stem at 28 px (no small-input adaptation), for fast "
                 "collector tests\nconfig: {small_input: {below: 0}}\n")

GRID = """name: collect_cli
axes:
  dataset: [breastmnist]
  rare_count: [20]
  generator: [none, oversample, failing_gan, exploding]
  synthetic_ratio: [balance]
  backbone: [resnet18_fast]
  seed: [0, 1]
training: {epochs: 1, batch_size: 128, save_checkpoint: false, track: false}
"""


def run_cli(script, *args, env):
    return subprocess.run([sys.executable, str(ROOT / "launch" / script), *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=1200)


@pytest.fixture(scope="module")
def grid_run(real_data_dir, tmp_path_factory):
    """The grid run twice with --only (seed 0, then none at seed 1), so the rest is missing; then collected."""
    tmp = tmp_path_factory.mktemp("collect_cli")
    with pytest.MonkeyPatch.context() as mp:
        register_entry(tmp, mp, "generator", "failing_gan",
                       "target: tests.test_collect_cli:FailingGenerator\nversion: 1\nconfig: {kind: generative}\n")
        register_entry(tmp, mp, "generator", "exploding", "target: tests.test_collect_cli:ExplodingMethod\n"
                       "version: 1\nconfig: {kind: baseline, uses_synthetic_ratio: false}\n")
        register_entry(tmp, mp, "backbone", "resnet18_fast", FAST_BACKBONE)
        grid = tmp / "collect_cli.yaml"
        grid.write_text(GRID)
        env = {**os.environ, "GENMED_DATA_DIR": str(real_data_dir), "GENMED_RESULTS_DIR": str(tmp / "results")}
        runs = [run_cli("grid.py", "--grid", str(grid), "--executor", "debug", "--only", only, env=env)
                for only in ("seed=0]", ",none,seed=1]")]
        collected = run_cli("collect.py", "--grid", str(grid), env=env)
        yield tmp / "results" / "collect_cli", runs, collected


@pytest.mark.slow
def test_grid_mode_collects_what_the_grid_wrote(grid_run):
    out, runs, collected = grid_run
    assert runs[0].returncode == 1 and "failed" in runs[0].stdout, runs[0].stdout + runs[0].stderr  # planted
    assert runs[1].returncode == 0, runs[1].stdout + runs[1].stderr
    assert collected.returncode == 0, collected.stdout + collected.stderr
    assert "(3 finished, 1 failed, 3 missing, 1 blocked)" in collected.stdout

    results = {}
    for path in (out / "runs").glob("*/result.json"):
        record = json.loads(path.read_text())
        if record["stage"] == "classifier":
            results[record["key"]] = record
    with open(out / "records.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(results) == 3
    from benchmark.collect.records import current_results_version

    for row in rows:
        record = results[row["key"]]
        for split in ("val", "test"):
            for name in ("auroc", "balanced_accuracy", *THRESHOLD_COLUMNS, "threshold"):
                assert float(row[f"{split}_{name}"]) == pytest.approx(record["metrics"][split][name])
        assert row["val_threshold"] == row["test_threshold"]
        # chosen on val, where the arg-max (0.5) operating point was a candidate: never worse there (binary task)
        assert float(row["val_thr_balanced_accuracy"]) >= float(row["val_balanced_accuracy"]) - 1e-9
        assert int(row["n_real_extra"]) == 0 == int(row["n_real_extra_available"])
        assert float(row["effective_ratio"]) == pytest.approx(
            record["counts"]["n_train_synthetic"] / record["resolved"]["n_rare_train"])
        assert row["results_version"] == str(current_results_version())
    ratios = {(r["generator"], r["synthetic_ratio"], r["effective_ratio"]) for r in rows}
    assert ratios == {("none", "0.0", "0.0"), ("oversample", "balance", str((399 - 20) / 20))}

    board = (out / "leaderboard.md").read_text()
    assert "RuntimeError: planted failure" in board and "## Missing jobs (3)" in board
    assert "| oversample@balance |" in board
    assert set(pd.read_csv(out / "leaderboard.csv")["variant"]) == {"none", "oversample@balance"}
    blocked = [line for line in board.splitlines() if "blocked by " in line]
    assert len(blocked) == 1 and "failing_gan" in blocked[0]
    assert "Grid `collect_cli`" in (out / "report.md").read_text()


@pytest.mark.slow
def test_records_of_a_real_grid_collect_again_in_records_mode(grid_run, tmp_path):
    out, _, _ = grid_run
    res = run_cli("collect.py", "--records", str(out / "records.csv"), "--out", str(tmp_path), env=dict(os.environ))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "| oversample@balance |" in (tmp_path / "leaderboard.md").read_text()
    assert set(pd.read_csv(tmp_path / "leaderboard.csv")["variant"]) == {"none", "oversample@balance"}
