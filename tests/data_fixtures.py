"""Fixtures for the real BreastMNIST file (found through GENMED_DATA_DIR; CI=true makes its absence a failure)."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data"


def breastmnist_dir() -> Path:
    return Path(os.environ.get("GENMED_DATA_DIR") or DEFAULT_DATA_DIR)


def require_data_file(folder: Path, name: str) -> Path:
    """``folder / name``, a real data file the test needs: its absence fails the test in CI (CI=true) and skips it
    elsewhere, with the reason and the fix."""
    path = Path(folder) / name
    if not path.is_file():
        message = (f"{name} not found in {folder}; set GENMED_DATA_DIR to the folder holding it "
                   "(CI uses ../shared/data)")
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(reason=message)
    return path


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The folder holding the real breastmnist.npz. In CI a missing file fails the test, never skips it."""
    folder = breastmnist_dir()
    require_data_file(folder, "breastmnist.npz")
    return folder


@pytest.fixture
def data_env(real_data_dir, monkeypatch):
    """GENMED_DATA_DIR pointing at the real data for code under test."""
    monkeypatch.setenv("GENMED_DATA_DIR", str(real_data_dir))
    from benchmark.run.cell import load_bundle

    load_bundle.cache_clear()
    yield real_data_dir
    load_bundle.cache_clear()
