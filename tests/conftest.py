"""Shared fixtures: spaces, tiny configs and synthetic batches."""
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import pytest

from dreamerv2_tf import load_config
from dreamerv2_tf.synthetic import make_batch, make_spaces  # noqa: F401  (re-exported to tests)


@pytest.fixture
def debug_config():
  return load_config(['atari', 'debug'])


# Worker-seconds per file in `make test` (2026-12-07, 2-core AMD EPYC, two workers). xdist's
# loadfile hands out whole files, by default the files with the most tests first, which left
# the single 6-minute test_explore_grid for the end, run alone on one core. Longest first
# instead (`--no-loadscope-reorder` keeps this order): the other worker takes the short files
# meanwhile. A file not listed (a new one) goes first, to be safe.
FILE_SECONDS = {
    'test_train_cli.py': 1079, 'test_reliability_runs.py': 531, 'test_distribute.py': 511,
    'test_explore_grid.py': 363, 'test_learning.py': 348, 'test_bench.py': 287,
    'test_export.py': 223, 'test_parity.py': 203, 'test_expl.py': 178,
    'test_speed_paths.py': 165, 'test_agent.py': 146, 'test_determinism.py': 117,
    'test_help.py': 107, 'test_sampled_parity.py': 102, 'test_reliability.py': 63,
    'test_schedule_parity.py': 56, 'test_envs.py': 17, 'test_replay.py': 15, 'test_plot.py': 11,
    'test_gradients.py': 10, 'test_config.py': 6, 'test_equations.py': 3, 'test_layers.py': 3,
    'test_dists.py': 2, 'test_nets.py': 1,
}


def pytest_collection_modifyitems(session, config, items):
  items.sort(key=lambda item: -FILE_SECONDS.get(item.path.name, float('inf')))
