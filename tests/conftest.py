import os
from pathlib import Path

from tests.data_fixtures import data_env, real_data_dir  # noqa: F401
from tests.shared_run import shared_run  # noqa: F401
from tests.slurm_fixtures import slurm_cluster  # noqa: F401

# Test registry entries name classes in this package (`target: tests.test_slurm_grid:MeanGenerator`): the CLIs the
# tests start (launch/*.py, whose sys.path[0] is launch/) and the SLURM jobs they submit must import it too.
_REPO = str(Path(__file__).resolve().parent.parent)
if _REPO not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_REPO, os.environ.get("PYTHONPATH")) if p)

import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def tiny_pipeline_dir(tmp_path_factory):
    """generators_smoke's `pipeline_smoke` entry reads $GENMED_PIPELINE_DIR: a tiny random class-conditional
    diffusers pipeline (launch/make_tiny_pipeline.py), written once per session — its bytes are seeded, so its
    hash, and the job keys tests/data/job_keys.json records, are the same on every machine with the pinned
    libraries. A value the caller set is kept."""
    if os.environ.get("GENMED_PIPELINE_DIR"):
        yield Path(os.environ["GENMED_PIPELINE_DIR"])
        return
    from benchmark.generators.tiny_pipeline import write_tiny_class_pipeline

    folder = tmp_path_factory.mktemp("tiny_pipeline")
    write_tiny_class_pipeline(folder)
    os.environ["GENMED_PIPELINE_DIR"] = str(folder)
    yield folder
    os.environ.pop("GENMED_PIPELINE_DIR", None)
