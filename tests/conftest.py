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
