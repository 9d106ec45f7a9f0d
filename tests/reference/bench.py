"""One benchmark row of either code, in its own process: train step and batch-1 policy step.

  python -m tests.reference.bench SIDE PRECISION STEPS POLICY_STEPS [PRESET ...]

SIDE is `ours` (dreamerv2_tf, Keras 3) or `paper` (the paper's code 2.2.0 on tf_keras, imported
as the parity harness does); PRECISION is `32` or `bf16` (mixed bfloat16); PRESET names our
presets (default `atari`), which the paper's side maps to its own configs.yaml presets of the
same name (the paper's `debug` differs from ours: it turns tf.function off and keeps the
network sizes, so rows with it are smoke runs, not comparisons). Both sides train on the same
synthetic batch (`dreamerv2_tf.synthetic`: 64x64x1 images, 6 one-hot actions, 16 x 50 at the atari
preset) with the initial state zero at every call, and act on its first frame at batch 1.
Prints one JSON line: first call (trace) seconds, train-step times, policy-step times.
`scripts/bench_reference.py` runs and alternates these rows.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import time


def _timed(fn, steps: int) -> tuple[float, list[float]]:
  start = time.perf_counter()
  fn()
  first = time.perf_counter() - start
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return first, times


def ours(precision: str, presets: list[str]):
  """Our agent's train and policy callables at the presets, and its batch."""
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  from dreamerv2_tf import load_config
  from dreamerv2_tf.agent import Agent
  from dreamerv2_tf.synthetic import make_batch, make_spaces
  config = load_config(presets, ['--precision', precision])
  spaces = make_spaces()
  batch = make_batch(*spaces, batch=config.dataset.batch, length=config.dataset.length)
  agent = Agent(config, *spaces)
  obs = {k: v[:1, 0] for k, v in batch.items() if k != 'action'}
  state = [None]

  def act():
    _, state[0] = agent.policy(obs, state[0], 'train')
  from dreamerv2_tf import flops
  gflop = flops.train_step_flops(agent, config.dataset.batch, config.dataset.length)['total'] / 1e9
  return (lambda: agent.train(batch)), act, {'gflop_per_train_step': round(gflop, 1)}


def paper(precision: str, presets: list[str]):
  """The paper's agent at the same presets (its own configs.yaml), on the same batch."""
  from tests.reference.paper import Box, import_reference
  agent, common, folder = import_reference()
  import numpy as np
  import ruamel.yaml
  import tensorflow as tf
  from dreamerv2_tf.synthetic import make_batch, make_spaces
  if precision == 'bf16':
    tf.keras.mixed_precision.set_global_policy('mixed_bfloat16')
  configs = ruamel.yaml.YAML(typ='safe', pure=True).load((folder / 'configs.yaml').read_text())
  config = common.Config(configs['defaults'])
  for name in presets:
    config = config.update(configs[name])
  obs_space, act_space = make_spaces()
  batch = make_batch(obs_space, act_space, batch=config.dataset.batch,
                     length=config.dataset.length)
  spaces = {k: Box(0, 1, v.shape) for k, v in obs_space.spaces.items()}
  n = int(act_space['action'].n)
  agnt = agent.Agent(config, spaces, {'action': Box(-1, 1, (n,), n=n)}, 0)
  data = {k: tf.constant(v) for k, v in batch.items()}
  obs = {k: tf.constant(v[:1, 0]) for k, v in batch.items() if k != 'action'}
  state = [None]

  def train():
    _, metrics = agnt.train(data)
    return {k: np.asarray(v) for k, v in metrics.items()}

  def act():
    outputs, state[0] = agnt.policy(obs, state[0], 'train')
    np.asarray(outputs['action'])
  return train, act, {}


def main(argv: list[str]) -> None:
  side, precision, steps, policy_steps, *presets = argv
  if side not in ('ours', 'paper') or precision not in ('32', 'bf16'):
    sys.exit(f'usage: {__doc__.splitlines()[2].strip()}')
  train, act, extra = (ours if side == 'ours' else paper)(precision, presets or ['atari'])
  first, times = _timed(train, int(steps))
  act_first, act_times = _timed(act, int(policy_steps))
  print(json.dumps({
      'side': side, 'precision': precision, 'presets': presets or ['atari'],
      'first_call_s': round(first, 2), 'train_step_s': [round(t, 4) for t in times],
      'train_step_median_s': round(statistics.median(times), 4),
      'policy_first_call_s': round(act_first, 2),
      'policy_step_median_ms': round(1e3 * statistics.median(act_times), 3), **extra}))


if __name__ == '__main__':
  main(sys.argv[1:])
