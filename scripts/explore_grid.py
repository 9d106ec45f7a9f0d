"""Reward-free exploration on a grid: distinct cells visited, per behaviour and seed.

  .venv/bin/python scripts/explore_grid.py                                  # 3 seeds, 3,000 steps
  .venv/bin/python scripts/explore_grid.py --grid 101x1 --length 50 --obs coords --seeds 0 1 \
      --out corridor.json -- --disag_models 10 --imag_horizon 15 --expl_head.units 128

By default a 21x21 grid without reward; four moves; every episode starts at the centre and
lasts 40 steps (so one episode can reach at most 40 cells in a straight line); the observation
is the one-hot x and y. `--grid WxH` (height 1: a corridor with two moves), `--length`,
`--start corner` and `--obs cell|coords|image` (one-hot cell; x and y as two numbers in [-1, 1];
a 64x64 image with the agent drawn as a block) change the task. Each behaviour trains the `debug` preset with `expl_extr_scale 0` and explores
throughout (`expl_until 0`); the count is the number of distinct cells the training env saw,
random prefill included. Arguments after `--` override config keys for every run. Prints one
JSON line per run and a summary (mean per behaviour) as the last line. What was measured with
it, and why the margins are what they are: docs/exploration.md.
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
  """A reward-free grid; `visited` collects the cells of every instance made with record=True.

  A grid one cell high is a corridor with two moves (right, left); otherwise four moves.
  Episodes start at the centre or at the corner (0, 0) and last `length` steps.
  """

  visited: set = set()

  def __init__(self, width: int = 21, height: int = 21, length: int = 40,
               start: str = 'centre', scale: float = 1.0, obs: str = 'xy', record: bool = False):
    self._size, self._length, self._record, self._scale = (width, height), length, record, scale
    self._obs_kind = obs
    self._start = (width // 2, height // 2) if start == 'centre' else (0, 0)
    self._moves = ((1, 0), (-1, 0)) if height == 1 else ((1, 0), (-1, 0), (0, 1), (0, -1))
    if obs == 'image':  # 64x64 grey, each cell a square block, the agent's block white
      if max(width, height) > 64:
        raise ValueError(f'--obs image draws at most 64 cells a side, got {width}x{height}')
      self.observation_space = gym.spaces.Box(0, 255, (64, 64, 1), np.uint8)
    else:
      dims = {'xy': width + height, 'cell': width * height, 'coords': 2}[obs]
      self.observation_space = gym.spaces.Box(-scale, scale, (dims,), np.float32)
    self.action_space = gym.spaces.Discrete(len(self._moves))

  def reset(self, *, seed=None, options=None):
    super().reset(seed=seed)
    self._t, self._pos = 0, self._start
    return self._obs(), {}

  def _obs(self):
    if self._record:
      Grid.visited.add(self._pos)
    (x, y), (w, h) = self._pos, self._size
    if self._obs_kind == 'coords':  # x and y in [-scale, scale]
      return np.array([self._scale * (2 * x / max(w - 1, 1) - 1),
                       self._scale * (2 * y / max(h - 1, 1) - 1)], np.float32)
    if self._obs_kind == 'image':
      image, c = np.zeros((64, 64, 1), np.uint8), 64 // max(w, h)
      image[y * c:(y + 1) * c, x * c:(x + 1) * c] = 255
      return image
    obs = np.zeros(self.observation_space.shape, np.float32)
    if self._obs_kind == 'xy':  # one-hot x, then one-hot y
      obs[x] = obs[w + y] = self._scale
    else:  # one-hot cell
      obs[y * w + x] = self._scale
    return obs

  def step(self, action):
    dx, dy = self._moves[int(action)]
    (x, y), (w, h) = self._pos, self._size
    self._pos = (min(max(x + dx, 0), w - 1), min(max(y + dy, 0), h - 1))
    self._t += 1
    return self._obs(), 0.0, False, self._t >= self._length, {}


def visited_cells(behavior: str, seed: int, steps: int, logdir: str, overrides=(),
                  **grid) -> int:
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
  dreamerv2_tf.train(Grid(record=True, **grid), config, eval_env=Grid(**grid))
  return len(Grid.visited)


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  overrides = argv[argv.index('--') + 1:] if '--' in argv else []
  argv = argv[:argv.index('--')] if '--' in argv else argv
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--behaviors', nargs='+', default=['plan2explore', 'greedy'])
  parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
  parser.add_argument('--steps', type=int, default=3000)
  parser.add_argument('--grid', default='21x21', help='WIDTHxHEIGHT (height 1: a corridor)')
  parser.add_argument('--length', type=int, default=40, help='steps per episode')
  parser.add_argument('--start', choices=['centre', 'corner'], default='centre')
  parser.add_argument('--scale', type=float, default=1.0, help='value of the hot cell')
  parser.add_argument('--obs', choices=['xy', 'cell', 'coords', 'image'], default='xy',
                      help='one-hot x and y, one-hot cell, x and y as two numbers, or a 64x64 '
                      'image with the agent drawn as a block')
  parser.add_argument('--out', default='', help='also write the summary JSON here')
  args = parser.parse_args(argv)
  width, height = (int(n) for n in args.grid.split('x'))
  grid = dict(width=width, height=height, length=args.length, start=args.start, scale=args.scale,
              obs=args.obs)
  counts = {}
  with tempfile.TemporaryDirectory() as tmp:
    for behavior in args.behaviors:
      for seed in args.seeds:
        start = time.time()
        n = visited_cells(behavior, seed, args.steps, f'{tmp}/{behavior}-{seed}', overrides,
                          **grid)
        counts.setdefault(behavior, []).append(n)
        print(json.dumps({'behavior': behavior, 'seed': seed, 'visited': n,
                          'seconds': round(time.time() - start, 1)}), flush=True)
  summary = {'steps': args.steps, 'overrides': overrides, 'grid': grid, 'cells': width * height,
             'visited': counts, 'mean': {k: statistics.mean(v) for k, v in counts.items()}}
  print(json.dumps(summary), flush=True)
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(summary, f, indent=2)
  return 0


if __name__ == '__main__':
  sys.exit(main())
