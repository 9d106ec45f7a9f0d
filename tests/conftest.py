"""Shared fixtures: spaces, tiny configs and synthetic batches."""
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import pytest

from dreamerv2_tf import load_config
from dreamerv2_tf.synthetic import make_batch, make_spaces  # noqa: F401  (re-exported to tests)


@pytest.fixture
def debug_config():
  return load_config(['atari', 'debug'])
