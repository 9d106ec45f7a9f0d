"""The observation contract that every environment wrapper implements.

    env.obs_space  # Dict: data keys + 'reward' (float32, ()) + 'is_first'/'is_last'/'is_terminal'
    env.act_space  # Dict: {'action': Discrete(n) or Box(-1, 1, (d,), float32)}
    obs = env.reset()                 # reward 0, is_first True
    obs = env.step({'action': a})     # a one-hot (Discrete) or in [-1, 1] (Box)

`is_last` without `is_terminal` means the episode was cut off (time limit), so the agent still
bootstraps from the last state. Keys starting with `log_` carry per-episode statistics that are
logged but never fed to the agent.
"""
from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np

FLAG_KEYS = ('is_first', 'is_last', 'is_terminal')
RESERVED_KEYS = ('reward',) + FLAG_KEYS


def image_space(height: int, width: int, channels: int) -> gym.spaces.Box:
  """The space of a uint8 `[height, width, channels]` image."""
  return gym.spaces.Box(0, 255, (height, width, channels), np.uint8)


def vector_space(size: int) -> gym.spaces.Box:
  """The space of an unbounded float32 vector of length `size`."""
  return gym.spaces.Box(-np.inf, np.inf, (size,), np.float32)


def contract_obs_space(data: Mapping[str, gym.Space],
                       logs: Mapping[str, gym.Space] | None = None) -> gym.spaces.Dict:
  """`data` spaces plus the reward, the three episode flags and `logs` (keys 'log_*')."""
  for key in data:
    if key in RESERVED_KEYS or key.startswith('log_'):
      raise ValueError(f'observation key {key!r} clashes with a reserved key; reserved are '
                       f'{", ".join(RESERVED_KEYS)} and log_*')
  for key in logs or {}:
    if not key.startswith('log_'):
      raise ValueError(f'logging key {key!r} must start with log_')
  spaces = {**data, **(logs or {})}
  spaces['reward'] = gym.spaces.Box(-np.inf, np.inf, (), np.float32)
  for key in FLAG_KEYS:
    spaces[key] = gym.spaces.Box(0, 1, (), bool)
  return gym.spaces.Dict(spaces)


def check_size(size: Any) -> tuple[int, int]:
  """Validate an image size `(height, width)` and return it as a tuple of ints."""
  try:
    height, width = (int(x) for x in size)
  except (TypeError, ValueError):
    raise ValueError(f'image size {size!r} must be two positive ints (height, width)') from None
  if height <= 0 or width <= 0:
    raise ValueError(f'image size {size!r} must be two positive ints (height, width)')
  return height, width


def check_int(name: str, value: Any, low: int) -> int:
  """Return `value` as an int, or raise if it is not an integer >= `low`."""
  try:
    valid = not isinstance(value, bool) and float(value).is_integer() and value >= low
  except (TypeError, ValueError):
    valid = False
  if not valid:
    raise ValueError(f'{name} must be an integer >= {low}, got {value!r}')
  return int(value)


def check_probability(name: str, value: Any) -> float:
  """Return `value` as a float, or raise if it is not a number in [0, 1]."""
  try:
    valid = not isinstance(value, bool) and 0.0 <= float(value) <= 1.0
  except (TypeError, ValueError):
    valid = False
  if not valid:
    raise ValueError(f'{name} must be a probability in [0, 1], got {value!r}')
  return float(value)


def rescale(action: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
  """Map an action in [-1, 1] onto [low, high]; dimensions with an infinite bound pass through."""
  finite = np.isfinite(low) & np.isfinite(high)
  with np.errstate(invalid='ignore', over='ignore'):  # inf - inf in the unused branch
    scaled = low + (action + 1.0) / 2.0 * (high - low)
  return np.where(finite, scaled, action)


class Env(abc.ABC):
  """Base of the contract environments.

  It checks the call order and the actions, converts one-hot actions to indices and applies the
  time limit (in agent steps; 0 = none). Subclasses set `obs_space` and `act_space` in
  `__init__` and implement `_reset()` and `_step(action)`, where `action` is an int (Discrete) or
  a float32 vector clipped to [-1, 1] (Box), and build observations with `_obs()`.
  """

  obs_space: gym.spaces.Dict
  act_space: gym.spaces.Dict

  def __init__(self, time_limit: int = 0):
    self._time_limit = check_int('time_limit', time_limit, 0)
    self._steps = 0
    self._done: bool | None = None  # None until the first reset

  def reset(self) -> dict[str, Any]:
    """Start an episode and return its first observation."""
    obs = self._reset()
    self._steps = 0
    self._done = bool(obs['is_last'])
    return obs

  def step(self, action: Mapping[str, Any]) -> dict[str, Any]:
    """Apply `action['action']` and return the next observation."""
    if self._done is None:
      raise RuntimeError('step() called before reset(); call reset() to start an episode')
    if self._done:
      raise RuntimeError('step() called after the episode ended (is_last); call reset() first')
    obs = self._step(self._convert(action))
    self._steps += 1
    if self._time_limit and self._steps >= self._time_limit and not obs['is_last']:
      obs['is_last'] = np.bool_(True)  # truncation: is_terminal stays False
      self._truncated()
    self._done = bool(obs['is_last'])
    return obs

  def close(self) -> None:
    """Release the underlying environment."""

  @abc.abstractmethod
  def _reset(self) -> dict[str, Any]:
    """Start an episode; return `_obs(..., is_first=True)`."""

  @abc.abstractmethod
  def _step(self, action: Any) -> dict[str, Any]:
    """Advance one agent step with a converted action."""

  def _truncated(self) -> None:
    """Called when the time limit ended the episode (for wrappers that need to know)."""

  def _obs(self, data: Mapping[str, Any], reward: float = 0.0, is_first: bool = False,
           is_last: bool = False, is_terminal: bool = False) -> dict[str, Any]:
    obs = dict(data)
    obs['reward'] = np.float32(reward)
    obs['is_first'] = np.bool_(is_first)
    obs['is_last'] = np.bool_(is_last or is_terminal)  # a terminal step always ends the episode
    obs['is_terminal'] = np.bool_(is_terminal)
    return obs

  def _convert(self, action: Mapping[str, Any]) -> int | np.ndarray:
    if not isinstance(action, Mapping) or 'action' not in action:
      raise ValueError(f"step() takes a dict {{'action': ...}}, got {type(action).__name__}")
    value, space = action['action'], self.act_space['action']
    if isinstance(space, gym.spaces.Discrete):
      return _discrete_index(value, int(space.n))
    array = np.asarray(value, np.float32)
    if array.shape != space.shape:
      raise ValueError(f'continuous action must have shape {space.shape}, got {array.shape}')
    if not np.all(np.isfinite(array)):  # A policy with NaN weights or inputs acts NaN.
      raise ValueError(f'continuous action must be finite, got {array.tolist()}: the policy '
                       'that chose it holds NaN/Inf in its weights or its observations; '
                       'dreamerv2_tf.train skips non-finite updates and checks observations '
                       '(replay.nonfinite), so resume from the last checkpoint and see '
                       'docs/failures.md')
    return np.clip(array, -1.0, 1.0)  # policy samples can overshoot the bounds a little


def _discrete_index(value: Any, n: int) -> int:
  """A one-hot (or any score) vector of length n -> argmax; an integer index passes through."""
  array = np.asarray(value)
  if array.ndim == 0 and np.issubdtype(array.dtype, np.integer):
    if not 0 <= int(array) < n:
      raise ValueError(f'discrete action index {int(array)} is out of range [0, {n})')
    return int(array)
  if array.shape != (n,):
    raise ValueError(f'discrete action must be a one-hot vector of length {n}, got shape '
                     f'{array.shape}')
  return int(np.argmax(array))
