"""Run folders and grid files are not trusted (issue 21, first slice): a symlink planted at a lock path is never
followed, temporary names are unique across hosts, crafted keys and sample indexes cannot choose paths, and a
grid name is a plain name."""

import json
import os

import pytest

from benchmark.run import run_dir as rd


def test_a_planted_symlink_at_the_lock_path_is_left_untouched(tmp_path):
    target = tmp_path / "victim.txt"
    target.write_text("precious\n")
    run_dir = tmp_path / "runs" / "0123456789abcdef"
    run_dir.mkdir(parents=True)
    os.symlink(target, run_dir / rd.LOCK_FILE)
    try:
        with rd.lock(run_dir):
            raise AssertionError("the lock was taken through a symlink")
    except rd.UnsafeRunFolder as exc:
        assert "is a symbolic link" in str(exc) and str(run_dir / rd.LOCK_FILE) in str(exc)
    assert target.read_text() == "precious\n" and os.path.islink(run_dir / rd.LOCK_FILE)
    assert rd.lock_holder(run_dir) is None  # probing the status does not follow it either
    assert target.read_text() == "precious\n"


def test_a_job_refuses_the_folder_records_why_and_touches_nothing_else(tmp_path, data_env):
    from benchmark.plan.grid import Grid, expand
    from benchmark.run.job import execute

    (spec,) = expand(Grid("t", None, {"dataset": ["breastmnist"], "generator": ["none"], "backbone": ["resnet18"],
                                      "rare_count": [20], "seed": [0]}, [], [], {"epochs": 1}, "test"))
    target = tmp_path / "victim.txt"
    target.write_text("precious\n")
    run_dir = tmp_path / spec.key
    run_dir.mkdir()
    os.symlink(target, run_dir / rd.LOCK_FILE)
    assert execute(spec, run_dir) == "failed"
    error = json.loads((run_dir / rd.ERROR_FILE).read_text())
    assert error["error"].startswith("UnsafeRunFolder:") and "symbolic link" in error["error"]
    assert target.read_text() == "precious\n" and not (run_dir / rd.RESULT_FILE).exists()


def test_temporary_names_are_unique_and_hidden(tmp_path):
    names = {rd.temp_sibling(tmp_path / "result.json").name for _ in range(200)}
    assert len(names) == 200 and all(n.startswith(".result.json.") and n.endswith(".tmp") for n in names)
    rd.write_bytes_atomic(tmp_path / "result.json", b"{}")
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # nothing left behind


def test_a_crafted_sample_index_cannot_pull_other_files_into_the_report(tmp_path, capsys):
    from benchmark.collect import report_figures as rf

    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG not yours")
    samples = tmp_path / "out" / rf.SAMPLES_DIR
    samples.mkdir(parents=True)
    (samples / "ok.png").write_bytes(b"\x89PNG mine")
    os.symlink(secret, samples / "link.png")
    index = {"dcgan": {"key": "0123456789abcdef", "seed": 0, "sheet": f"{rf.SAMPLES_DIR}/ok.png",
                       "closest": "../secret.png"},
             "ddpm": {"key": "fedcba9876543210", "seed": 0, "sheet": f"{rf.SAMPLES_DIR}/link.png",
                      "closest": "/etc/passwd"}}
    (samples / rf.SAMPLES_INDEX).write_text(json.dumps(index))
    found = rf.sheets_in(tmp_path / "out")
    assert found["dcgan"]["sheet"] == samples / "ok.png" and "closest" not in found["dcgan"]
    assert "sheet" not in found["ddpm"] and "closest" not in found["ddpm"]
    err = capsys.readouterr().err
    assert "'../secret.png'" in err and "'/etc/passwd'" in err and "not a PNG file inside" in err


@pytest.mark.parametrize("name", ["../../escape", "/abs/path", "a/b", 123, "..", ".hidden"])
def test_a_grid_name_that_is_not_a_plain_name_is_refused_before_anything(tmp_path, name):
    import subprocess
    import sys
    from pathlib import Path

    grid = tmp_path / "g.yaml"
    grid.write_text(f"name: {json.dumps(name)}\nversion: 1\naxes: {{dataset: [breastmnist]}}\n")
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(repo / "launch" / "grid.py"), "--grid", str(grid), "--dry-run",
                           "--results", str(tmp_path / "results")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and f"{grid}: grid name" in done.stderr and "not a plain name" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "results").exists()


@pytest.mark.parametrize("content, said", [(b"{not json", "unreadable"), (b"[1, 2]", "malformed"),
                                           (b"\xff\xfe\x00", "unreadable")])
def test_a_malformed_error_file_is_named_never_crashed_on(tmp_path, content, said):
    from benchmark.collect.records import read_error

    path = tmp_path / "error.json"
    path.write_bytes(content)
    assert read_error(path).startswith(f"{said} {path}")


@pytest.mark.parametrize("text, said", [
    (b"name: g\nversion: 1\naxes: [dataset, breastmnist]\n", "'axes' must be a mapping, got list"),
    (b"name: g\nversion: 1\naxes: {dataset: [breastmnist]}\ntraining: 30\n", "'training' must be a mapping"),
    (b"name: g\nversion: 1\naxes: {dataset: [breastmnist]}\nexclude: {generator: none}\n", "'exclude' must be a list"),
    (b"name: g\nversion: 1\naxes: {dataset: [\xe9]}\n", "is not UTF-8 text"),
])
def test_grid_files_of_the_wrong_shape_exit_2_naming_the_file(tmp_path, text, said):
    import subprocess
    import sys
    from pathlib import Path

    grid = tmp_path / "g.yaml"
    grid.write_bytes(text)
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(repo / "launch" / "grid.py"), "--grid", str(grid), "--dry-run",
                           "--results", str(tmp_path / "results")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and str(grid) in done.stderr and said in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
