"""Reward-free exploration on a grid: distinct cells visited, per behaviour and seed.

  .venv/bin/python scripts/explore_grid.py                                  # 3 seeds, 3,000 steps
  .venv/bin/python scripts/explore_grid.py --behaviors plan2explore greedy --seeds 0 1 2 \\
      --steps 3000 --out grid.json -- --disag_target deter --imag_horizon 10 --discount 0.9

A 21x21 grid without reward; four moves; every episode starts at the centre and lasts 40 steps
(so one episode can reach at most 40 cells in a straight line). The observation is the one-hot
x and y. Each behaviour trains the `debug` preset with `expl_extr_scale 0` and explores
throughout (`expl_until 0`); the count is the number of distinct cells the training env saw,
random prefill included. Arguments after `--` override config keys for every run. Prints one
JSON line per run and a summary (mean per behaviour) as the last line.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402


class Grid(gym.Env):
  """A reward-free grid; `visited` collects the cells of every instance made with record=True."""

  size = 21
  observation_space = gym.spaces.Box(0, 1, (2 * size,), np.float32)
  action_space = gym.spaces.Discrete(4)
  visited: set = set()

  def __init__(self, length: int = 40, record: bool = False):
    self._length, self._record = length, record

  def reset(self, *, seed=None, options=None):
    super().reset(seed=seed)
    self._t, self._pos = 0, (self.size // 2, self.size // 2)
    return self._obs(), {}

  def _obs(self):
    if self._record:
      Grid.visited.add(self._pos)
    obs = np.zeros(2 * self.size, np.float32)
    obs[self._pos[0]] = obs[self.size + self._pos[1]] = 1
    return obs

  def step(self, action):
    dx, dy = ((1, 0), (-1, 0), (0, 1), (0, -1))[int(action)]
    x, y = self._pos
    self._pos = (min(max(x + dx, 0), self.size - 1), min(max(y + dy, 0), self.size - 1))
    self._t += 1
    return self._obs(), 0.0, False, self._t >= self._length, {}


def visited_cells(behavior: str, seed: int, steps: int, logdir: str, overrides=()) -> int:
  """Trains `behavior` reward-free on the grid; the number of distinct cells it visited."""
  import dreamerv2_tf
  Grid.visited = set()
  config = dreamerv2_tf.load_config(['debug'], [
      '--precision', '32', '--logdir', logdir, '--seed', str(seed), '--steps', str(steps),
      '--prefill', '500', '--eval_every', '0', '--log_every', '1000', '--time_limit', '0',
      '--train_every', '5', '--dataset.length', '16', '--dataset.batch', '8',
      '--replay.minlen', '16', '--replay.maxlen', '16', '--model_opt.lr', '1e-3',
      '--actor_opt.lr', '1e-3', '--critic_opt.lr', '1e-3', '--expl_opt.lr', '1e-3',
      '--expl_behavior', behavior, '--expl_extr_scale', '0', '--expl_until', '0',
      *overrides])
  dreamerv2_tf.train(Grid(record=True), config, eval_env=Grid())
  return len(Grid.visited)


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  overrides = argv[argv.index('--') + 1:] if '--' in argv else []
  argv = argv[:argv.index('--')] if '--' in argv else argv
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--behaviors', nargs='+', default=['plan2explore', 'greedy'])
  parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
  parser.add_argument('--steps', type=int, default=3000)
  parser.add_argument('--out', default='', help='also write the summary JSON here')
  args = parser.parse_args(argv)
  counts = {}
  with tempfile.TemporaryDirectory() as tmp:
    for behavior in args.behaviors:
      for seed in args.seeds:
        start = time.time()
        n = visited_cells(behavior, seed, args.steps, f'{tmp}/{behavior}-{seed}', overrides)
        counts.setdefault(behavior, []).append(n)
        print(json.dumps({'behavior': behavior, 'seed': seed, 'visited': n,
                          'seconds': round(time.time() - start, 1)}), flush=True)
  summary = {'steps': args.steps, 'overrides': overrides, 'cells': Grid.size ** 2,
             'visited': counts, 'mean': {k: statistics.mean(v) for k, v in counts.items()}}
  print(json.dumps(summary), flush=True)
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(summary, f, indent=2)
  return 0


if __name__ == '__main__':
  sys.exit(main())
