"""Crafter (Hafner, 2021) following the observation contract.

`crafter_reward` gives the game's reward, `crafter_noreward` gives 0 (the true reward still goes
to `log_reward`). Every observation carries `log_achievement_<name>`: how often each achievement
was unlocked so far in the episode. Dying is terminal; the episode length limit is not.
Crafter is an optional dependency (`pip install crafter`); it uses the old 4-tuple step API.
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from dreamerv2_tf.envs import base


def _import_crafter() -> Any:
  try:
    import crafter
  except ImportError:
    raise ImportError('Crafter is not installed; pip install crafter') from None
  return crafter


class Crafter(base.Env):
  """The Crafter survival game.

  Args:
    reward: give the game reward (crafter_reward) or 0 (crafter_noreward).
    action_repeat: game steps per agent step (1 in the paper).
    size: (height, width) of the rendered `image`.
    length: game steps per episode (Crafter's default 10,000), ended with is_last only.
    seed: seeds the world generation.
  """

  def __init__(self, reward: bool = True, action_repeat: int = 1,
               size: tuple[int, int] = (64, 64), length: int = 10000, seed: int | None = None):
    super().__init__(0)  # Crafter applies its own length limit
    crafter = _import_crafter()
    self._repeat = base.check_int('action_repeat', action_repeat, 1)
    size = base.check_size(size)
    length = base.check_int('length', length, 1)
    # Crafter sizes are (width, height); ours are square by default but keep the order right.
    self._env = crafter.Env(size=(size[1], size[0]), reward=bool(reward), length=length,
                            seed=seed)
    self._achievements = tuple(crafter.constants.achievements)
    logs = {f'log_achievement_{name}': gym.spaces.Box(0, np.inf, (), np.int32)
            for name in self._achievements}
    logs['log_reward'] = gym.spaces.Box(-np.inf, np.inf, (), np.float32)
    self.obs_space = base.contract_obs_space({'image': base.image_space(*size, 3)}, logs)
    self.act_space = gym.spaces.Dict(
        {'action': gym.spaces.Discrete(len(crafter.constants.actions))})

  @property
  def action_names(self) -> list[str]:
    """Names of the discrete actions, e.g. ['noop', 'move_left', ...]."""
    return list(self._env.action_names)

  def _reset(self) -> dict[str, Any]:
    image = self._env.reset()
    return self._obs(self._data(image, 0.0, None), is_first=True)

  def _step(self, action: int) -> dict[str, Any]:
    reward, true_reward = 0.0, 0.0
    for _ in range(self._repeat):
      image, step_reward, done, info = self._env.step(action)
      reward += step_reward
      true_reward += info['reward']
      if done:
        break
    dead = info['discount'] == 0  # Crafter marks death with discount 0, timeouts with 1
    return self._obs(self._data(image, true_reward, info), reward, is_last=done,
                     is_terminal=dead)

  def _data(self, image: np.ndarray, true_reward: float, info: dict | None) -> dict[str, Any]:
    counts = info['achievements'] if info else {}
    data = {'image': np.asarray(image, np.uint8)}
    for name in self._achievements:
      data[f'log_achievement_{name}'] = np.int32(counts.get(name, 0))
    data['log_reward'] = np.float32(true_reward)
    return data
