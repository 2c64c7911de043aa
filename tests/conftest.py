from tests.data_fixtures import data_env, real_data_dir  # noqa: F401
