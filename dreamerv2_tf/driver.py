"""Steps a batch of environments with a policy and hands out transitions and episodes.

The action stored with a transition is the action that led into it (zeros at `is_first`), the
layout of the replay and the world model's `observe`.
"""
from __future__ import annotations

from typing import Callable

import gymnasium as gym
import numpy as np


class Driver:
  """Runs a policy on a batch environment (`obs [N, ...]`, auto-reset after `is_last`).

  Callbacks: `on_step(transition, worker)` for every environment step of every worker and
  `on_episode(episode, worker)` with the stacked episode when it ends. `stop` is polled after
  every step, so a signal handler can end a run at a clean boundary.
  """

  def __init__(self, env, act_space: gym.Space):
    self.env = env
    self.act_space = act_space
    self._on_step: list[Callable] = []
    self._on_episode: list[Callable] = []
    self.stop = lambda: False
    self.reset()

  def on_step(self, fn: Callable) -> None:
    self._on_step.append(fn)

  def on_episode(self, fn: Callable) -> None:
    self._on_episode.append(fn)

  def reset(self) -> None:
    """Forgets the running episodes and the policy state; the next call resets the envs."""
    self._obs, self._state, self._eps = None, None, None

  def __call__(self, policy: Callable, steps: int = 0, episodes: int = 0) -> tuple[int, int]:
    """Runs until `steps` agent steps (summed over workers) and `episodes` episodes are done.

    policy(obs, state) -> (actions [N, A], state). Returns (steps, episodes) done. A reset
    transition (`is_first`) is no agent step, as in the paper's driver and the loop's step
    counter: a call of `steps` agent steps ends exactly where the loop's schedule expects.

      env calls  reset  step  step  step(last)  step->reset  step  ...
      obs        f0     o1    o2    o3 last     f0'          o1'
      counted    -      1     2     3           -            4
    """
    step = episode = 0
    while (step < steps or episode < episodes) and not self.stop():
      if self._obs is None:
        self._obs = self.env.reset()
        self._state = None
        self._eps = [[] for _ in range(len(self._obs['is_first']))]
        for i in range(len(self._eps)):
          self._record(i, self._obs, np.zeros(self._size(), np.float32))
      actions, self._state = policy(self._obs, self._state)
      actions = np.asarray(actions, np.float32)
      self._obs = self.env.step({'action': actions})
      for i in range(len(self._eps)):
        first = bool(self._obs['is_first'][i])
        action = np.zeros_like(actions[i]) if first else actions[i]
        if first:
          self._eps[i] = []
        else:
          step += 1
        if self._record(i, self._obs, action):
          episode += 1
    return step, episode

  def _record(self, i: int, obs: dict, action: np.ndarray) -> bool:
    tran = {k: v[i] for k, v in obs.items()}
    tran['action'] = action
    self._eps[i].append(tran)
    for fn in self._on_step:
      fn(tran, i)
    if not tran['is_last']:
      return False
    ep = {k: np.stack([t[k] for t in self._eps[i]]) for k in self._eps[i][0]}
    for fn in self._on_episode:
      fn(ep, i)
    self._eps[i] = []
    return True

  def _size(self) -> int:
    space = self.act_space
    return int(space.n) if isinstance(space, gym.spaces.Discrete) else int(space.shape[0])


def random_policy(act_space: gym.Space, rng: np.random.Generator) -> Callable:
  """Uniform random actions in the agent's format (one-hot, or uniform in [-1, 1])."""
  def policy(obs, state):
    n = len(obs['is_first'])
    if isinstance(act_space, gym.spaces.Discrete):
      return np.eye(act_space.n, dtype=np.float32)[rng.integers(0, act_space.n, n)], None
    return rng.uniform(-1, 1, (n,) + act_space.shape).astype(np.float32), None
  return policy
