"""Any gymnasium environment, by id or as an object, following the observation contract.

Observation spaces: an image (uint8 Box `[H, W]` or `[H, W, C]`, resized to 64x64 as `image`),
any other Box (flattened to a float32 vector, `vector`), a Discrete (one-hot float32, `vector`),
or a Dict of these (each under its own key). Action spaces: Discrete (one-hot in the agent's
format) or Box (the agent's [-1, 1] rescaled to the bounds). gymnasium's `terminated` becomes
is_terminal and `truncated` becomes is_last alone.
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from dreamerv2_tf.envs import base, images


def _describe(space: gym.Space) -> str:
  text = str(space)  # gymnasium's reprs start with the space's type, e.g. 'Tuple(...)'
  return text if len(text) <= 80 else text[:77] + '...'


def _obs_kind(key: str, space: gym.Space) -> str:
  """'image', 'vector' or 'onehot': how an observation space maps onto the contract."""
  if isinstance(space, gym.spaces.Discrete):
    return 'onehot'
  if isinstance(space, gym.spaces.Box):
    if space.dtype == np.uint8 and len(space.shape) in (2, 3):
      return 'image'
    return 'vector'
  raise ValueError(f'unsupported observation space for {key!r}: {_describe(space)}; supported '
                   'are Box (image or vector), Discrete and a Dict of those')


class Gymnasium(base.Env):
  """Wraps a gymnasium env object.

  Args:
    env: the gymnasium environment (it is closed by `close()`).
    action_repeat: gymnasium steps per agent step, summing rewards.
    size: (height, width) that image observations are resized to.
    time_limit: limit in agent steps (0 = only the env's own truncation).
    seed: passed to the env's first reset (and its action space).
  """

  def __init__(self, env: gym.Env, action_repeat: int = 1, size: tuple[int, int] = (64, 64),
               time_limit: int = 0, seed: int | None = None):
    super().__init__(time_limit)
    self._env = env
    self._repeat = base.check_int('action_repeat', action_repeat, 1)
    self._size = base.check_size(size)
    self._seed = seed
    space = env.observation_space
    if isinstance(space, gym.spaces.Dict):
      items = list(space.spaces.items())
      self._dict = True
    else:
      kind = _obs_kind('observation', space)
      items = [('image' if kind == 'image' else 'vector', space)]
      self._dict = False
    self._kinds = {key: (_obs_kind(key, sub), sub) for key, sub in items}
    data = {}
    for key, (kind, sub) in self._kinds.items():
      if kind == 'image':
        channels = sub.shape[2] if len(sub.shape) == 3 else 1
        data[key] = base.image_space(*self._size, channels)
      elif kind == 'onehot':
        data[key] = base.vector_space(int(sub.n))
      else:
        data[key] = base.vector_space(max(1, int(np.prod(sub.shape, dtype=int))))
    self.obs_space = base.contract_obs_space(data)
    self.act_space = gym.spaces.Dict({'action': self._action_space(env.action_space)})

  @property
  def env(self) -> gym.Env:
    """The wrapped gymnasium environment."""
    return self._env

  def _action_space(self, space: gym.Space) -> gym.Space:
    if isinstance(space, gym.spaces.Discrete):
      return gym.spaces.Discrete(int(space.n))
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
      self._low = space.low.astype(np.float32)
      self._high = space.high.astype(np.float32)
      return gym.spaces.Box(-1, 1, space.shape, np.float32)
    raise ValueError(f'unsupported action space {_describe(space)}; supported are Discrete and '
                     '1-D Box')

  def _reset(self) -> dict[str, Any]:
    seed, self._seed = self._seed, None  # seed the first episode; later ones continue the RNG
    if seed is not None:
      self._env.action_space.seed(seed)
    obs, _ = self._env.reset(seed=seed)
    return self._obs(self._data(obs), is_first=True)

  def _step(self, action: int | np.ndarray) -> dict[str, Any]:
    space = self._env.action_space
    if isinstance(space, gym.spaces.Discrete):
      action = int(space.start) + action
    else:
      action = base.rescale(action, self._low, self._high).astype(space.dtype)
    reward, terminated, truncated = 0.0, False, False
    for _ in range(self._repeat):
      obs, step_reward, terminated, truncated, _ = self._env.step(action)
      reward += float(step_reward)
      if terminated or truncated:
        break
    return self._obs(self._data(obs), reward, is_last=bool(terminated or truncated),
                     is_terminal=bool(terminated))

  def _data(self, obs: Any) -> dict[str, np.ndarray]:
    values = obs if self._dict else {next(iter(self._kinds)): obs}
    data = {}
    for key, (kind, sub) in self._kinds.items():
      value = values[key]
      if kind == 'image':
        data[key] = images.resize(np.asarray(value, np.uint8), self._size)
      elif kind == 'onehot':
        data[key] = np.eye(int(sub.n), dtype=np.float32)[int(value) - int(sub.start)]
      else:
        data[key] = np.asarray(value, np.float32).reshape(-1)
    return data

  def close(self) -> None:
    self._env.close()


def make(env_id: str, **kwargs: Any) -> Gymnasium:
  """`gymnasium.make(env_id)` wrapped; 'module:Id' imports `module` first to register `Id`."""
  try:
    env = gym.make(env_id, disable_env_checker=True)
  except (gym.error.Error, ModuleNotFoundError) as error:
    # gymnasium's own message names the id and suggests close ones; keep it on one line.
    raise ValueError(f'cannot make gymnasium env {env_id!r}: '
                     f'{" ".join(str(error).split())}') from None
  try:
    return Gymnasium(env, **kwargs)
  except Exception:
    env.close()
    raise
