"""launch/collect.py: records and grid modes end to end, defaults, and exit code 2 with a clear message on bad input."""

import importlib.util
import subprocess
import sys
import types
from pathlib import Path

import pandas as pd
import pytest

from tests.test_stats import make_records

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "launch" / "collect.py"


@pytest.fixture(scope="module")
def collect():
    spec = importlib.util.spec_from_file_location("collect_cli", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def records_csv(tmp_path):
    path = tmp_path / "mygrid" / "records.csv"
    path.parent.mkdir()
    make_records(datasets=("ds0",), rare_counts=(10, "all"), seeds=4).to_csv(path, index=False)
    return path


def test_records_mode_writes_everything_next_to_the_records(collect, records_csv, capsys):
    assert collect.main(["--records", str(records_csv)]) == 0
    out = records_csv.parent
    for rel in ("leaderboard.md", "leaderboard.tex", "leaderboard.csv", "report.md", "report.html",
                "stats/paired_tests.csv", "plots/cd_test_auroc.png"):
        assert (out / rel).is_file(), rel
    printed = capsys.readouterr()
    assert f"report: {out / 'report.html'}" in printed.out and "leaderboard:" in printed.out
    assert "warning: the Wilcoxon test cannot reach p<0.05" in printed.err      # 4 seeds
    paired = pd.read_csv(out / "stats" / "paired_tests.csv")
    assert set(paired["metric"]) == {"test_auroc", "test_balanced_accuracy", "test_rare_sensitivity"}
    assert set(paired["baseline"]) == {"none"} and (paired["family"] == paired["metric"]).all()


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
])
def test_bad_input_exits_2_with_one_clear_paragraph(collect, records_csv, argv, message, capsys):
    dropped = records_csv.with_name("dropped.csv")
    pd.read_csv(records_csv).drop(columns="backbone").to_csv(dropped, index=False)
    fill = {"dir": records_csv.parent, "csv": records_csv, "dropped": dropped}
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


def test_grid_mode_uses_collect_grid_and_lists_failed_jobs(collect, tmp_path, monkeypatch, capsys):
    calls = {}
    df = make_records(datasets=("ds0",), rare_counts=(10,), seeds=3)

    def collect_grid(name, profile, results_root):
        calls["args"] = (name, profile, results_root)
        return types.SimpleNamespace(
            records=df, failed=[{"key": "f1", "name": "ds0-dcgan-3", "error": "ValueError: diverged"}],
            missing=[{"key": "m1", "name": "ds0-dcgan-4"}], blocked=[{"key": "b1", "name": "x", "reason": "no data"}],
            out_dir=Path(results_root) / f"{name}-{profile}",
            design={"grid": name, "profile": profile, "axes": {"seed": [0, 1, 2]}, "training": {"epochs": 4}})

    def write_records(frame, path):
        calls["written"] = path
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path, index=False)

    fake = types.ModuleType("benchmark.records")
    fake.collect_grid, fake.write_records = collect_grid, write_records
    monkeypatch.setitem(sys.modules, "benchmark.records", fake)
    assert collect.main(["--grid", "rare_sweep", "--profile", "smoke", "--results", str(tmp_path)]) == 0
    out = tmp_path / "rare_sweep-smoke"
    assert calls["args"] == ("rare_sweep", "smoke", tmp_path) and calls["written"] == out / "records.csv"
    assert "(15 finished, 1 failed, 1 missing, 1 blocked)" in capsys.readouterr().out
    lb = (out / "leaderboard.md").read_text()
    assert "| f1 | ds0-dcgan-3 | ValueError: diverged |" in lb and "## Missing jobs (1)" in lb
    assert "| b1 | x | no data |" in lb
    assert "Grid `rare_sweep`, profile `smoke`" in (out / "report.md").read_text()


def test_grid_mode_with_no_finished_jobs_is_a_user_error(collect, tmp_path, capsys):
    """The real benchmark.records on an empty results folder: every job of the smoke profile is missing."""
    with pytest.raises(SystemExit) as exc:
        collect.main(["--grid", "rare_sweep", "--profile", "smoke", "--results", str(tmp_path)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "No finished jobs in grid 'rare_sweep' (0 failed, " in err and " missing)" in err


def test_script_runs_as_a_command(tmp_path):
    res = subprocess.run([sys.executable, str(SCRIPT), "--records", str(tmp_path / "none.csv")],
                         capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 2 and res.stderr.startswith("error: Records file") and not res.stdout
