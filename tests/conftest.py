"""Shared fixtures: spaces, tiny configs and synthetic batches."""
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# Under xdist each worker's TensorFlow would start a thread per core for its ops: two workers
# on two cores then run four busy threads that wait on each other. A share of the cores per
# worker (the test processes a worker starts inherit it): on a 2-core AMD EPYC the suite took
# 1,418 s this way and 1,610 s with TensorFlow's default of a thread per core (2026-12-07).
_WORKERS = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))
if _WORKERS > 1:
  _THREADS = str(max(1, (os.cpu_count() or 1) // _WORKERS))
  os.environ.setdefault('TF_NUM_INTRAOP_THREADS', _THREADS)
  os.environ.setdefault('TF_NUM_INTEROP_THREADS', _THREADS)

import pytest

from dreamerv2_tf import load_config
from dreamerv2_tf.synthetic import make_batch, make_spaces  # noqa: F401  (re-exported to tests)


@pytest.fixture
def debug_config():
  return load_config(['atari', 'debug'])


# Worker-seconds per file in `make test` (2026-12-07, 2-core AMD EPYC, two workers, 2,790 in
# all). xdist's loadfile hands out whole files, by default the files with the most tests first,
# which once left the single 6-minute test_explore_grid for the end, run alone on one core.
# Longest first instead (`--no-loadscope-reorder` keeps this order): the other worker takes
# the short files meanwhile. A file not listed (a new one) goes first, to be safe.
FILE_SECONDS = {
    'test_reliability_runs.py': 421, 'test_train_cli.py': 414, 'test_distribute.py': 274,
    'test_bench.py': 258, 'test_learning.py': 218, 'test_explore_grid.py': 179,
    'test_parity.py': 176, 'test_export.py': 162, 'test_expl.py': 135, 'test_speed_paths.py': 134,
    'test_agent.py': 105, 'test_determinism.py': 73, 'test_sampled_parity.py': 51,
    'test_reliability.py': 45, 'test_schedule_parity.py': 44, 'test_help.py': 37,
    'test_envs.py': 15, 'test_replay.py': 12, 'test_plot.py': 12, 'test_gradients.py': 8,
    'test_config.py': 7, 'test_layers.py': 4, 'test_equations.py': 2, 'test_optim.py': 2,
    'test_dists.py': 2, 'test_nets.py': 1, 'test_logger.py': 1, 'test_docs.py': 1,
}


def pytest_collection_modifyitems(session, config, items):
  items.sort(key=lambda item: -FILE_SECONDS.get(item.path.name, float('inf')))
