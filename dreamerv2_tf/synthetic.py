"""Synthetic spaces and batches in the agent's data format, for benchmarks and tests."""
from __future__ import annotations

import gymnasium as gym
import numpy as np


def make_spaces(image=(64, 64, 1), vector=None, actions=6, continuous=False):
  """Observation and action `Dict` spaces as the environment wrappers produce them."""
  obs = {}
  if image:
    obs['image'] = gym.spaces.Box(0, 255, image, np.uint8)
  if vector:
    obs['vector'] = gym.spaces.Box(-np.inf, np.inf, (vector,), np.float32)
  obs['reward'] = gym.spaces.Box(-np.inf, np.inf, (), np.float32)
  for key in ('is_first', 'is_last', 'is_terminal'):
    obs[key] = gym.spaces.Box(0, 1, (), bool)
  if continuous:
    act = gym.spaces.Box(-1, 1, (actions,), np.float32)
  else:
    act = gym.spaces.Discrete(actions)
  return gym.spaces.Dict(obs), gym.spaces.Dict({'action': act})


def make_batch(obs_space, act_space, batch=4, length=10, seed=0):
  """A random batch `[B, T, ...]` with episode starts, terminals and one-hot actions."""
  rng = np.random.default_rng(seed)
  data = {}
  for key, space in obs_space.spaces.items():
    shape = (batch, length) + space.shape
    if space.dtype == np.uint8:
      data[key] = rng.integers(0, 256, shape, dtype=np.uint8)
    elif space.dtype == bool:
      data[key] = np.zeros(shape, bool)
    else:
      data[key] = rng.normal(size=shape).astype(np.float32)
  data['is_first'][:, 0] = True
  data['is_terminal'][0, -1] = True
  data['is_last'][0, -1] = True
  act = act_space['action']
  if isinstance(act, gym.spaces.Discrete):
    data['action'] = np.eye(act.n, dtype=np.float32)[rng.integers(0, act.n, (batch, length))]
  else:
    data['action'] = rng.uniform(-1, 1, (batch, length) + act.shape).astype(np.float32)
  data['action'][:, 0] = 0
  return data
