"""Environments that follow the observation contract (see `base`), made from a task string.

    env = make_env('atari_pong', config)        # also 'pong', 'dmc_walker_walk', 'walker_walk',
    obs = env.reset()                           # 'gym:CartPole-v1', 'crafter_reward', ...
    obs = env.step({'action': one_hot})
    batch = make_batch_env('atari_pong', 8, config, parallel=True)   # stacked [N, ...] obs
    env = from_env(gymnasium.make('MountainCar-v0'), config)          # a gymnasium env object

Settings come from `config` (attribute access: `action_repeat`, `render_size`, `time_limit`,
`atari_*`, `dmc_camera`); without a config each suite uses the paper's defaults. Keyword
overrides take the same names, e.g. `make_env('pong', time_limit=100)`. No TensorFlow here.
"""
from __future__ import annotations

import difflib
import functools
from typing import Any

from dreamerv2_tf.envs.atari import ATARI_GAMES, atari_game
from dreamerv2_tf.envs.base import Env, check_int
from dreamerv2_tf.envs.vector import BatchEnv

__all__ = ['ATARI_GAMES', 'BatchEnv', 'Env', 'from_env', 'make_batch_env', 'make_env', 'make_envs',
           'second_env', 'task_name']

# Settings read from the config; None = the suite's own default (see _SUITE_DEFAULTS).
DEFAULTS: dict[str, Any] = {
    'action_repeat': None, 'time_limit': None, 'render_size': (64, 64), 'dmc_camera': -1,
    'atari_grayscale': True, 'atari_sticky': 0.25, 'atari_noops': 30, 'atari_lives': False,
    'atari_full_actions': False,
}
_SUITE_DEFAULTS = {  # the paper's settings per suite, used when there is no config
    'atari': {'action_repeat': 4, 'time_limit': 27000},
    'dmc': {'action_repeat': 2, 'time_limit': 0},
    'gym': {'action_repeat': 1, 'time_limit': 0},
    'crafter': {'action_repeat': 1, 'time_limit': 0},
}
MODES = ('train', 'eval')
# DeepMind Control domains, to recognise bare names such as 'walker_walk' without importing it.
_DMC_DOMAINS = (
    'acrobot', 'ball_in_cup', 'cartpole', 'cheetah', 'cup', 'dog', 'finger', 'fish', 'hopper',
    'humanoid', 'humanoid_CMU', 'lqr', 'manipulator', 'pendulum', 'point_mass', 'quadruped',
    'reacher', 'stacker', 'swimmer', 'walker')
_CRAFTER = ('crafter_reward', 'crafter_noreward')
_FORMS = ('atari_<game> or <game> (55 games, e.g. atari_pong), dmc_<domain>_<task> or '
          '<domain>_<task> (e.g. dmc_walker_walk), gym:<gymnasium id> (e.g. gym:CartPole-v1), '
          'crafter_reward, crafter_noreward')


def task_name(task: str) -> str:
  """The canonical form of a task: 'pong' -> 'atari_pong', 'walker_walk' -> 'dmc_walker_walk'.

  Names are checked against the suite's list only when the env is made (DMC tasks need
  dm_control), but the form is checked here; an unknown form raises ValueError.
  """
  if not isinstance(task, str) or not task:
    raise ValueError(f'task must be a non-empty string, got {task!r}; expected {_FORMS}')
  if task.startswith('gym:') and len(task) > 4:
    return task
  if task in _CRAFTER:
    return task
  if task.startswith('atari_'):
    return f'atari_{atari_game(task)}'
  if task.startswith('dmc_'):
    return task
  try:
    return f'atari_{atari_game(task)}'
  except ValueError:
    pass
  if any(task.startswith(domain + '_') for domain in _DMC_DOMAINS):
    return f'dmc_{task}'
  known = [f'atari_{game}' for game in ATARI_GAMES] + list(_CRAFTER)
  close = difflib.get_close_matches(task, known + list(ATARI_GAMES), n=3, cutoff=0.6)
  hint = f'did you mean {", ".join(close)}? ' if close else ''
  raise ValueError(f'unknown task {task!r}; {hint}expected {_FORMS}')


def _settings(suite: str, config: Any, overrides: dict[str, Any]) -> dict[str, Any]:
  unknown = sorted(set(overrides) - set(DEFAULTS))
  if unknown:
    raise ValueError(f'unknown environment setting(s) {", ".join(unknown)}; allowed are '
                     f'{", ".join(DEFAULTS)}')
  settings = {}
  for key, default in DEFAULTS.items():
    value = getattr(config, key, None) if config is not None else None
    settings[key] = value if value is not None else default
  settings.update({k: v for k, v in overrides.items() if v is not None})
  for key, value in _SUITE_DEFAULTS[suite].items():
    if settings[key] is None:
      settings[key] = value
  return settings


def _atari_kwargs(s: dict[str, Any], mode: str) -> dict[str, Any]:
  return dict(
      action_repeat=s['action_repeat'], size=tuple(s['render_size']),
      grayscale=s['atari_grayscale'], sticky=s['atari_sticky'], noops=s['atari_noops'],
      # Life loss may end training episodes only; evaluation always plays whole games.
      lives=s['atari_lives'] if mode == 'train' else 'unused',
      full_actions=s['atari_full_actions'], time_limit=s['time_limit'])


def make_env(task: str, config: Any = None, mode: str = 'train', seed: int | None = None,
             **overrides: Any) -> Env:
  """Make a contract environment for `task` (see `task_name` for the accepted forms).

  Args:
    task: e.g. 'atari_pong', 'pong', 'dmc_walker_walk', 'gym:CartPole-v1', 'crafter_reward'.
    config: a Config (or any object with the attributes in `DEFAULTS`); None = paper defaults.
    mode: 'train' or 'eval'; Atari life-loss episode ends (`atari_lives`) apply in train only.
    seed: seeds the environment (None = unseeded).
    **overrides: settings that replace the config's, with the names of `DEFAULTS`.
  """
  if mode not in MODES:
    raise ValueError(f'mode must be one of {", ".join(MODES)}, got {mode!r}')
  name = task_name(task)
  suite = 'gym' if name.startswith('gym:') else name.split('_', 1)[0]
  s = _settings(suite, config, overrides)
  size = tuple(s['render_size'])
  if suite == 'atari':
    from dreamerv2_tf.envs.atari import Atari
    return Atari(name, seed=seed, **_atari_kwargs(s, mode))
  if suite == 'dmc':
    from dreamerv2_tf.envs.dmc import DMC
    return DMC(name, action_repeat=s['action_repeat'], size=size, camera=s['dmc_camera'],
               time_limit=s['time_limit'], seed=seed)
  if suite == 'gym':
    from dreamerv2_tf.envs import gymnasium_env
    return gymnasium_env.make(name[len('gym:'):], action_repeat=s['action_repeat'], size=size,
                              time_limit=s['time_limit'], seed=seed)
  from dreamerv2_tf.envs.crafter import Crafter
  kwargs = {'length': s['time_limit']} if s['time_limit'] else {}  # else Crafter's 10,000
  return Crafter(reward=name == 'crafter_reward', action_repeat=s['action_repeat'], size=size,
                 seed=seed, **kwargs)


def from_env(env: Any, config: Any = None, seed: int | None = None, **overrides: Any) -> Env:
  """Wrap a gymnasium env object the caller built, with `action_repeat`, `render_size` and
  `time_limit` from `config` / `overrides` as in `make_env` (see `gymnasium_env.Gymnasium`)."""
  from dreamerv2_tf.envs.gymnasium_env import Gymnasium
  s = _settings('gym', config, overrides)
  return Gymnasium(env, action_repeat=s['action_repeat'], size=tuple(s['render_size']),
                   time_limit=s['time_limit'], seed=seed)


def make_batch_env(task: str, num_envs: int, config: Any = None, mode: str = 'train',
                   seed: int | None = None, parallel: bool = False, fast: bool = False,
                   **overrides: Any) -> Any:
  """A batch of `num_envs` environments of `task` with stacked `[N, ...]` observations.

  Env i is seeded with seed + i. `parallel` runs each env in its own process (`BatchEnv`);
  `fast` (Atari only) uses ale-py's C++ vector env (`atari_vector.AtariBatchEnv`), which matches
  the paper's protocol except for the image of a game's final step (see that module).
  """
  num_envs = check_int('num_envs', num_envs, 1)
  name = task_name(task)
  if fast:
    if not name.startswith('atari_'):
      raise ValueError(f'fast=True is for Atari tasks only, got {task!r}')
    if mode not in MODES:
      raise ValueError(f'mode must be one of {", ".join(MODES)}, got {mode!r}')
    from dreamerv2_tf.envs.atari_vector import AtariBatchEnv
    s = _settings('atari', config, overrides)
    return AtariBatchEnv(name, num_envs, seed=seed, **_atari_kwargs(s, mode))
  # Plain settings rather than the config object keep the constructors cheap to pickle.
  plain = {key: getattr(config, key, None) for key in DEFAULTS} if config is not None else {}
  plain.update(overrides)
  ctors = [functools.partial(make_env, name, None, mode, None if seed is None else seed + i,
                             **plain) for i in range(num_envs)]
  return BatchEnv(ctors, parallel=parallel)


def make_envs(env: Any, config: Any, mode: str, count: int, worker: int = 0) -> BatchEnv:
  """A batch environment: the user's env(s) wrapped, or `count` made from the config.

  worker: a multi-worker run's worker index (`cluster.task_index`), which offsets the seed.

  envs_parallel `auto` runs DeepMind Control in worker processes: MuJoCo's EGL renderer
  crashes (SIGSEGV) when it creates its context in a process that has loaded TensorFlow.
  """
  from dreamerv2_tf.errors import ConfigError
  if env is None:
    how = config.envs_parallel
    if how == 'auto':
      how = 'process' if config.task.startswith('dmc_') else 'none'
    if how == 'ale_vector' and not config.task.startswith('atari_'):
      raise ConfigError(f'envs_parallel ale_vector is for Atari tasks, not {config.task!r}')
    seed = config.seed + (0 if mode == 'train' else 10_000) + 1000 * worker
    try:
      return make_batch_env(config.task, count, config, mode=mode, seed=seed,
                            parallel=how == 'process', fast=how == 'ale_vector')
    except ValueError as e:  # E.g. a gymnasium id that is not registered.
      raise ConfigError(str(e)) from None
  if not hasattr(env, 'obs_space'):
    env = from_env(env, config)
  return env if hasattr(env, 'num_envs') else BatchEnv([env])


def second_env(env: Any) -> Any:
  """A separate evaluation env, so evaluating never disturbs a running training episode."""
  spec = getattr(env, 'spec', None)
  if spec is None:
    raise ValueError(f'cannot make an evaluation copy of {type(env).__name__}: it has no '
                     'gymnasium spec; pass eval_env= as well')
  import gymnasium
  return gymnasium.make(spec)
