from tests.data_fixtures import data_env, real_data_dir  # noqa: F401
from tests.slurm_fixtures import slurm_cluster  # noqa: F401
