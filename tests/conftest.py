"""Shared fixtures: spaces, tiny configs and synthetic batches."""
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import pytest

from dreamerv2_tf import load_config
from dreamerv2_tf.synthetic import make_batch, make_spaces  # noqa: F401  (re-exported to tests)


@pytest.fixture
def debug_config():
  return load_config(['atari', 'debug'])


# Worker-seconds per file in `make test` (2026-12-07, 2-core AMD EPYC, two workers, 3,500 in
# all). xdist's loadfile hands out whole files, by default the files with the most tests first,
# which once left the single 6-minute test_explore_grid for the end, run alone on one core.
# Longest first instead (`--no-loadscope-reorder` keeps this order): the other worker takes
# the short files meanwhile. A file not listed (a new one) goes first, to be safe.
FILE_SECONDS = {
    'test_train_cli.py': 652, 'test_distribute.py': 380, 'test_reliability_runs.py': 367,
    'test_learning.py': 285, 'test_bench.py': 246, 'test_parity.py': 240,
    'test_speed_paths.py': 223, 'test_explore_grid.py': 223, 'test_export.py': 196,
    'test_expl.py': 166, 'test_agent.py': 125, 'test_determinism.py': 97, 'test_help.py': 61,
    'test_schedule_parity.py': 59, 'test_sampled_parity.py': 57, 'test_reliability.py': 48,
    'test_envs.py': 15, 'test_plot.py': 14, 'test_replay.py': 13, 'test_gradients.py': 13,
    'test_config.py': 6, 'test_layers.py': 5, 'test_equations.py': 3, 'test_optim.py': 2,
    'test_dists.py': 2, 'test_nets.py': 1, 'test_logger.py': 1,
}


def pytest_collection_modifyitems(session, config, items):
  items.sort(key=lambda item: -FILE_SECONDS.get(item.path.name, float('inf')))
