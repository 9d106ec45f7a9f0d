"""A multi-worker run's cluster from `TF_CONFIG`, read without TensorFlow.

The training loop reads it before it imports TensorFlow (about ten seconds on a 2-core CPU),
so that a run set up wrongly stops at once with one line.
"""
from __future__ import annotations

import json
import os

from dreamerv2_tf.errors import ConfigError


def tf_config() -> dict:
  """The parsed `TF_CONFIG`, or {} when unset; malformed JSON is a one-line error."""
  text = os.environ.get('TF_CONFIG', '')
  if not text:
    return {}
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise ConfigError(f'TF_CONFIG is not valid JSON ({e}): {text[:80]!r}') from None


def check(strategy: str) -> None:
  """Raises a one-line ConfigError when `strategy` is multi_worker without a cluster."""
  if strategy == 'multi_worker' and not tf_config().get('cluster'):
    raise ConfigError('strategy multi_worker needs the TF_CONFIG environment variable with a '
                      '"cluster" and a "task" (see docs/distributed.md); it is not set')


def task_index(strategy: str) -> int:
  """This process's index among a multi-worker run's workers; 0 is the chief.

  The chief is the `chief` task of `TF_CONFIG`, or worker 0 when the cluster has none (then
  worker k is index k, else k + 1). Under the other strategies every process is its own chief.
  """
  if strategy != 'multi_worker':
    return 0
  config = tf_config()
  task = config.get('task', {})
  if task.get('type', 'chief') == 'chief':
    return 0
  has_chief = 'chief' in config.get('cluster', {})
  return int(task.get('index', 0)) + int(has_chief)
