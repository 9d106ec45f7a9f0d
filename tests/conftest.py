"""Shared fixtures: spaces, tiny configs and synthetic batches."""
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import pytest

from dreamerv2_tf import load_config
from dreamerv2_tf.synthetic import make_batch, make_spaces  # noqa: F401  (re-exported to tests)


@pytest.fixture
def debug_config():
  return load_config(['atari', 'debug'])


# Worker-seconds per file in `make test` (2026-12-07, 2-core AMD EPYC, two workers, 3,173 in
# all). xdist's loadfile hands out whole files, by default the files with the most tests first,
# which once left the single 6-minute test_explore_grid for the end, run alone on one core.
# Longest first instead (`--no-loadscope-reorder` keeps this order): the other worker takes
# the short files meanwhile. A file not listed (a new one) goes first, to be safe.
FILE_SECONDS = {
    'test_reliability_runs.py': 520, 'test_train_cli.py': 501, 'test_distribute.py': 298,
    'test_parity.py': 258, 'test_learning.py': 256, 'test_bench.py': 220, 'test_export.py': 203,
    'test_explore_grid.py': 192, 'test_expl.py': 134, 'test_speed_paths.py': 129,
    'test_agent.py': 105, 'test_determinism.py': 68, 'test_help.py': 62,
    'test_sampled_parity.py': 59, 'test_schedule_parity.py': 57, 'test_reliability.py': 41,
    'test_replay.py': 16, 'test_envs.py': 15, 'test_plot.py': 13, 'test_gradients.py': 7,
    'test_config.py': 7, 'test_layers.py': 4, 'test_optim.py': 2, 'test_equations.py': 2,
    'test_dists.py': 2, 'test_nets.py': 1, 'test_logger.py': 1,
}


def pytest_collection_modifyitems(session, config, items):
  items.sort(key=lambda item: -FILE_SECONDS.get(item.path.name, float('inf')))
