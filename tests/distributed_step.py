"""One train step under the default strategy and under MirroredStrategy on 2 logical CPUs.

Run as a script (logical devices must be configured before TensorFlow starts); prints one JSON
line with the largest differences in metrics and in every variable after the step.

  python tests/distributed_step.py [--continuous] [--steps 2] [config overrides, e.g. --precision 16]
"""
import json
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from dreamerv2_tf.config import load_config  # noqa: E402
from dreamerv2_tf.synthetic import make_batch, make_spaces  # noqa: E402


def pop_flag(argv, name, default=None, has_value=True):
  if name not in argv:
    return argv, default
  i = argv.index(name)
  value = argv[i + 1] if has_value else True
  return argv[:i] + argv[i + 1 + has_value:], value


def metric_diff(a, b):
  # Relative difference; two equal non-finite values (a skipped step's norm) count as equal.
  if not (np.isfinite(a) and np.isfinite(b)):
    return 0.0 if (a == b or (np.isnan(a) and np.isnan(b))) else float('inf')
  return abs(a - b) / max(1.0, abs(a))


def main(argv, tmpdir):
  cpu = tf.config.list_physical_devices('CPU')[0]
  tf.config.set_logical_device_configuration(
      cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
  from dreamerv2_tf.agent import Agent
  argv, continuous = pop_flag(argv, '--continuous', False, has_value=False)
  argv, steps = pop_flag(argv, '--steps', 2)
  steps = int(steps)
  tf.keras.utils.set_random_seed(0)  # The same initial weights every run.
  # float32 unless asked: `auto` may pick bf16 on this CPU, whose rounding exceeds 1e-5.
  config = load_config(['debug'], ['--precision', '32', *argv])
  spaces = make_spaces(image=(64, 64, 1), vector=3, actions=5, continuous=continuous)
  batch = make_batch(*spaces, batch=config.dataset.batch, length=config.dataset.length, seed=3)
  batch['reward'][:] = np.random.default_rng(0).normal(size=batch['reward'].shape)

  single = Agent(config, *spaces)
  start = [v.numpy() for v in single.weights_]
  # The mirrored agent starts from the single agent's checkpoint, as a resumed worker would.
  path = tf.train.Checkpoint(agent=single).write(os.path.join(tmpdir, 'ckpt'))
  strategy = tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])
  mirrored = Agent(config, *spaces, strategy=strategy)
  tf.train.Checkpoint(agent=mirrored).read(path).assert_existing_objects_matched()
  assert len(mirrored.weights_) == len(start)

  results = {}
  for step in range(steps):  # The second step starts from Adam moments and a moved target.
    m1 = single.train(batch)
    m2 = mirrored.train(batch)
    # Standard deviations are averaged over replicas, not pooled: not comparable.
    results[f'metric_diff_{step}'] = {
        k: metric_diff(m1[k], m2[k]) for k in m1 if not k.endswith('_std')}
    results[f'metrics_{step}'] = {k: m1[k] for k in m1 if k.endswith(('_loss', '_skipped_steps',
                                                                      '_loss_scale'))}
  worst, moved = 0.0, 0.0
  for a, b, s in zip(single.weights_, mirrored.weights_, start):
    parts = strategy.experimental_local_results(b)
    for part in parts:  # Every replica's copy must hold the same weights.
      worst = max(worst, float(np.max(np.abs(a.numpy() - part.numpy()), initial=0)))
    if np.issubdtype(s.dtype, np.floating):
      moved = max(moved, float(np.max(np.abs(a.numpy() - s), initial=0)))
  results.update(replicas=strategy.num_replicas_in_sync, weight_diff=worst, weight_moved=moved,
                 metric_keys=sorted(m1))
  print(json.dumps(results))


if __name__ == '__main__':
  import tempfile
  with tempfile.TemporaryDirectory() as tmp:
    main(sys.argv[1:], tmp)
