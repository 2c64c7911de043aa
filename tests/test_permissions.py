"""Permissions that fit a shared cluster (issue 21, item 1): the results tree is private to the user by default
(folders 0700, files 0600) whatever the umask, GENMED_RESULTS_MODE=group widens it to 0750 / 0640 (never world), and
a logs/ folder (submitit's pickled job files) that others can write to is refused before anything starts."""

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.dataset_makers import TINY_BACKBONE, make_npz

REPO = Path(__file__).resolve().parents[1]


def tiny_grid(tmp_path) -> tuple[Path, dict]:
    """A one-job grid on a small .npz with the ~0.4 M-parameter test backbone, and the environment to run it."""
    npz = make_npz(tmp_path / "tiny.npz", {"train": [20, 8], "val": [4, 4], "test": [4, 4]})
    reg = tmp_path / "reg"
    for kind, name, entry in (("dataset", "tinynpz", {"target": "benchmark.data.npz:NpzDataset",
                                                       "config": {"path": str(npz), "image_size": 28}}),
                              ("backbone", "tinynet", TINY_BACKBONE)):
        (reg / f"{kind}s").mkdir(parents=True, exist_ok=True)
        (reg / f"{kind}s" / f"{name}.yaml").write_text(yaml.safe_dump({"version": 1, **entry}))
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"name": "perm", "version": 1, "axes": {
        "dataset": ["tinynpz"], "generator": ["none"], "backbone": ["tinynet"], "rare_count": [4], "seed": [0]},
        "training": {"epochs": 1, "batch_size": 8, "eval_batch_size": 16}}))
    env = {**os.environ, "GENMED_REGISTRY_PATH": str(reg), "GENMED_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("GENMED_RESULTS_MODE", None)
    return grid, env


def grid_cli(args, env, umask=0o000):
    """launch/grid.py started under a permissive umask (what a careless shell or a group-shared account has)."""
    return subprocess.run([sys.executable, str(REPO / "launch" / "grid.py"), *args], capture_output=True, text=True,
                          env=env, timeout=300, preexec_fn=lambda: os.umask(umask))


def modes(root: Path) -> dict:
    """{relative path: permission bits} of every folder and file under root (root included)."""
    out = {".": stat.S_IMODE(os.stat(root).st_mode)}
    for path in root.rglob("*"):
        if not path.is_symlink():
            out[str(path.relative_to(root))] = stat.S_IMODE(os.stat(path).st_mode)
    return out


@pytest.mark.parametrize("mode, folders, files", [(None, 0o700, 0o600), ("group", 0o750, 0o640)])
def test_a_real_run_writes_its_results_tree_private_or_group_readable_never_world(tmp_path, mode, folders, files):
    grid, env = tiny_grid(tmp_path)
    if mode:
        env["GENMED_RESULTS_MODE"] = mode
    results = tmp_path / "results"
    done = grid_cli(["--grid", str(grid), "--executor", "debug", "--results", str(results)], env)
    assert done.returncode == 0, done.stderr
    found = modes(results)
    record = [p for p in found if p.endswith("result.json")]
    assert record and any(p.endswith("predictions.npz") for p in found)
    for rel, bits in found.items():
        is_dir = (results / rel).is_dir()
        assert bits == (folders if is_dir else files), (rel, oct(bits))


def test_an_unknown_results_mode_exits_2_before_anything(tmp_path):
    grid, env = tiny_grid(tmp_path)
    done = grid_cli(["--grid", str(grid), "--dry-run", "--results", str(tmp_path / "r")],
                    {**env, "GENMED_RESULTS_MODE": "world"})
    assert done.returncode == 2 and "$GENMED_RESULTS_MODE is 'world'" in done.stderr
    assert "use private" in done.stderr and "Traceback" not in done.stderr and not (tmp_path / "r").exists()


@pytest.mark.parametrize("where, bits, who", [("logs", 0o775, "group"), ("logs", 0o757, "others"),
                                              (".", 0o777, "group and others")])
def test_a_logs_folder_others_can_write_is_refused_before_any_job(tmp_path, where, bits, who):
    grid, env = tiny_grid(tmp_path)
    out = tmp_path / "results" / "perm"
    (out / "logs").mkdir(parents=True)
    os.chmod(out / where, bits)
    folder = (out / where).resolve()
    for extra in (["--dry-run"], ["--executor", "local"]):
        done = grid_cli(["--grid", str(grid), "--results", str(tmp_path / "results"), *extra], env)
        assert done.returncode == 2, done.stderr
        assert f"{folder} is writable by {who} (mode {bits:04o})" in done.stderr, done.stderr
        assert f"chmod go-w {folder}" in done.stderr and "Traceback" not in done.stderr
    assert not (out / "runs").exists() and not list((out / "logs").iterdir())
    os.chmod(out / where, 0o700)  # the fix the message gives (go-w) is enough
    done = grid_cli(["--grid", str(grid), "--results", str(tmp_path / "results"), "--dry-run"], env)
    assert done.returncode == 0, done.stderr


def test_a_symlinked_logs_folder_is_refused(tmp_path):
    grid, env = tiny_grid(tmp_path)
    out = tmp_path / "results" / "perm"
    out.mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", out / "logs")
    done = grid_cli(["--grid", str(grid), "--results", str(tmp_path / "results"), "--dry-run"], env)
    assert done.returncode == 2 and f"{out / 'logs'} is a symbolic link" in done.stderr, done.stderr


def test_a_grid_folder_readable_by_others_is_named_with_the_fix(tmp_path):
    grid, env = tiny_grid(tmp_path)
    out = tmp_path / "results" / "perm"
    out.mkdir(parents=True)
    os.chmod(out, 0o755)
    done = grid_cli(["--grid", str(grid), "--results", str(tmp_path / "results"), "--dry-run"], env)
    assert done.returncode == 0, done.stderr
    assert f"warning: {out} has mode 0755" in done.stderr and f"chmod -R go-rwx {out}" in done.stderr
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o755  # named, never changed behind the user's back


def test_the_lock_and_atomic_writes_follow_the_mode_under_a_permissive_umask(tmp_path, monkeypatch):
    """In-process: the run-folder writers (lock, atomic JSON, atomic path) under apply_results_mode."""
    from benchmark.run import run_dir as rd

    monkeypatch.setenv(rd.RESULTS_MODE_ENV, "group")
    old = os.umask(0)
    try:
        rd.apply_results_mode()
        run = tmp_path / "runs" / "0123456789abcdef"
        with rd.lock(run):
            rd.write_json_atomic(run / rd.RESULT_FILE, {"x": 1})
            with rd.atomic_path(run / "model.safetensors") as tmp:
                tmp.write_bytes(b"w")
    finally:
        os.umask(old)
    assert {rel: oct(bits) for rel, bits in modes(tmp_path / "runs").items()} == {
        ".": "0o750", "0123456789abcdef": "0o750", f"0123456789abcdef/{rd.LOCK_FILE}": "0o640",
        f"0123456789abcdef/{rd.RESULT_FILE}": "0o640", "0123456789abcdef/model.safetensors": "0o640"}
