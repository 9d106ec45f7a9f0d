"""A fast batch of Atari games on ale-py's C++ `AtariVectorEnv`, with `BatchEnv`'s interface.

ale-py 0.12's vector env runs N games in C++ threads and preprocesses the frames there. Set up as
below, it reproduces `atari.Atari` (the paper's protocol) frame for frame; with sticky actions
and no-ops off, both give identical rewards, flags and images (all but one image per episode,
see below) for the same actions, as the tests check.

Matches:
  - sticky actions: the same ALE `repeat_action_probability` (0.25), applied per frame.
  - frame skip 4 with the image max-pooled over the last two frames of each agent step.
  - no-ops at reset: uniform in 0..30 (the C++ draws from 0..noop_max-1, so it is given 31),
    no FIRE at reset (`use_fire_reset=False`, which the paper does not do).
  - grayscale from the ALE palette (or RGB), resized to 64x64 with OpenCV's area interpolation.
  - no episode end on life loss, raw rewards (`reward_clipping=False`), minimal action set.
  - time limit: 27,000 agent steps as 108,000 frames, reported as truncation (is_last only).
  - auto-reset: ended games reset on the next step, whose action is ignored (as in `BatchEnv`).
Does not match:
  - the image of an episode's last step (game over or time limit): the C++ stops capturing
    frames at the frame that ends the episode, so that image is pooled from frames captured
    before it (e.g. the previous step's last frame and this step's third) instead of the final
    two frames. Rewards, flags and every other image are identical.
  - lives: only 'unused' (the paper). The C++ `episodic_life` restarts the whole game, unlike
    `Atari(lives='reset')`, which continues it; use `BatchEnv` of `Atari` for that mode.
  - random streams: the same seed gives different no-op counts and sticky draws than `Atari`.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np

from dreamerv2_tf.envs import atari, base

_NO_LIMIT = 10 ** 9  # frames; the C++ treats every limit as real, so "none" is a huge one


class AtariBatchEnv:
  """N copies of one Atari game stepped in C++ threads; same arguments as `atari.Atari`.

  Args:
    game: a paper game name ('pong' or 'atari_pong').
    num_envs: how many games.
    num_threads: C++ worker threads (0 = one per game, at most the number of CPU cores).
    seed: seeds game i with seed + i on the first reset.
    The other arguments are those of `atari.Atari`.
  """

  def __init__(self, game: str, num_envs: int, action_repeat: int = 4,
               size: tuple[int, int] = (64, 64), grayscale: bool = True, sticky: float = 0.25,
               noops: int = 30, lives: str | bool = 'unused', full_actions: bool = False,
               time_limit: int = 27000, seed: int | None = None, num_threads: int = 0):
    from ale_py.vector_env import AtariVectorEnv
    game = atari.atari_game(game)
    num_envs = base.check_int('num_envs', num_envs, 1)
    repeat = base.check_int('action_repeat', action_repeat, 1)
    height, width = base.check_size(size)
    noops = base.check_int('noops', noops, 0)
    time_limit = base.check_int('time_limit', time_limit, 0)
    if atari.lives_mode(lives) != 'unused':
      raise ValueError(f'AtariBatchEnv supports lives=unused only, got {lives!r}; use BatchEnv '
                       'of Atari envs for life-loss episodes')
    sticky = base.check_probability('sticky', sticky)
    threads = base.check_int('num_threads', num_threads, 0) or min(num_envs, os.cpu_count() or 1)
    self._venv = AtariVectorEnv(
        game=atari.rom_name(game), num_envs=num_envs, num_threads=threads,
        repeat_action_probability=sticky, full_action_space=bool(full_actions),
        frameskip=repeat, maxpool=True, noop_max=noops + 1, use_fire_reset=False,
        img_height=height, img_width=width, grayscale=bool(grayscale), stack_num=1,
        episodic_life=False, life_loss_info=False, reward_clipping=False,
        max_num_frames_per_episode=time_limit * repeat if time_limit else _NO_LIMIT,
        autoreset_mode='NextStep')
    self._num = num_envs
    self._seed = seed
    self._grayscale = bool(grayscale)
    channels = 1 if grayscale else 3
    self.obs_space = base.contract_obs_space({'image': base.image_space(height, width,
                                                                        channels)})
    self.act_space = gym.spaces.Dict(
        {'action': gym.spaces.Discrete(int(self._venv.single_action_space.n))})
    self._needs_reset = np.zeros(num_envs, bool)  # games that ended on the last step
    self._started = False

  def __len__(self) -> int:
    return self._num

  @property
  def num_envs(self) -> int:
    """How many games the batch steps."""
    return self._num

  def reset(self) -> dict[str, np.ndarray]:
    """Reset every game and return the stacked first observations."""
    seed, self._seed = self._seed, None
    images, _ = self._venv.reset(seed=seed)
    self._started = True
    zeros = np.zeros(self._num, bool)
    self._needs_reset = zeros
    return self._obs(images, np.zeros(self._num), np.ones(self._num, bool), zeros, zeros)

  def step(self, action: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Step every game with its row of `action['action']` (one-hot `[N, n]` or indices `[N]`)."""
    if not self._started:
      return self.reset()
    if not isinstance(action, Mapping) or 'action' not in action:
      raise ValueError(f"step() takes a dict {{'action': [N, ...]}}, got {type(action).__name__}")
    indices = self._indices(np.asarray(action['action']))
    was_last = self._needs_reset  # the C++ resets these games on this step
    images, rewards, terminated, truncated, _ = self._venv.step(indices)
    last = terminated | truncated
    obs = self._obs(images, rewards, was_last, last & ~was_last, terminated & ~was_last)
    self._needs_reset = last
    return obs

  def close(self) -> None:
    """Stop the C++ games."""
    self._venv.close()

  def _indices(self, actions: np.ndarray) -> np.ndarray:
    n = self.act_space['action'].n
    if actions.shape == (self._num, n):
      return actions.argmax(-1).astype(np.int32)
    if actions.shape == (self._num,) and np.issubdtype(actions.dtype, np.integer):
      if actions.min() < 0 or actions.max() >= n:
        raise ValueError(f'action indices must be in [0, {n}), got {actions.tolist()}')
      return actions.astype(np.int32)
    raise ValueError(f'actions must be one-hot of shape ({self._num}, {n}) or indices of shape '
                     f'({self._num},), got shape {actions.shape}')

  def _obs(self, images: np.ndarray, rewards: np.ndarray, first: np.ndarray, last: np.ndarray,
           terminal: np.ndarray) -> dict[str, np.ndarray]:
    # The C++ gives [N, stack=1, H, W] (grayscale) or [N, 1, H, W, 3]; the contract is [N, H, W, C].
    images = images[:, 0, ..., None] if self._grayscale else images[:, 0]
    return {'image': np.ascontiguousarray(images), 'reward': rewards.astype(np.float32),
            'is_first': first.copy(), 'is_last': last.copy(), 'is_terminal': terminal.copy()}
