"""Atari 2600 games through ale-py, with the DreamerV2 paper's evaluation protocol.

Every choice is a parameter whose default is the paper's: sticky actions with probability 0.25
(the ALE's `repeat_action_probability`), each agent action repeated for 4 frames by this wrapper
(the ALE env itself runs with frameskip=1) with the image max-pooled over the last two frames,
0-30 no-op actions at reset, 64x64 grayscale images resized with area interpolation, no episode
end on life loss, the minimal action set and a limit of 27,000 agent steps (108,000 frames).
Rewards are the raw game score summed over the repeated frames; clipping is the agent's job.
"""
from __future__ import annotations

import difflib
from typing import Any

import gymnasium as gym
import numpy as np

from dreamerv2_tf.envs import base, images

# The 55 games of the paper, by the names of its score files (`atari_<game>`).
ATARI_GAMES = (
    'alien', 'amidar', 'assault', 'asterix', 'asteroids', 'atlantis', 'bank_heist', 'battle_zone',
    'beam_rider', 'berzerk', 'bowling', 'boxing', 'breakout', 'centipede', 'chopper_command',
    'crazy_climber', 'demon_attack', 'double_dunk', 'enduro', 'fishing_derby', 'freeway',
    'frostbite', 'gopher', 'gravitar', 'hero', 'ice_hockey', 'james_bond', 'kangaroo', 'krull',
    'kung_fu_master', 'montezuma_revenge', 'ms_pacman', 'name_this_game', 'phoenix', 'pitfall',
    'pong', 'private_eye', 'qbert', 'riverraid', 'road_runner', 'robotank', 'seaquest', 'skiing',
    'solaris', 'space_invaders', 'star_gunner', 'tennis', 'time_pilot', 'tutankham', 'up_n_down',
    'venture', 'video_pinball', 'wizard_of_wor', 'yars_revenge', 'zaxxon')
# Paper names that differ from the ALE's ROM names, and accepted spellings of the same games.
_ROM_NAMES = {'james_bond': 'jamesbond'}
_ALIASES = {'jamesbond': 'james_bond'}
LIVES_MODES = ('unused', 'reset')


def atari_game(name: str) -> str:
  """The paper name of a game (`pong`, `atari_pong` or an alias); unknown names raise."""
  game = name[len('atari_'):] if name.startswith('atari_') else name
  game = _ALIASES.get(game, game)
  if game not in ATARI_GAMES:
    close = difflib.get_close_matches(game, ATARI_GAMES, n=3, cutoff=0.6)
    hint = f'did you mean {", ".join(close)}? ' if close else ''
    raise ValueError(f'unknown Atari game {name!r}; {hint}valid are the {len(ATARI_GAMES)} '
                     f'games {", ".join(ATARI_GAMES)}')
  return game


def rom_name(name: str) -> str:
  """The ale-py ROM id of a game, e.g. 'james_bond' -> 'jamesbond'."""
  game = atari_game(name)
  return _ROM_NAMES.get(game, game)


def atari_env_id(name: str) -> str:
  """The ale-py gymnasium id of a game, e.g. 'pong' -> 'ALE/Pong-v5'."""
  return f'ALE/{rom_name(name).title().replace("_", "")}-v5'  # how the ALE names v5 ids


def lives_mode(lives: str | bool) -> str:
  """Normalise the `lives` option: False -> 'unused', True -> 'reset'."""
  if isinstance(lives, (bool, np.bool_)):
    return 'reset' if lives else 'unused'
  if lives not in LIVES_MODES:
    raise ValueError(f'lives must be one of {", ".join(LIVES_MODES)} (or a bool), got {lives!r}')
  return lives


class Atari(base.Env):
  """One Atari game following the observation contract.

  Args:
    game: a paper game name (`pong`; `atari_pong` also works).
    action_repeat: frames per agent step (the frame skip); the image is the max over the last two.
    size: (height, width) of the `image` observation.
    grayscale: one channel from the ALE's luminance palette; False gives RGB.
    sticky: probability that the ALE repeats the previous action for a frame.
    noops: at reset, a number of no-op frames drawn uniformly from 0..noops with the env's RNG.
    lives: 'unused' ignores life loss (the paper); 'reset' ends the episode on a life loss
      (is_last and is_terminal) and the next reset() continues the same game, without no-ops.
      A bool maps True -> 'reset'. (No 'discount' mode: it would need is_terminal without
      is_last, which the contract does not allow.)
    full_actions: use all 18 joystick actions instead of the game's minimal set.
    time_limit: agent steps per episode (27,000 = 108,000 frames); 0 = no limit.
    seed: seeds the ALE and the no-op RNG on the first reset.
  """

  def __init__(self, game: str, action_repeat: int = 4, size: tuple[int, int] = (64, 64),
               grayscale: bool = True, sticky: float = 0.25, noops: int = 30,
               lives: str | bool = 'unused', full_actions: bool = False,
               time_limit: int = 27000, seed: int | None = None):
    super().__init__(time_limit)
    import ale_py  # registers the ROMs' gymnasium ids
    gym.register_envs(ale_py)
    self._repeat = base.check_int('action_repeat', action_repeat, 1)
    self._size = base.check_size(size)
    self._noops = base.check_int('noops', noops, 0)
    self._lives_mode = lives_mode(lives)
    sticky = base.check_probability('sticky', sticky)
    self._grayscale = bool(grayscale)
    self._seed = seed
    # frameskip=1: this wrapper repeats actions itself to max-pool the last two frames.
    # max_num_frames_per_episode=0: no ALE limit; the time limit is counted in agent steps here.
    self._env = gym.make(atari_env_id(game), frameskip=1, repeat_action_probability=sticky,
                         full_action_space=bool(full_actions), max_num_frames_per_episode=0,
                         disable_env_checker=True)
    self._ale = self._env.unwrapped.ale
    self._noop = ale_py.Action.NOOP
    legal = self._ale.getLegalActionSet() if full_actions else self._ale.getMinimalActionSet()
    self._actions = list(legal)
    self._lives = 0
    self._continue_game = False  # after a life-loss episode end in 'reset' mode
    channels = 1 if self._grayscale else 3
    self.obs_space = base.contract_obs_space({'image': base.image_space(*self._size, channels)})
    self.act_space = gym.spaces.Dict({'action': gym.spaces.Discrete(len(self._actions))})

  @property
  def ale(self) -> Any:
    """The underlying `ale_py.ALEInterface`, for inspection."""
    return self._ale

  @property
  def action_meanings(self) -> list[str]:
    """Names of the discrete actions, e.g. ['NOOP', 'FIRE', ...]."""
    return [action.name for action in self._actions]

  def _reset(self) -> dict[str, Any]:
    if self._continue_game:
      self._continue_game = False  # a life was lost; the game itself goes on
    else:
      seed, self._seed = self._seed, None  # seed once; later resets continue the RNG streams
      self._env.reset(seed=seed)
      count = int(self._env.unwrapped.np_random.integers(0, self._noops + 1))
      for _ in range(count):
        self._ale.act(self._noop)
        if self._ale.game_over():
          self._ale.reset_game()
    self._lives = self._ale.lives()
    return self._obs({'image': self._image(self._screen())}, is_first=True)

  def _step(self, action: int) -> dict[str, Any]:
    ale_action = self._actions[action]
    reward, frames, over = 0.0, [], False
    for index in range(self._repeat):
      reward += self._ale.act(ale_action)
      over = self._ale.game_over()
      if index >= self._repeat - 2 or over:
        frames.append(self._screen())
      if over:
        break  # acting after game over is undefined in the ALE
    image = np.maximum(frames[-2], frames[-1]) if len(frames) > 1 else frames[-1]
    lives = self._ale.lives()
    lost = 0 < lives < self._lives
    self._lives = lives
    if lost and self._lives_mode == 'reset':
      over = True
      self._continue_game = True
    return self._obs({'image': self._image(image)}, reward, is_last=over, is_terminal=over)

  def _truncated(self) -> None:
    self._continue_game = False  # the time limit ends the game, not just the life

  def close(self) -> None:
    self._env.close()

  def _screen(self) -> np.ndarray:
    return self._ale.getScreenGrayscale() if self._grayscale else self._ale.getScreenRGB()

  def _image(self, frame: np.ndarray) -> np.ndarray:
    return images.resize(frame, self._size)
